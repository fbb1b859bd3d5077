"""Kernel ridge regression by Cholesky (docs/math/features.md §5): α = (K + λI)⁻¹ Y."""

from __future__ import annotations

import torch

from krenorm._validation import check_finite, check_positive


def solve_kernel_ridge(gram: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """α = (K + λI)⁻¹ Y through the Cholesky factor of K + λI (no explicit inverse).

    gram K: (n, n) symmetric PSD; targets Y: (n,) or (n, O); ridge λ > 0. Raises ValueError when
    K + λI is not numerically positive definite, saying what to change.
    """
    check_positive("ridge", ridge)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be square, got {tuple(gram.shape)}.")
    if targets.shape[0] != gram.shape[0]:
        raise ValueError(f"targets have {targets.shape[0]} rows, the gram {gram.shape[0]}.")
    check_finite("gram", gram)
    check_finite("targets", targets)
    vector = targets.ndim == 1
    rhs = targets[:, None] if vector else targets
    shifted = gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(shifted)
    if int(info) != 0:
        raise ValueError(
            f"K + λI is not positive definite at ridge {ridge:g} (Cholesky failed at leading minor "
            f"{int(info)}); increase the ridge or compute the kernel in float64."
        )
    coefficients = torch.cholesky_solve(rhs.to(gram), factor)
    return coefficients[:, 0] if vector else coefficients
