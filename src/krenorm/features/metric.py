"""Matrix powers of PSD matrices and the ConvRFM metric update M ← normalise(G^power)
(docs/math/features.md §3, "ConvRFM iteration").

Normalisation of M (docs/math/features.md asks to document it): M is scaled to match the starting
metric M0 = I of the same dimension d, so the bandwidth L means the same in every round:
    trace      tr M = d          (default)
    frobenius  ‖M‖_F = √d
    max        λ_max(M) = 1
For the bias-free ReLU kernels (nngp, ntk) the scale of M only rescales K, which the ridge absorbs.
"""

from __future__ import annotations

from typing import Literal

import torch

Normalisation = Literal["trace", "frobenius", "max"]
NORMALISATIONS: tuple[str, ...] = ("trace", "frobenius", "max")
#: Eigenvalues above −tolerance·λ_max are rounding; below, the matrix is not PSD. The tolerance
#: is the larger of this floor and `_ROUNDING_FACTOR`·d·ε(dtype): a symmetric eigensolver's
#: backward error is O(d·ε·‖A‖), and a PSD matrix accumulated as a sum of outer products (an AGOP)
#: carries rounding of the same order. A fixed 1e-8 sits below float32 rounding (ε ≈ 1.2e-7), so
#: float32 AGOPs failed with relative eigenvalues around −5e-8.
_NEGATIVE_EIGENVALUE_TOLERANCE = 1e-8
_ROUNDING_FACTOR = 64


def negative_eigenvalue_tolerance(dimension: int, dtype: torch.dtype) -> float:
    """Relative size −t·λ_max below which an eigenvalue is not rounding: t = max(1e-8, 64·d·ε)
    with ε the machine epsilon of dtype (1e-8 for float64 up to d ≈ 7·10^5; 64·d·1.19e-7 for
    float32)."""
    rounding = _ROUNDING_FACTOR * dimension * torch.finfo(dtype).eps
    return max(_NEGATIVE_EIGENVALUE_TOLERANCE, rounding)


def psd_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix (or stack) with rounding negatives clipped.

    Eigenvalues in [−t·λ_max, 0) are rounding and set to 0, t = negative_eigenvalue_tolerance(d,
    dtype) (1e-8 in float64, ≈ 64·d·1.2e-7 in float32); a more negative one means the input is
    not PSD and raises ValueError.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (matrix + matrix.transpose(-1, -2)))
    largest = eigenvalues.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(matrix.dtype).tiny)
    tolerance = negative_eigenvalue_tolerance(matrix.shape[-1], matrix.dtype)
    if (eigenvalues < -tolerance * largest).any():
        worst = float((eigenvalues / largest).min())
        raise ValueError(
            f"matrix is not positive semi-definite (relative eigenvalue {worst:.3g}); "
            "powers and metrics need a PSD matrix."
        )
    return eigenvalues.clamp_min(0), eigenvectors


def psd_matrix_power(matrix: torch.Tensor, alpha: float) -> torch.Tensor:
    """A^α = V diag(λ^α) Vᵀ of a symmetric PSD matrix (or a stack), α > 0, via `psd_eigh`."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}.")
    eigenvalues, eigenvectors = psd_eigh(matrix)
    return (eigenvectors * (eigenvalues**alpha)[..., None, :]) @ eigenvectors.transpose(-1, -2)


def update_metric(
    agop: torch.Tensor,
    power: float = 1.0,
    normalisation: Normalisation = "trace",
    threshold: float = 0.0,
) -> torch.Tensor:
    """M = c · (G^power with eigenvalues below threshold·λ_max set to zero), c from `normalisation`
    (module docstring). Raises ValueError when G vanishes (a constant predictor has no AGOP)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}.")
    if power <= 0:
        raise ValueError(f"power must be positive, got {power}.")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}.")
    eigenvalues, eigenvectors = psd_eigh(agop)
    if float(eigenvalues.max()) <= 0:
        raise ValueError(
            "the AGOP is zero (the kernel predictor is constant); use a smaller ridge, another "
            "bandwidth or more AGOP samples."
        )
    powered = eigenvalues**power
    powered = torch.where(powered >= threshold * powered.max(), powered, 0.0)
    dimension = agop.shape[-1]
    if normalisation == "trace":
        scale = dimension / powered.sum()
    elif normalisation == "frobenius":
        scale = dimension**0.5 / powered.norm()
    else:
        scale = 1 / powered.max()
    metric = (eigenvectors * (scale * powered)) @ eigenvectors.T
    return 0.5 * (metric + metric.T)
