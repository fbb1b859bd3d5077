"""Seeded synthetic tasks on which fixed convolutional kernels fail (docs/math/features.md §7).

Star and bar glyphs are added to the noise (signal + noise), so a detector cannot key on a patch
of suspiciously low variance; noisy-frame digits replace the frame pixels they cover (pasted).
Labels are 0/1 (or the digit class for noisy-frame MNIST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from krenorm._validation import check_images, check_positive

#: The fixed 7×7 star glyph: centre row and column and both diagonals (25 ones).
_STAR_SIZE = 7


def star_glyph(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 7×7 star: ones on the centre row, centre column and both diagonals."""
    glyph = torch.zeros(_STAR_SIZE, _STAR_SIZE, dtype=dtype)
    centre = _STAR_SIZE // 2
    index = torch.arange(_STAR_SIZE)
    glyph[centre, :] = 1
    glyph[:, centre] = 1
    glyph[index, index] = 1
    glyph[index, _STAR_SIZE - 1 - index] = 1
    return glyph


@dataclass(frozen=True)
class LabelledImages:
    """Images (P, c, H, W) with labels (P,) from a named generator and seed."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    seed: int

    def __post_init__(self) -> None:
        check_images("images", self.images)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image.")

    def to_dict(self) -> dict:
        counts = torch.bincount(self.labels.long())
        return {
            "name": self.name,
            "seed": self.seed,
            "shape": list(self.images.shape),
            "class_counts": counts.tolist(),
        }


def _balanced_labels(n: int, generator: torch.Generator) -> torch.Tensor:
    if n < 2:
        raise ValueError(f"n must be >= 2 for a balanced binary task, got {n}.")
    labels = torch.zeros(n, dtype=torch.long)
    labels[: n // 2] = 1
    return labels[torch.randperm(n, generator=generator)]


def _paste(
    images: torch.Tensor, glyph: torch.Tensor, channels: slice, generator: torch.Generator
) -> None:
    """Add glyph (h, w) at a uniformly random offset into each image, in place."""
    height, width = images.shape[-2:]
    h, w = glyph.shape
    rows = torch.randint(height - h + 1, (images.shape[0],), generator=generator)
    cols = torch.randint(width - w + 1, (images.shape[0],), generator=generator)
    for image, row, col in zip(images, rows.tolist(), cols.tolist(), strict=True):
        image[channels, row : row + h, col : col + w] += glyph


def star_task(
    n: int,
    seed: int,
    noise_std: float = 0.3,
    image_size: int = 32,
    dtype: torch.dtype = torch.float32,
) -> LabelledImages:
    """Star detection: 3×S×S images of N(0, noise_std²) noise; positives (label 1, half of them)
    carry the 7×7 star of value 1 added to channels 0 and 1 at a uniformly random offset."""
    check_positive("noise_std", noise_std)
    if image_size < _STAR_SIZE:
        raise ValueError(f"image_size must be >= {_STAR_SIZE} to hold the star, got {image_size}.")
    generator = torch.Generator().manual_seed(seed)
    labels = _balanced_labels(n, generator)
    images = noise_std * torch.randn(n, 3, image_size, image_size, generator=generator, dtype=dtype)
    positives = labels == 1
    shown = images[positives]
    _paste(shown, star_glyph(dtype), slice(0, 2), generator)
    images[positives] = shown
    return LabelledImages("star", images, labels, seed)


def bars_task(
    n: int,
    seed: int,
    noise_std: float = 1.5,
    image_size: int = 16,
    dtype: torch.dtype = torch.float32,
) -> LabelledImages:
    """Bars: 1×S×S images of N(0, noise_std²) noise plus a block of ones, 3×7 (height × width)
    for class 0 and 7×3 for class 1, at a uniformly random place."""
    check_positive("noise_std", noise_std)
    if image_size < 7:
        raise ValueError(f"image_size must be >= 7 to hold a bar, got {image_size}.")
    generator = torch.Generator().manual_seed(seed)
    labels = _balanced_labels(n, generator)
    images = noise_std * torch.randn(n, 1, image_size, image_size, generator=generator, dtype=dtype)
    for label, shape in ((0, (3, 7)), (1, (7, 3))):
        chosen = labels == label
        block = images[chosen]
        _paste(block, torch.ones(shape, dtype=dtype), slice(0, 1), generator)
        images[chosen] = block
    return LabelledImages("bars", images, labels, seed)


def local_signal_task(
    n: int,
    seed: int,
    sigma: float = 1.0,
    rows: int = 16,
    dimension: int = 32,
    dtype: torch.dtype = torch.float32,
) -> LabelledImages:
    """Local signal: 1×rows×dimension images whose entries are N(0, σ/dimension) (variance), one
    random row replaced by y·1/√dimension with y = ±1 (label (y+1)/2). Each row is a patch of
    mask (1, dimension); the signal row has norm 1 and a noise row expected squared norm σ."""
    check_positive("sigma", sigma)
    generator = torch.Generator().manual_seed(seed)
    labels = _balanced_labels(n, generator)
    images = math.sqrt(sigma / dimension) * torch.randn(
        n, 1, rows, dimension, generator=generator, dtype=dtype
    )
    chosen_rows = torch.randint(rows, (n,), generator=generator)
    signs = (2 * labels - 1).to(dtype)
    images[torch.arange(n), 0, chosen_rows, :] = signs[:, None] / math.sqrt(dimension)
    return LabelledImages("local-signal", images, labels, seed)


def noisy_frame_task(
    digits: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    frame_size: int = 42,
    noise_std: float = 0.5,
) -> LabelledImages:
    """Noisy-frame images: each digit (P, c, h, w) pasted (its pixels replace the frame's) at a
    uniformly random offset into a frame_size² frame of N(0, noise_std²) noise; labels kept.
    Pass MNIST digits, e.g. from krenorm.data, for noisy-frame MNIST."""
    check_images("digits", digits)
    check_positive("noise_std", noise_std)
    n, channels, height, width = digits.shape
    if frame_size < max(height, width):
        raise ValueError(f"frame_size {frame_size} is smaller than the digits ({height}×{width}).")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}.")
    generator = torch.Generator().manual_seed(seed)
    frames = noise_std * torch.randn(
        n, channels, frame_size, frame_size, generator=generator, dtype=digits.dtype
    )
    rows = torch.randint(frame_size - height + 1, (n,), generator=generator)
    cols = torch.randint(frame_size - width + 1, (n,), generator=generator)
    for frame, digit, row, col in zip(frames, digits, rows.tolist(), cols.tolist(), strict=True):
        frame[:, row : row + height, col : col + width] = digit
    return LabelledImages("noisy-frame", frames, labels.long(), seed)


def noisy_frame_mnist(
    n: int,
    seed: int,
    classes: tuple[int, ...] | None = None,
    frame_size: int = 42,
    noise_std: float = 0.5,
    data_dir: str | None = None,
    allow_fetch: bool = True,
) -> LabelledImages:
    """Noisy-frame MNIST: n MNIST training digits (pixels in [0, 1], balanced over `classes`,
    all ten by default) from krenorm.data.load_dataset, pasted into noise frames by
    `noisy_frame_task`. Raises krenorm.data.DatasetUnavailableError when MNIST is not available."""
    from krenorm.data import load_dataset

    data = load_dataset(
        "mnist", classes=classes, n_train=n, n_test=0, standardize=None, labels="raw",
        seed=seed, data_dir=data_dir, allow_fetch=allow_fetch,
    )  # fmt: skip
    return noisy_frame_task(data.x_train.float(), data.y_train, seed, frame_size, noise_std)
