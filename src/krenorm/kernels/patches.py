"""Patch geometry and patch extraction laid out exactly as torch.nn.Conv2d (docs/math/theory.md
§1, docs/math/features.md "Patches").

r_i(x) ∈ R^M, M = c·m_h·m_w, flattened channel-major like Conv2d.weight.reshape(k, −1), positions
i = 1..Np in row-major order of the output grid, so that conv(x)[k, i] = weight[k] · r_i(x).

`PatchGeometry` is the one description of a convolution's patches (mask, stride, padding and
padding mode) used by the architectures, the kernels, the effective theory, the sampled networks
and the feature-learning kernels. This module is a leaf: it imports nothing else of krenorm but
the boundary checks, so every other module may depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from krenorm._validation import as_pair, check_images

PaddingMode = Literal["zeros", "circular"]
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)
#: The padding mode of torch.nn.Conv2d's default, left out of flat dictionaries.
DEFAULT_PADDING_MODE: PaddingMode = "zeros"

IntPair = int | tuple[int, int]


def patch_grid(
    image_hw: tuple[int, int],
    mask: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> tuple[int, int]:
    """Output grid (out_h, out_w) of a Conv2d with this kernel size, stride and padding:
    ⌊(size + 2p − m)/s⌋ + 1 per axis (the padding mode does not change it)."""
    mask_hw = as_pair("mask", mask)
    stride_hw = as_pair("stride", stride)
    pad_hw = as_pair("padding", padding, minimum=0)
    if len(image_hw) != 2:
        raise ValueError(f"image_hw must be (H, W), got {tuple(image_hw)!r}.")
    grid = []
    for size, m, s, p in zip(image_hw, mask_hw, stride_hw, pad_hw, strict=True):
        if m > size + 2 * p:
            raise ValueError(
                f"mask {mask_hw} is larger than the (padded) image {tuple(image_hw)} with padding "
                f"{pad_hw}; use a smaller mask or more padding."
            )
        grid.append((size + 2 * p - m) // s + 1)
    return grid[0], grid[1]


def extract_patches(
    x: torch.Tensor,
    mask: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """Patches of images x (P, c, H, W) with zero padding, as a tensor (P, Np, M).

    Sliding-window views (Tensor.unfold) permuted to (P, out_h, out_w, c, m_h, m_w) and copied
    once: the same layout as F.unfold / Conv2d, and on CPU many times faster than F.unfold's
    im2col; test_patches checks conv outputs are reproduced exactly for strides, paddings and
    channel counts. `PatchGeometry.patches` adds circular padding.
    """
    check_images("x", x)
    mask_hw = as_pair("mask", mask)
    stride_hw = as_pair("stride", stride)
    pad_hw = as_pair("padding", padding, minimum=0)
    out_h, out_w = patch_grid((x.shape[2], x.shape[3]), mask_hw, stride_hw, pad_hw)
    if any(pad_hw):
        x = F.pad(x, (pad_hw[1], pad_hw[1], pad_hw[0], pad_hw[0]))
    windows = x.unfold(2, mask_hw[0], stride_hw[0]).unfold(3, mask_hw[1], stride_hw[1])
    # windows: (P, c, out_h, out_w, m_h, m_w) → (P, out_h·out_w, c·m_h·m_w), channel-major.
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], out_h * out_w, -1).contiguous()


@dataclass(frozen=True, init=False)
class PatchGeometry:
    """The patches of a torch.nn.Conv2d: mask (kernel size), stride, padding and padding mode.

    Ints are read as square pairs. `padding_mode` is 'zeros' (Conv2d's default) or 'circular'
    (the image wraps around before the patches are cut).
    """

    mask: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    padding_mode: PaddingMode

    def __init__(self, mask: IntPair, stride: IntPair = 1, padding: IntPair = 0,
                 padding_mode: PaddingMode = DEFAULT_PADDING_MODE) -> None:
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got "
                             f"{padding_mode!r}.")
        object.__setattr__(self, "mask", as_pair("mask", mask))
        object.__setattr__(self, "stride", as_pair("stride", stride))
        object.__setattr__(self, "padding", as_pair("padding", padding, minimum=0))
        object.__setattr__(self, "padding_mode", padding_mode)

    @classmethod
    def of(cls, geometry: PatchGeometry | IntPair, stride: IntPair | None = None,
           padding: IntPair | None = None) -> PatchGeometry:
        """A geometry given either as a `PatchGeometry` (then without stride and padding) or by
        its mask with optional stride (default 1) and zero padding (default 0)."""
        if isinstance(geometry, PatchGeometry):
            if stride is not None or padding is not None:
                raise ValueError("pass stride and padding inside the PatchGeometry, not next to "
                                 "it.")
            return geometry
        return cls(geometry, 1 if stride is None else stride, 0 if padding is None else padding)

    @property
    def is_circular(self) -> bool:
        """True when padding wraps the image around (and there is padding to wrap)."""
        return self.padding_mode == "circular" and any(self.padding)

    def grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Positions (out_h, out_w) of the patch grid for an image of size (H, W)."""
        return patch_grid(image_hw, self.mask, self.stride, self.padding)

    def n_patches(self, image_hw: tuple[int, int]) -> int:
        """Np = out_h·out_w."""
        out_h, out_w = self.grid(image_hw)
        return out_h * out_w

    def patch_dimension(self, channels: int) -> int:
        """M = c·m_h·m_w."""
        return channels * self.mask[0] * self.mask[1]

    def patch_shape(self, channels: int) -> tuple[int, int, int]:
        """(c, m_h, m_w): how a patch vector (or a metric eigenvector) reshapes to a filter."""
        return (channels, *self.mask)

    def _pad_circular(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.padding
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="circular")

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(P, Np, M) patches of images x (P, c, H, W), channel-major as Conv2d."""
        check_images("x", x)
        if self.is_circular:
            return extract_patches(self._pad_circular(x), self.mask, self.stride, 0)
        return extract_patches(x, self.mask, self.stride, self.padding)

    def convolve(self, x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """Conv2d of images x (P, c, H, W) with filters (k, c, m_h, m_w) in this geometry:
        output (P, k, out_h, out_w), entry [k, i] = filters[k].flatten() · r_i(x)."""
        if self.is_circular:
            return F.conv2d(self._pad_circular(x), filters, stride=self.stride)
        return F.conv2d(x, filters, stride=self.stride, padding=self.padding)

    def to_dict(self) -> dict[str, object]:
        """mask, stride, padding (pairs) and padding_mode."""
        return {"mask": self.mask, "stride": self.stride, "padding": self.padding,
                "padding_mode": self.padding_mode}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> PatchGeometry:
        """Inverse of `to_dict` (lists read as pairs)."""
        unknown = set(raw) - {"mask", "stride", "padding", "padding_mode"}
        if unknown:
            raise ValueError(f"unknown patch-geometry keys {sorted(unknown)}; expected mask, "
                             "stride, padding, padding_mode.")
        return cls(**raw)  # type: ignore[arg-type]
