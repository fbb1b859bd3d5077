"""Exact finite-N posterior of a one-hidden-layer linear network (docs/math/adaptive.md §3;
docs/math/theory.md §5).

f(x) = Σ_i w_i v_i·x = u·x with u = Vᵀw. Given w, u ~ N(0, (g_v/D)|w|² I), and
|w|² = (g_w/χ) Q with Q ~ Gamma(N/2, scale 2/N): the output prior is a Gamma(N/2) scale mixture
of GPs with kernel Q K̂/χ, K̂ = (g_w g_v/D) X Xᵀ. Hence, with A(Q) = Q K̂ + κ and t(Q) = A⁻¹ y,

    p(Q | y) ∝ Q^{N/2−1} e^{−NQ/2} N(y; 0, A(Q)/χ)
    E[f(x*)]      = E_Q[Q k̂*ᵀ t]
    Cov[f*, f*']  = E_Q[(1/χ)(Q k̂** − Q² k̂*ᵀ A⁻¹ k̂*')] + Cov_Q[Q k̂*ᵀ t]
    ⟨VᵀV⟩/N      = (g_v/D) I + (g_v/D)² (g_w/N) Xᵀ E_Q[Q (χ t tᵀ − A⁻¹)] X

(the last from VᵀV = a aᵀ + Vᵀ(1 − ŵŵᵀ)V with a = Vᵀŵ = u/|w|, whose posterior given Q is the
Gaussian regression posterior of u). All are 1-D integrals over ln Q, done here by the trapezoid
rule on a fine grid around the posterior mode in the eigenbasis of K̂ (spectrally accurate for
this smooth, rapidly decaying integrand). Exact for any N, P, D, χ, κ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from krenorm.adaptive.linear_theory import (
    LinearPrediction,
    check_linear_data,
    linear_kernel_hat,
)
from krenorm.adaptive.rescaling import KernelSpectrum
from krenorm.adaptive.scaling import ScalingRegime

#: The quadrature window ends where the log posterior of ln Q has dropped by this much (e^-60).
_LOG_POSTERIOR_DROP = 60.0
_COARSE_LOG_SCALES = np.linspace(-40.0, 40.0, 8001)


@dataclass(frozen=True)
class LinearOracleResult:
    """Exact posterior: predictions plus the posterior moments of the kernel scale Q."""

    prediction: LinearPrediction
    scale_mean: float
    scale_std: float
    scale_mode: float
    quadrature_points: int

    def to_dict(self) -> dict:
        return {
            "prediction": self.prediction.to_dict(),
            "scale_mean": self.scale_mean,
            "scale_std": self.scale_std,
            "scale_mode": self.scale_mode,
            "quadrature_points": self.quadrature_points,
        }


def _log_posterior_of_log_scale(
    spectrum: KernelSpectrum, log_scale: np.ndarray, regime: ScalingRegime
) -> np.ndarray:
    """ln p(ln Q | y) up to a constant: (N/2)(ln Q − Q) + ln N(y; 0, (QK̂ + κ)/χ)
    (the Jacobian dQ = Q d ln Q turns Q^{N/2−1} into Q^{N/2})."""
    half_width = 0.5 * regime.width
    scale = np.exp(log_scale)
    return half_width * (log_scale - scale) + spectrum.log_likelihood(
        scale, regime.chi, regime.kappa
    )


def _quadrature_grid(
    spectrum: KernelSpectrum, regime: ScalingRegime, points: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-scale nodes and normalised trapezoid weights covering the posterior mass; the mode."""

    def log_post(u):
        return _log_posterior_of_log_scale(spectrum, np.asarray(u, dtype=np.float64), regime)

    coarse = log_post(_COARSE_LOG_SCALES)
    peak = int(np.argmax(coarse))
    step = _COARSE_LOG_SCALES[1] - _COARSE_LOG_SCALES[0]
    refined = minimize_scalar(
        lambda u: -float(log_post(u)),
        bounds=(_COARSE_LOG_SCALES[peak] - step, _COARSE_LOG_SCALES[peak] + step),
        method="bounded",
        options={"xatol": 1e-12},
    )
    mode = float(refined.x)
    threshold = float(log_post(mode)) - _LOG_POSTERIOR_DROP
    # Outermost coarse points above the threshold catch a second mode, should one exist.
    above = np.flatnonzero(coarse > threshold)
    low, high = min(mode, _COARSE_LOG_SCALES[above[0]]), max(mode, _COARSE_LOG_SCALES[above[-1]])
    if log_post(low - 2 * step) >= threshold or log_post(high + 2 * step) >= threshold:
        raise ValueError(
            "the posterior of Q is not contained in Q ∈ [e^-40, e^40]; rescale the data."
        )
    left = brentq(lambda u: float(log_post(u)) - threshold, low - 2 * step, low)
    right = brentq(lambda u: float(log_post(u)) - threshold, high, high + 2 * step)
    nodes = np.linspace(left, right, points)
    log_weights = log_post(nodes)
    weights = np.exp(log_weights - log_weights.max())
    weights[[0, -1]] *= 0.5  # trapezoid rule (the equal spacing cancels on normalisation)
    return nodes, weights / weights.sum(), float(np.exp(mode))


def _to_torch(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64)


def linear_oracle(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    regime: ScalingRegime,
    quadrature_points: int = 2001,
) -> LinearOracleResult:
    """Exact finite-N posterior mean, test covariance, ⟨VᵀV⟩/N and hidden kernel (see module)."""
    if quadrature_points < 101:
        raise ValueError(f"quadrature_points must be >= 101, got {quadrature_points}.")
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    kernel = linear_kernel_hat(x_train, x_train, regime)
    spectrum = KernelSpectrum.from_kernel(kernel, y_train)
    nodes, weights, mode = _quadrature_grid(spectrum, regime, quadrature_points)
    chi, kappa, n = regime.chi, regime.kappa, regime.width
    sigma2 = regime.first_layer_prior_variance

    scales = np.exp(nodes)  # (G,)
    eigenvalues, vectors, labels = (
        spectrum.eigenvalues,
        spectrum.eigenvectors,
        spectrum.projected_labels,
    )
    inverse = 1.0 / (scales[:, None] * eigenvalues[None, :] + kappa)  # (G, P): 1/(Qλ + κ)
    t_projected = labels[None, :] * inverse  # t(Q) in the eigenbasis, (G, P)

    x_np = x_train.numpy()
    cross_projected = vectors.T @ linear_kernel_hat(x_train, x_test, regime).numpy()  # (P, M)
    test_kernel = linear_kernel_hat(x_test, x_test, regime).numpy()

    test_means = (scales[:, None] * t_projected) @ cross_projected  # (G, M): Q k̂*ᵀ t(Q)
    test_mean = weights @ test_means
    centred = test_means - test_mean
    scale_mean = float(weights @ scales)
    conditional = scale_mean * test_kernel - cross_projected.T @ (
        (weights @ (scales[:, None] ** 2 * inverse))[:, None] * cross_projected
    )
    covariance = conditional / chi + (centred.T * weights) @ centred

    train_mean = vectors @ (eigenvalues * (weights @ (scales[:, None] * t_projected)))
    # ⟨VᵀV⟩/N: χ E[Q t tᵀ] − E[Q A⁻¹], both in the eigenbasis, then mapped by B = Xᵀ E.
    data_part = chi * (t_projected.T * (weights * scales)) @ t_projected
    fluctuation_part = np.diag(weights @ (scales[:, None] * inverse))
    features = x_np.T @ vectors  # (D, P)
    weight_covariance = sigma2 * np.eye(regime.input_dim) + sigma2**2 * (regime.g_w / n) * (
        features @ (data_part - fluctuation_part) @ features.T
    )
    weight_covariance = 0.5 * (weight_covariance + weight_covariance.T)
    hidden_kernel = regime.g_w * x_np @ weight_covariance @ x_np.T
    scale_std = float(np.sqrt(max(weights @ scales**2 - scale_mean**2, 0.0)))
    prediction = LinearPrediction(
        method="oracle",
        regime=regime,
        scale=scale_mean,
        train_mean=_to_torch(train_mean),
        test_mean=_to_torch(test_mean),
        test_covariance=_to_torch(0.5 * (covariance + covariance.T)),
        weight_covariance=_to_torch(weight_covariance),
        hidden_kernel=_to_torch(0.5 * (hidden_kernel + hidden_kernel.T)),
    )
    return LinearOracleResult(prediction, scale_mean, scale_std, mode, quadrature_points)
