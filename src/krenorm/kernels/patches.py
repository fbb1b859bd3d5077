"""Patch extraction laid out exactly as torch.nn.Conv2d (THEORY.md §1, FEATURES.md "Patches").

r_i(x) ∈ R^M, M = c·m_h·m_w, flattened channel-major like Conv2d.weight.reshape(k, −1), positions
i = 1..Np in row-major order of the output grid, so that conv(x)[k, i] = weight[k] · r_i(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from krenorm._validation import as_pair, check_images


def patch_grid(
    image_hw: tuple[int, int],
    mask: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> tuple[int, int]:
    """Output grid (out_h, out_w) of a Conv2d with this kernel size, stride and zero padding."""
    mask_hw = as_pair("mask", mask)
    stride_hw = as_pair("stride", stride)
    pad_hw = as_pair("padding", padding, minimum=0)
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
    mask: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """Patches of images x (P, c, H, W) as a tensor (P, Np, M).

    Uses torch's unfold, which shares Conv2d's layout; test_patches checks conv outputs are
    reproduced exactly for strides, paddings and channel counts.
    """
    check_images("x", x)
    mask_hw = as_pair("mask", mask)
    stride_hw = as_pair("stride", stride)
    pad_hw = as_pair("padding", padding, minimum=0)
    patch_grid(tuple(x.shape[2:]), mask_hw, stride_hw, pad_hw)
    columns = F.unfold(x, kernel_size=mask_hw, stride=stride_hw, padding=pad_hw)  # (P, M, Np)
    return columns.transpose(1, 2).contiguous()
