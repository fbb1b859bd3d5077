"""Linear-network predictions at a given kernel scale Q (docs/math/adaptive.md §3).

For f(x) = Σ_i w_i v_i·x the output is a GP with kernel Q K̂/χ given the readout scale Q, with
K̂ = (g_w g_v/D) X Xᵀ. At a saddle-point value of Q (rescaling, standard-scaling correction or
tree level) the theory predicts, with A = Q K̂ + κ and t = A⁻¹ y:

    mean        Q k̂*ᵀ t                                   (train: Q K̂ t = y − κ t)
    covariance  (1/χ) [Q k̂** − Q² k̂*ᵀ A⁻¹ k̂*']
    ⟨VᵀV⟩/N     (g_v/D) I + (g_v/D)² (g_w Q/N) Xᵀ [χ t tᵀ − f·A⁻¹] X    (f = 1 corrected, 0 tree)
    hidden kernel  Ĉ(x, x') = g_w xᵀ ⟨VᵀV⟩/N x'

The tree level (f = 0) gives Ĉ = K̂ + (χ/(NQ)) f̄ f̄ᵀ on the training set: the adapted kernel,
whose GP regression (used for its covariance) has the same mean as the rescaled kernel Q K̂.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm._validation import check_finite, check_vectors
from krenorm.adaptive.scaling import INCREASE_KAPPA, ScalingRegime
from krenorm.linalg import factor_noisy_kernel

#: Theories evaluated here; the exact oracle (linear_oracle.py) builds its own LinearPrediction.
THEORY_METHODS = ("nngp", "corrected", "tree-level")


def posterior_test_loss(
    y_test: torch.Tensor, test_mean: torch.Tensor, test_variance: torch.Tensor
) -> dict[str, float]:
    """Posterior-averaged instantaneous test MSE (docs/math/theory.md §4):
    (1/Pt) Σ (y − E f)² (bias²) + (1/Pt) Σ Var f (variance)."""
    y_test = torch.as_tensor(y_test, dtype=torch.float64).reshape(-1)
    if y_test.shape != test_mean.shape:
        raise ValueError(f"y_test has {y_test.numel()} entries, predictions {test_mean.numel()}.")
    bias2 = float(((y_test - test_mean) ** 2).mean())
    variance = float(test_variance.mean())
    return {"bias2": bias2, "variance": variance, "loss": bias2 + variance}


@dataclass(frozen=True)
class LinearPrediction:
    """Posterior predictions of a width-N linear network at one χ.

    scale: Q of the theory (E[Q | data] for the oracle); test_covariance is (M, M);
    weight_covariance ⟨VᵀV⟩/N is (D, D); hidden_kernel Ĉ is (P, P) on the training inputs.
    """

    method: str
    regime: ScalingRegime
    scale: float
    train_mean: torch.Tensor
    test_mean: torch.Tensor
    test_covariance: torch.Tensor
    weight_covariance: torch.Tensor
    hidden_kernel: torch.Tensor

    @property
    def test_variance(self) -> torch.Tensor:
        return torch.diagonal(self.test_covariance).clone()

    def test_loss(self, y_test: torch.Tensor) -> dict[str, float]:
        """Posterior-averaged instantaneous test MSE = bias² + variance (docs/math/theory.md §4)."""
        return posterior_test_loss(y_test, self.test_mean, self.test_variance)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "regime": self.regime.to_dict(),
            "scale": self.scale,
            "train_mean": self.train_mean.tolist(),
            "test_mean": self.test_mean.tolist(),
            "test_variance": self.test_variance.tolist(),
            "weight_covariance": self.weight_covariance.tolist(),
        }


def check_linear_data(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, regime: ScalingRegime
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate (P, D), (P,), (M, D) inputs against the regime's D; return float64 copies."""
    x_train = check_vectors("x_train", torch.as_tensor(x_train)).to(torch.float64)
    x_test = check_vectors("x_test", torch.as_tensor(x_test)).to(torch.float64)
    y_train = torch.as_tensor(y_train, dtype=torch.float64).reshape(-1)
    check_finite("y_train", y_train)
    if y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"x_train has {x_train.shape[0]} rows but y_train {y_train.shape[0]}.")
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.shape[1] != regime.input_dim:
            raise ValueError(
                f"{name} has D = {x.shape[1]} but regime.input_dim = {regime.input_dim}."
            )
    return x_train, y_train, x_test


def linear_kernel_hat(x: torch.Tensor, z: torch.Tensor, regime: ScalingRegime) -> torch.Tensor:
    """K̂(x, z) = (g_w g_v/D) x zᵀ, the NNGP kernel of linear φ."""
    return regime.g_w * regime.g_v / regime.input_dim * (x @ z.T)


def predict_at_scale(
    method: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    regime: ScalingRegime,
    scale: float,
) -> LinearPrediction:
    """The linear-network predictions listed in the module docstring at kernel scale Q = scale.

    method 'corrected' keeps −A⁻¹ in ⟨VᵀV⟩/N (f = 1) and uses the rescaled-GP covariance;
    'tree-level' drops it (f = 0) and uses the GP covariance of the adapted kernel
    Ĉ(x, x') = g_w xᵀ⟨VᵀV⟩/N x'; 'nngp' is N → ∞ (Q = 1, ⟨VᵀV⟩/N = (g_v/D) I, Ĉ = K̂).
    """
    if method not in THEORY_METHODS:
        raise ValueError(f"method must be one of {THEORY_METHODS}, got {method!r}.")
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    q, chi, kappa, n = float(scale), regime.chi, regime.kappa, regime.width
    sigma2 = regime.first_layer_prior_variance
    kernel = linear_kernel_hat(x_train, x_train, regime)
    cross = linear_kernel_hat(x_train, x_test, regime)
    factor = factor_noisy_kernel(q * kernel, kappa, overwrite=True, what="Q K̂ + κ",
                                 advice=INCREASE_KAPPA)
    t = torch.cholesky_solve(y_train[:, None], factor)[:, 0]
    feature_t = x_train.T @ t
    weight_covariance = sigma2 * torch.eye(regime.input_dim, dtype=torch.float64)
    if method != "nngp":
        spike = sigma2**2 * (regime.g_w * q / n) * chi * torch.outer(feature_t, feature_t)
        weight_covariance = weight_covariance + spike
    if method == "corrected":
        solved = torch.cholesky_solve(x_train, factor)  # A⁻¹ X
        weight_covariance = weight_covariance - sigma2**2 * (regime.g_w * q / n) * (
            x_train.T @ solved
        )
        weight_covariance = 0.5 * (weight_covariance + weight_covariance.T)
    if method in ("corrected", "nngp"):
        covariance = q * linear_kernel_hat(
            x_test, x_test, regime
        ) - q**2 * cross.T @ torch.cholesky_solve(cross, factor)
    else:  # tree level: GP covariance of the adapted kernel
        adapted = regime.g_w * x_train @ weight_covariance @ x_train.T
        adapted_cross = regime.g_w * x_train @ weight_covariance @ x_test.T
        adapted_test = regime.g_w * x_test @ weight_covariance @ x_test.T
        adapted_factor = factor_noisy_kernel(adapted, kappa, overwrite=True, what="Ĉ + κ",
                                             advice=INCREASE_KAPPA)
        covariance = adapted_test - adapted_cross.T @ torch.cholesky_solve(
            adapted_cross, adapted_factor
        )
    hidden_kernel = regime.g_w * x_train @ weight_covariance @ x_train.T
    return LinearPrediction(
        method=method,
        regime=regime,
        scale=q,
        train_mean=y_train - kappa * t,
        test_mean=q * cross.T @ t,
        test_covariance=0.5 * (covariance + covariance.T) / chi,
        weight_covariance=weight_covariance,
        hidden_kernel=0.5 * (hidden_kernel + hidden_kernel.T),
    )
