"""Direct kernel ridge regression on the hypercube, the yardstick for eigenlearning
(docs/math/spectra.md §5).

n training points drawn i.i.d. uniformly from {±1}^d, labels y = f*(x) + ε with ε ~ N(0, σ²);
f̂(x) = K(x, X)(K(X, X) + δ I)^{-1} y by a Cholesky solve (preconditioned conjugate gradients
beyond 8192 points, krenorm.kernel_ridge_solvers). For K(x, y) = g(x⊙y) the Gram entries
are g[x_i XOR x_j] on bit masks. The test error is exact over all 2^d points and, like the
eigenlearning prediction, includes the label noise: E_x (f̂ − f*)² + σ².
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from krenorm.kernel_ridge_solvers import SolverMethod, solve_ridge
from krenorm.memory import chunk_length

#: Budget for one chunk of test-point kernel rows.
TEST_CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class KernelRidgeResult:
    """Errors of one kernel ridge regression fit."""

    sample_size: int
    ridge: float
    noise_variance: float
    seed: int
    test_mse: float
    train_mse: float

    def to_dict(self) -> dict:
        return asdict(self)


def hypercube_kernel_ridge(
    kernel_values: torch.Tensor,
    target_values: torch.Tensor,
    sample_size: int,
    ridge: float,
    noise_variance: float,
    seed: int,
    *,
    solver: SolverMethod = "auto",
) -> KernelRidgeResult:
    """Fit KRR on `sample_size` i.i.d. uniform points of {±1}^d and score it on all 2^d points.

    kernel_values: g(z) for all 2^d bit masks z (`hypercube_kernel_values`); target_values: f*
    on all 2^d points. Ridge δ must be positive (the Gram matrix of repeated points is singular).
    """
    size = kernel_values.numel()
    if target_values.shape != kernel_values.shape:
        raise ValueError("target_values and kernel_values must both have one entry per point.")
    if sample_size < 1:
        raise ValueError(f"sample_size must be >= 1, got {sample_size}.")
    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be positive (K + δI must be invertible), got {ridge}.")
    if not (math.isfinite(noise_variance) and noise_variance >= 0):
        raise ValueError(f"noise_variance must be non-negative, got {noise_variance}.")
    generator = torch.Generator().manual_seed(seed)
    kernel_values = kernel_values.to(torch.float64).cpu()
    target_values = target_values.to(torch.float64).cpu()
    points = torch.randint(0, size, (sample_size,), generator=generator)
    noise = math.sqrt(noise_variance) * torch.randn(
        sample_size, generator=generator, dtype=torch.float64
    )
    labels = target_values[points] + noise
    gram = kernel_values[points[:, None] ^ points[None, :]]
    # Cholesky up to 8192 points, preconditioned CG beyond (one solver for every lens).
    coefficients, _ = solve_ridge(gram, labels, ridge, method=solver)
    squared_error = 0.0
    step = chunk_length(8 * sample_size, TEST_CHUNK_BYTES)
    for start in range(0, size, step):
        rows = torch.arange(start, min(start + step, size))
        prediction = kernel_values[rows[:, None] ^ points[None, :]] @ coefficients
        squared_error += float(((prediction - target_values[rows]) ** 2).sum())
    train_prediction = labels - ridge * coefficients  # K α = y − δ α
    return KernelRidgeResult(
        sample_size=sample_size,
        ridge=ridge,
        noise_variance=noise_variance,
        seed=seed,
        test_mse=squared_error / size + noise_variance,
        train_mse=float(((train_prediction - labels) ** 2).mean()),
    )
