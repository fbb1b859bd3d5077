"""Infinite-width (NNGP) kernels of the one-hidden-layer architectures (docs/math/theory.md §2).

FC: K/λ1;  CNN and LCN without pooling: (1/(λ1 Np)) Σ_i K_ii (identical);
CNN with global average pooling: (1/(λ1 Np²)) Σ_ij K_ij.
"""

from __future__ import annotations

from typing import Protocol

import torch

from krenorm._validation import check_positive
from krenorm.kernels.grams import (
    compute_local_blocks,
    fc_kernel,
    fc_kernel_diagonal,
    local_diagonal_blocks,
)
from krenorm.kernels.local_kernel import LocalKernel, weighted_test_diagonals
from krenorm.kernels.patches import PatchGeometry


class KernelArchitecture(Protocol):
    """What the kernels need of an architecture (`krenorm.architectures.ArchitectureSpec` is
    one). A protocol rather than an import: architectures sits above kernels (it holds a
    PatchGeometry from here), so kernels never imports it back."""

    @property
    def kind(self) -> str: ...

    @property
    def activation(self) -> str: ...

    @property
    def geometry(self) -> PatchGeometry: ...

    def n_patches(self, image_shape: tuple[int, ...]) -> int: ...


def nngp_kernel(
    spec: KernelArchitecture,
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    lambda0: float = 1.0,
    lambda1: float = 1.0,
) -> torch.Tensor:
    """NNGP kernel between x and z (z=None: the P×P training kernel; else the cross kernel)."""
    check_positive("lambda1", lambda1)
    if spec.kind == "fc":
        return fc_kernel(x, z, spec.activation, lambda0) / lambda1
    geometry = spec.geometry
    if z is None:
        if spec.kind == "cnn-gap":
            blocks = compute_local_blocks(x, geometry, activation=spec.activation,
                                          lambda0=lambda0)
            ones = torch.ones(blocks.n_patches, blocks.n_patches, dtype=blocks.pairs.dtype)
            return blocks.contract(ones) / (lambda1 * blocks.n_patches**2)
        diagonal = local_diagonal_blocks(x, geometry, activation=spec.activation,
                                         lambda0=lambda0)
        return diagonal.sum(0) / (lambda1 * diagonal.shape[0])
    local = LocalKernel(z, geometry, activation=spec.activation, lambda0=lambda0)
    n_patches = local.n_patches
    if spec.kind == "cnn-gap":
        ones = torch.ones(n_patches, n_patches, dtype=torch.float64)
        return local.contract_cross(ones, x) / (lambda1 * n_patches**2)
    return local.contract_cross_diagonal(torch.ones(n_patches), x) / (lambda1 * n_patches)


def nngp_diagonal(
    spec: KernelArchitecture, x: torch.Tensor, lambda0: float = 1.0, lambda1: float = 1.0
) -> torch.Tensor:
    """K(x0, x0) for each test input — never a test×test matrix."""
    check_positive("lambda1", lambda1)
    if spec.kind == "fc":
        return fc_kernel_diagonal(x, spec.activation, lambda0) / lambda1
    n_patches = spec.n_patches(tuple(x.shape[1:]))
    weights = (torch.ones(n_patches, n_patches, dtype=torch.float64) if spec.kind == "cnn-gap"
               else torch.ones(n_patches, dtype=torch.float64))
    scale = n_patches**2 if spec.kind == "cnn-gap" else n_patches
    return weighted_test_diagonals(weights, x, spec.geometry, activation=spec.activation,
                                   lambda0=lambda0) / (lambda1 * scale)
