"""Standard-scaling correction: kernel rescaling with the fluctuation term (docs/math/adaptive.md
§3; docs/math/theory.md §3).

    1 − 1/Q = (χ/N) tᵀK̂t − (1/N) tr[(QK̂ + κ)⁻¹ K̂],   t = (QK̂ + κ)⁻¹ y.

Exact at large N for linear networks (the saddle point of the Gamma scale mixture); at χ = 1 it
is the stationarity condition of docs/math/theory.md §3's S(Q̄) with K_R = Q̄ K̂ and T = κ. For a
nonlinear φ with K̂ its NNGP kernel it is the Gaussian-equivalence rescaling theory, carried to
general χ; it cannot change the shape of the kernel, only its scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm._validation import check_finite
from krenorm.adaptive.linear_theory import (
    LinearPrediction,
    check_linear_data,
    linear_kernel_hat,
    posterior_test_loss,
    predict_at_scale,
)
from krenorm.adaptive.rescaling import RescalingSolution, solve_rescaling
from krenorm.adaptive.scaling import INCREASE_KAPPA, ScalingRegime
from krenorm.linalg import factor_noisy_kernel


@dataclass(frozen=True)
class CorrectedLinearResult:
    """Standard-scaling correction of a linear network: the scalar solution and its predictions."""

    solution: RescalingSolution
    prediction: LinearPrediction

    def to_dict(self) -> dict:
        return {"solution": self.solution.to_dict(), "prediction": self.prediction.to_dict()}


@dataclass(frozen=True)
class ScaledKernelPrediction:
    """GP regression with the rescaled kernel Q K̂ (Q = 1: NNGP) at noise κ, output covariance /χ.

    mean m(x*) = Q k̂*ᵀ(QK̂ + κ)⁻¹y; variance (1/χ)[Q k̂** − Q² k̂*ᵀ(QK̂ + κ)⁻¹k̂*].
    """

    method: str
    scale: float
    train_mean: torch.Tensor
    test_mean: torch.Tensor
    test_variance: torch.Tensor
    solution: RescalingSolution | None

    def test_loss(self, y_test: torch.Tensor) -> dict[str, float]:
        """Posterior-averaged instantaneous test MSE = bias² + variance (docs/math/theory.md §4)."""
        return posterior_test_loss(y_test, self.test_mean, self.test_variance)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "scale": self.scale,
            "train_mean": self.train_mean.tolist(),
            "test_mean": self.test_mean.tolist(),
            "test_variance": self.test_variance.tolist(),
            "solution": None if self.solution is None else self.solution.to_dict(),
        }


def standard_corrected_linear(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, regime: ScalingRegime
) -> CorrectedLinearResult:
    """Solve the corrected scalar equation for a linear network and predict at that Q
    (mean, rescaled-GP covariance, ⟨VᵀV⟩/N with the −A⁻¹ fluctuation term, hidden kernel)."""
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    kernel = linear_kernel_hat(x_train, x_train, regime)
    solution = solve_rescaling(kernel, y_train, regime.kappa, regime.chi, (regime.width,), True)
    prediction = predict_at_scale(
        "corrected", x_train, y_train, x_test, regime, solution.total_scale
    )
    return CorrectedLinearResult(solution, prediction)


def scaled_kernel_prediction(
    kernel: torch.Tensor,
    cross_kernel: torch.Tensor,
    test_diagonal: torch.Tensor,
    y_train: torch.Tensor,
    regime: ScalingRegime,
    scale: float,
    method: str,
    solution: RescalingSolution | None = None,
) -> ScaledKernelPrediction:
    """GP regression with kernel Q K̂ (P×P), cross kernel k̂ (P×M) and test diagonal k̂** (M)."""
    kernel, cross_kernel, test_diagonal, y_train = (
        torch.as_tensor(a, dtype=torch.float64)
        for a in (kernel, cross_kernel, test_diagonal, y_train)
    )
    for name, value in (
        ("kernel", kernel),
        ("cross_kernel", cross_kernel),
        ("test_diagonal", test_diagonal),
    ):
        check_finite(name, value)
    if cross_kernel.shape != (kernel.shape[0], test_diagonal.shape[0]):
        raise ValueError(
            f"cross_kernel must be (P, M) = ({kernel.shape[0]}, {test_diagonal.shape[0]}), "
            f"got {tuple(cross_kernel.shape)}."
        )
    q = float(scale)
    factor = factor_noisy_kernel(q * kernel, regime.kappa, overwrite=True, what="Q K̂ + κ",
                                 advice=INCREASE_KAPPA)
    t = torch.cholesky_solve(y_train.reshape(-1, 1), factor)[:, 0]
    solved = torch.cholesky_solve(cross_kernel, factor)
    variance = (q * test_diagonal - q**2 * (cross_kernel * solved).sum(0)) / regime.chi
    return ScaledKernelPrediction(
        method=method,
        scale=q,
        train_mean=y_train - regime.kappa * t,
        test_mean=q * cross_kernel.T @ t,
        test_variance=variance.clamp_min(0.0),
        solution=solution,
    )


def standard_corrected_kernel(
    kernel: torch.Tensor,
    cross_kernel: torch.Tensor,
    test_diagonal: torch.Tensor,
    y_train: torch.Tensor,
    regime: ScalingRegime,
) -> ScaledKernelPrediction:
    """Standard-scaling correction for any NNGP kernel K̂: solve the corrected scalar equation,
    then predict with Q K̂ (method 'corrected')."""
    solution = solve_rescaling(kernel, y_train, regime.kappa, regime.chi, (regime.width,), True)
    return scaled_kernel_prediction(
        kernel,
        cross_kernel,
        test_diagonal,
        y_train,
        regime,
        solution.total_scale,
        "corrected",
        solution,
    )
