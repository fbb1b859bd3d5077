"""Preprocessing of raw uint8 images into float64 inputs and targets.

Steps, in this order (each recorded in the provenance):
  1. balanced, seeded selection from the official split (`select_balanced`);
  2. pixels as float64 in [0, 1]: x = uint8 / 255, layout (P, c, H, W);
  3. grayscale (optional): ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B (Pillow's "L" weights);
  4. resize (optional): torch.nn.functional.interpolate, bilinear, antialias=True,
     align_corners=False, to side × side;
  5. standardization with statistics of the training images only, applied to both splits;
  6. targets: 'pm1' (first class +1, second −1), 'raw' (original label) or 'onehot'.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from krenorm.data.catalog import CLASS_NAMES

Standardize = Literal["global", "pixel"] | None
LabelMode = Literal["pm1", "raw", "onehot"]
STANDARDIZE_MODES: tuple[str | None, ...] = ("global", "pixel", None)
LABEL_MODES: tuple[str, ...] = ("pm1", "raw", "onehot")

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
_SPLIT_STREAM = {"train": 0, "test": 1}


def check_seed(seed: int) -> int:
    """Seeds are explicit non-negative integers."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    return int(seed)


def split_generator(seed: int, split: str) -> np.random.Generator:
    """Independent random stream per (seed, split), so the test draw does not depend on n_train."""
    return np.random.default_rng(np.random.SeedSequence([check_seed(seed), _SPLIT_STREAM[split]]))


def resolve_classes(dataset: str, classes: tuple[int | str, ...] | None) -> tuple[int, ...]:
    """Class labels from indices or names; None means all classes in label order."""
    names = CLASS_NAMES[dataset]
    if classes is None:
        return tuple(range(len(names)))
    if isinstance(classes, (int, str)):
        raise ValueError(f"classes must be a sequence such as (3, 5), got {classes!r}.")
    resolved = []
    for item in classes:
        if isinstance(item, str) and item in names:
            resolved.append(names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and (
            0 <= item < len(names)
        ):
            resolved.append(int(item))
        else:
            raise ValueError(
                f"unknown class {item!r} for {dataset}; use an index 0..{len(names) - 1} or one "
                f"of {names}."
            )
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"classes {tuple(classes)!r} repeat a class; list each class once.")
    if not resolved:
        raise ValueError("classes is empty; pass at least one class or None for all.")
    return tuple(resolved)


def class_counts(total: int, n_classes: int) -> list[int]:
    """Balanced counts: total // k each, the first total % k classes get one more."""
    return [total // n_classes + (1 if index < total % n_classes else 0)
            for index in range(n_classes)]


def select_balanced(
    labels: np.ndarray,
    classes: tuple[int, ...],
    n_samples: int | None,
    generator: np.random.Generator,
    split: str,
) -> np.ndarray:
    """Row indices: a seeded uniform draw without replacement of the balanced count per class,
    then shuffled together. n_samples=None takes every row of those classes in official order.

    Per class the draw takes the first n_c entries of one permutation of that class's rows, so a
    smaller n with the same seed gives a subset of a larger one (before the final shuffle).
    """
    if n_samples is None:
        return np.flatnonzero(np.isin(labels, classes))
    counts = class_counts(n_samples, len(classes))
    chosen = []
    for label, count in zip(classes, counts, strict=True):
        rows = np.flatnonzero(labels == label)
        if count > rows.size:
            available = min(int(np.sum(labels == c)) for c in classes)
            raise ValueError(
                f"{split} split has {rows.size} images of class {label}, fewer than the {count} "
                f"asked; n_{split} can be at most {available * len(classes)} for these classes."
            )
        chosen.append(rows[generator.permutation(rows.size)[:count]])
    indices = np.concatenate(chosen)
    return indices[generator.permutation(indices.size)]


def to_float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (P, H, W, c) → float64 (P, c, H, W) in [0, 1], x = uint8 / 255."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return tensor.to(torch.float64) / 255.0


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(P, 3, H, W) → (P, 1, H, W) with BT.601 luma weights; one-channel input is returned."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"grayscale needs 1 or 3 channels, got {x.shape[1]}.")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def check_side(side: int | None) -> int | None:
    """Target side length: None (keep) or a positive int."""
    if side is None:
        return None
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
        raise ValueError(f"side must be a positive int or None, got {side!r}.")
    return int(side)


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear, anti-aliased resize of (P, c, H, W) to (P, c, side, side)."""
    if x.shape[0] == 0:
        return x.new_zeros((0, x.shape[1], side, side))
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def standardize_images(
    x_train: torch.Tensor, x_test: torch.Tensor, mode: Standardize
) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """(x − mean) / std with mean and std from x_train only, applied to both splits.

    'global': one mean and (population) std per channel over all training pixels;
    'pixel': mean and std per (channel, row, column) over training images, where a pixel that is
    constant over the training set keeps std 1 (it is only centred).
    Returns the two arrays and a provenance line (None when mode is None).
    """
    if mode not in STANDARDIZE_MODES:
        raise ValueError(f"standardize must be one of {STANDARDIZE_MODES}, got {mode!r}.")
    if mode is None:
        return x_train, x_test, None
    if x_train.shape[0] < 2:
        raise ValueError("standardization needs at least 2 training images; raise n_train.")
    if mode == "global":
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True, correction=0)
        if bool((std == 0).any()):
            raise ValueError("training images are constant; use standardize=None.")
        line = (
            f"standardize=global: per-channel mean {_rounded(mean)} and std {_rounded(std)} of "
            f"the {x_train.shape[0]} training images, applied to train and test"
        )
    else:
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True, correction=0)
        constant = std == 0
        std = torch.where(constant, torch.ones_like(std), std)
        line = (
            f"standardize=pixel: per-pixel mean and std of the {x_train.shape[0]} training "
            f"images, applied to train and test; {int(constant.sum())} pixels constant over the "
            "training set were only centred"
        )
    return (x_train - mean) / std, (x_test - mean) / std, line


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(value), 6) for value in values.flatten()]


def make_targets(labels: np.ndarray, classes: tuple[int, ...], mode: LabelMode) -> torch.Tensor:
    """'pm1': +1 for classes[0], −1 for classes[1] (float64, exactly two classes);
    'raw': original labels (int64); 'onehot': (P, k) float64, column j for classes[j]."""
    if mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {mode!r}.")
    labels_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if mode == "raw":
        return labels_tensor
    if mode == "pm1":
        if len(classes) != 2:
            raise ValueError(
                f"labels='pm1' needs exactly two classes, got {len(classes)}; use "
                "labels='onehot' or labels='raw' for more."
            )
        return torch.where(labels_tensor == classes[0], 1.0, -1.0).to(torch.float64)
    columns = torch.tensor(classes, dtype=torch.int64)
    return (labels_tensor[:, None] == columns[None, :]).to(torch.float64)


def check_count(name: str, value: int | None, minimum: int) -> int | None:
    """Sample counts: None (all) or an int ≥ minimum."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or None (all), got {value!r}.")
    return int(value)
