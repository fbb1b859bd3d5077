"""Learning curves of kernel ridge regression from a spectrum (docs/math/spectra.md §5).

Eigenlearning equations for n samples and ridge δ: the effective ridge κ > 0 solves

    Σ_i m_i λ_i/(λ_i + κ) + δ/κ = n,

learnabilities L_i = λ_i/(λ_i + κ), overfitting coefficient E0 = n/(n − Σ_i m_i L_i²), and

    test MSE = E0·(Σ_i (1 − L_i)² P_i + σ²),   train MSE = (δ/(nκ))²·test MSE,

with P_i the target power in eigenspace i (Σ of its squared eigen-coefficients) and σ² the label
noise. The test MSE is measured against noisy test labels; the clean excess error is that minus σ².
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from scipy.optimize import brentq

#: Eigenvalues below −this × the largest are a non-PSD kernel, not rounding.
NEGATIVE_EIGENVALUE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class EigenlearningPrediction:
    """Predicted KRR errors at one sample size."""

    sample_size: int
    ridge: float
    noise_variance: float
    effective_ridge: float
    overfitting_coefficient: float
    target_learnability: float
    test_mse: float
    train_mse: float

    def to_dict(self) -> dict:
        return asdict(self)


def _prepare_spectrum(
    eigenvalues: torch.Tensor, multiplicities: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    eigenvalues = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(eigenvalues).all():
        raise ValueError("eigenvalues contain NaN or inf.")
    if multiplicities is None:
        multiplicities = torch.ones_like(eigenvalues)
    multiplicities = torch.as_tensor(multiplicities, dtype=torch.float64).reshape(-1)
    if multiplicities.shape != eigenvalues.shape or (multiplicities < 0).any():
        raise ValueError("multiplicities must be non-negative, one per eigenvalue.")
    largest = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    if largest == 0.0:
        raise ValueError("the spectrum is identically zero; nothing can be learned.")
    if float(eigenvalues.min()) < -NEGATIVE_EIGENVALUE_TOLERANCE * largest:
        raise ValueError(
            f"eigenvalue {float(eigenvalues.min()):.3e} is negative beyond rounding: the kernel is "
            "not positive semi-definite."
        )
    return eigenvalues.clamp_min(0.0), multiplicities


def effective_ridge(
    eigenvalues: torch.Tensor,
    sample_size: int,
    ridge: float,
    multiplicities: torch.Tensor | None = None,
) -> float:
    """κ solving Σ m_i λ_i/(λ_i + κ) + δ/κ = n, by Brent's method on log κ.

    The left side decreases strictly in κ, from +∞ (δ > 0) or the rank Σ m_i [λ_i > 0] (δ = 0)
    to 0, so the root is unique; with δ = 0 it exists only for n < rank.
    """
    eigenvalues, multiplicities = _prepare_spectrum(eigenvalues, multiplicities)
    if sample_size < 1:
        raise ValueError(f"sample_size must be >= 1, got {sample_size}.")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be finite and non-negative, got {ridge}.")
    n = float(sample_size)
    positive = eigenvalues > 0
    if ridge == 0:
        rank = float(multiplicities[positive].sum())
        if n >= rank:
            raise ValueError(
                f"ridgeless regression with n = {sample_size} >= rank {rank:.0f}: the equation has "
                "no root (the kernel interpolates exactly); use a positive ridge or fewer samples."
            )

    def excess(log_kappa: float) -> float:
        kappa = math.exp(log_kappa)
        degrees_of_freedom = float((multiplicities * eigenvalues / (eigenvalues + kappa)).sum())
        return degrees_of_freedom + ridge / kappa - n

    total = float((multiplicities * eigenvalues).sum())
    upper = math.log(2 * (total + ridge) / n)  # there every term sum ≤ n/2: excess < 0
    smallest = float(eigenvalues[positive].min())
    lower = min(upper, math.log(smallest)) - 1.0
    # Lower the bracket until the excess is positive (always reached: see docstring).
    for _ in range(200):
        if excess(lower) > 0:
            break
        lower -= 5.0
    else:
        raise RuntimeError("could not bracket the effective ridge; the spectrum is degenerate.")
    root, report = brentq(excess, lower, upper, xtol=1e-13, rtol=1e-13, full_output=True)
    if not report.converged:
        raise RuntimeError(f"Brent's method did not converge: {report.flag}.")
    return math.exp(root)


def eigenlearning_prediction(
    eigenvalues: torch.Tensor,
    target_power: torch.Tensor,
    sample_size: int,
    ridge: float,
    noise_variance: float = 0.0,
    multiplicities: torch.Tensor | None = None,
) -> EigenlearningPrediction:
    """Predicted test and train MSE of KRR at n = sample_size (formulas in the module docstring).

    target_power[i] is the target's total squared eigen-coefficient in eigenspace i.
    """
    eigenvalues, multiplicities = _prepare_spectrum(eigenvalues, multiplicities)
    target_power = torch.as_tensor(target_power, dtype=torch.float64).reshape(-1)
    if target_power.shape != eigenvalues.shape or (target_power < 0).any():
        raise ValueError("target_power must be non-negative, one entry per eigenvalue.")
    if not (math.isfinite(noise_variance) and noise_variance >= 0):
        raise ValueError(f"noise_variance must be finite and non-negative, got {noise_variance}.")
    kappa = effective_ridge(eigenvalues, sample_size, ridge, multiplicities)
    learnability = eigenvalues / (eigenvalues + kappa)
    n = float(sample_size)
    overfitting = n / (n - float((multiplicities * learnability**2).sum()))
    residual = float(((1 - learnability) ** 2 * target_power).sum())
    test_mse = overfitting * (residual + noise_variance)
    total_power = float(target_power.sum())
    learned = float((learnability * target_power).sum()) / total_power if total_power else 1.0
    return EigenlearningPrediction(
        sample_size=sample_size,
        ridge=ridge,
        noise_variance=noise_variance,
        effective_ridge=kappa,
        overfitting_coefficient=overfitting,
        target_learnability=learned,
        test_mse=test_mse,
        train_mse=(ridge / (n * kappa)) ** 2 * test_mse,
    )


def eigenlearning_curve(
    eigenvalues: torch.Tensor,
    target_power: torch.Tensor,
    sample_sizes: Sequence[int],
    ridge: float,
    noise_variance: float = 0.0,
    multiplicities: torch.Tensor | None = None,
) -> tuple[EigenlearningPrediction, ...]:
    """`eigenlearning_prediction` at every sample size."""
    return tuple(
        eigenlearning_prediction(
            eigenvalues, target_power, n, ridge, noise_variance, multiplicities
        )
        for n in sample_sizes
    )
