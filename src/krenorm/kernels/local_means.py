"""Per-patch mean activations m_i^μ = μ(C_ii^{μμ}) of a CNN/LCN (docs/math/theory.md §3.6).

With scaled patches r_i(x)/√(λ0 M) the pre-activation h_i^μ = w·r_i(x^μ) of a first-layer filter
w ~ N(0, 1/λ0) has variance C_ii^{μμ} = |r_i(x^μ)|²/(λ0 M), so its mean activation is
μ(C_ii^{μμ}) = E_z σ(√C z) (√(C/2π) for ReLU, C for the square, Gauss–Hermite otherwise; exactly
0 for an odd σ). These means carry the mean term of the (Q̄, Q) action of a non-odd activation.
"""

from __future__ import annotations

import torch

from krenorm.kernels.activations import Activation, get_activation
from krenorm.kernels.grams import scaled_patches
from krenorm.kernels.patches import IntPair, PatchGeometry

__all__ = ["local_means"]


def local_means(
    x: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "relu",
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """m_i^μ = μ(C_ii^{μμ}) for images x (P, c, H, W): shape (Np, P), by patch position.

    Zero for an odd activation (μ ≡ 0 exactly, not a quadrature's round-off)."""
    act = get_activation(activation)
    patches = scaled_patches(x, mask, stride, padding, lambda0, dtype=dtype, device=device)
    variances = (patches**2).sum(-1).T.contiguous()  # (Np, P)
    if act.odd:
        return torch.zeros_like(variances)
    return act.mean(variances)
