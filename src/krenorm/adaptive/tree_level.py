"""Tree-level adaptive theory of linear networks: closed form (docs/math/adaptive.md §2 and
Linear networks).

At tree level M = (g_w χ/N) t tᵀ; for linear φ the single-neuron law of v is Gaussian with
precision (D/g_v) I − (g_w χ/N) Xᵀt tᵀX, so by Sherman–Morrison

    ⟨v vᵀ⟩ = (g_v/D) I + (g_v/D)² (g_w χ Q/N) Xᵀt tᵀX,   1/Q = 1 − (χ/N) tᵀK̂t,

and self-consistency collapses to one scalar equation: 1 − 1/Q = (χ/N) tᵀK̂t, t = (QK̂ + κ)⁻¹y.
The adapted kernel is Ĉ = K̂ + (χ/(NQ)) f̄ f̄ᵀ (f̄ = Q K̂ t), and GP regression with Ĉ has the same
mean predictor as the rescaled kernel Q K̂. ⟨VᵀV⟩/N carries a rank-one spike along Xᵀt (the
teacher direction), strength (g_v/D)² (g_w χ Q/N) |Xᵀt|²: directional feature learning that no
rescaling of K̂ can show.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm.adaptive.linear_theory import (
    LinearPrediction,
    check_linear_data,
    linear_kernel_hat,
    predict_at_scale,
)
from krenorm.adaptive.rescaling import RescalingSolution, solve_rescaling
from krenorm.adaptive.scaling import ScalingRegime


@dataclass(frozen=True)
class RankOneSpike:
    """The spike of ⟨VᵀV⟩/N above (g_v/D) I: unit direction Xᵀt/|Xᵀt| and its eigenvalue."""

    direction: torch.Tensor
    strength: float

    def overlap(self, teacher: torch.Tensor) -> float:
        """|cos| between the spike direction and a teacher direction."""
        teacher = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
        if teacher.shape != self.direction.shape:
            raise ValueError(
                f"teacher has D = {teacher.numel()}, the spike {self.direction.numel()}."
            )
        return float(abs(self.direction @ teacher) / teacher.norm())

    def to_dict(self) -> dict:
        return {"direction": self.direction.tolist(), "strength": self.strength}


@dataclass(frozen=True)
class TreeLevelLinearResult:
    """Tree-level solution (fluctuations dropped), predictions, and the rank-one spike."""

    solution: RescalingSolution
    prediction: LinearPrediction
    spike: RankOneSpike

    def to_dict(self) -> dict:
        return {
            "solution": self.solution.to_dict(),
            "prediction": self.prediction.to_dict(),
            "spike": self.spike.to_dict(),
        }


def adapted_kernel(
    kernel: torch.Tensor, train_mean: torch.Tensor, scale: float, regime: ScalingRegime
) -> torch.Tensor:
    """Ĉ = K̂ + (χ/(NQ)) f̄ f̄ᵀ on the training set."""
    train_mean = torch.as_tensor(train_mean, dtype=torch.float64).reshape(-1)
    return torch.as_tensor(kernel, dtype=torch.float64) + regime.chi / (
        regime.width * float(scale)
    ) * torch.outer(train_mean, train_mean)


def rank_one_spike(
    x_train: torch.Tensor, y_train: torch.Tensor, regime: ScalingRegime, scale: float
) -> RankOneSpike:
    """Direction Xᵀt/|Xᵀt| and strength (g_v/D)² (g_w χ Q/N) |Xᵀt|², t = (QK̂ + κ)⁻¹y."""
    x_train, y_train, _ = check_linear_data(x_train, y_train, x_train, regime)
    kernel = linear_kernel_hat(x_train, x_train, regime)
    system = float(scale) * kernel + regime.kappa * torch.eye(len(y_train), dtype=torch.float64)
    t = torch.linalg.solve(system, y_train)
    feature_t = x_train.T @ t
    norm = float(feature_t.norm())
    if norm == 0.0:
        raise ValueError("Xᵀt vanishes (y orthogonal to the inputs): there is no spike to report.")
    sigma2 = regime.first_layer_prior_variance
    strength = sigma2**2 * regime.g_w * regime.chi * float(scale) / regime.width * norm**2
    return RankOneSpike(feature_t / norm, strength)


def tree_level_linear(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, regime: ScalingRegime
) -> TreeLevelLinearResult:
    """Solve 1 − 1/Q = (χ/N) tᵀK̂t and predict with the adapted kernel (module docstring)."""
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    kernel = linear_kernel_hat(x_train, x_train, regime)
    solution = solve_rescaling(kernel, y_train, regime.kappa, regime.chi, (regime.width,), False)
    scale = solution.total_scale
    prediction = predict_at_scale("tree-level", x_train, y_train, x_test, regime, scale)
    return TreeLevelLinearResult(
        solution, prediction, rank_one_spike(x_train, y_train, regime, scale)
    )
