"""Deep linear networks: the exact finite-width posterior (oracle) and a Gibbs sampler of the
network weights that checks it (docs/math/adaptive.md §4).

Network (L hidden layers of widths N_1..N_L, at scaling χ):

    h_1 = V x,  V_ij ~ N(0, g_v/D);   h_l = W_l h_{l−1},  (W_l)_ij ~ N(0, 1/N_{l−1}) (l ≥ 2);
    f(x) = w·h_L,  w_i ~ N(0, g_w/(χ N_L));   likelihood noise κ/χ.

Output prior: f = u·x with u = Vᵀ W_2ᵀ⋯W_Lᵀ w. Given the layers above, each back-propagated
readout w^(l−1) = W_lᵀ w^(l) is Gaussian with variance |w^(l)|²/N_{l−1}, so
|w^(l−1)|² = |w^(l)|² Q_{l−1} with Q_{l−1} = χ²_{N_{l−1}}/N_{l−1}; hence f is a GP with kernel
U K̂/χ, K̂ = (g_w g_v/D) X Xᵀ, U = Π_l Q_l, Q_l ~ Gamma(N_l/2, scale 2/N_l) independent. The
posterior of s = ln U is p(s | y) ∝ p_L(s) N(y; 0, (e^s K̂ + κ)/χ), where p_L is the density of a
sum of L independent ln-Gamma variables: an L-fold convolution, done exactly on a uniform grid
(positive terms only, no FFT round-off in the tails). Predictions are then 1-D integrals in s,
as in the one-layer oracle: E[f*] = E[U k̂*ᵀ t], Cov = E[(U k̂** − U² k̂*ᵀA⁻¹k̂*)/χ] + Cov_s[U k̂*ᵀt],
A = U K̂ + κ, t = A⁻¹y. At L = 1 this is linear_oracle.

The sampler is blocked Gibbs over layers: given the others, f is linear in each weight matrix
(f(x) = vec(W_l)·(a_l ⊗ b_l(x)), a_l the readout back-propagated to layer l, b_l(x) the input
propagated to layer l − 1), so each layer's conditional posterior is an exact Gaussian regression
posterior. Chains are batched; no step size, no tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln

from krenorm.adaptive.linear_theory import check_linear_data, linear_kernel_hat
from krenorm.adaptive.rescaling import KernelSpectrum
from krenorm.adaptive.scaling import ScalingRegime

#: Grid of s = ln U and of each ln Q_l: [−40, 40], spacing 0.005.
_LOG_SCALE_LIMIT = 40.0
_LOG_SCALE_STEP = 0.005


@dataclass(frozen=True)
class DeepLinearOracleResult:
    """Exact posterior of a deep linear network: test mean and covariance, E[U|y] and its std,
    the posterior mode of U and the widths used."""

    widths: tuple[int, ...]
    test_mean: torch.Tensor
    test_covariance: torch.Tensor
    scale_mean: float
    scale_std: float
    scale_mode: float

    def to_dict(self) -> dict:
        return {
            "widths": list(self.widths),
            "test_mean": self.test_mean.tolist(),
            "test_variance": self.test_covariance.diagonal().tolist(),
            "scale_mean": self.scale_mean,
            "scale_std": self.scale_std,
            "scale_mode": self.scale_mode,
        }


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(not isinstance(n, int) or n < 1 for n in widths):
        raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}.")
    return widths


def log_scale_prior(widths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(grid s, ln p_L(s)) for s = ln U = Σ_l ln Q_l, Q_l ~ Gamma(N_l/2, 2/N_l) (module
    docstring); ln p = −inf where the density underflows. The density of ln Q for Q ~ Gamma(k,
    θ = 1/k) is k^k e^{ks − k e^s}/Γ(k)."""
    widths = _check_widths(widths)
    grid = np.arange(-_LOG_SCALE_LIMIT, _LOG_SCALE_LIMIT + _LOG_SCALE_STEP / 2, _LOG_SCALE_STEP)

    def log_density(width: int) -> np.ndarray:
        k = 0.5 * width
        return k * math.log(k) - float(gammaln(k)) + k * grid - k * np.exp(grid)

    density = np.exp(log_density(widths[0]))
    for width in widths[1:]:
        # Full convolution lives on [−80, 80]: its middle is the [−40, 40] grid again. Mass
        # beyond ±40 needs U below e^-40 or above e^40, which the posterior check below refuses.
        full = np.convolve(density, np.exp(log_density(width))) * _LOG_SCALE_STEP
        start = (len(full) - len(grid)) // 2
        density = full[start : start + len(grid)]
    with np.errstate(divide="ignore"):
        return grid, np.log(density)


def deep_linear_oracle(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    regime: ScalingRegime,
    widths: Sequence[int],
) -> DeepLinearOracleResult:
    """Exact finite-width posterior predictions of the deep linear network (module docstring).
    `regime` supplies χ, D, g_w, g_v and κ (its width is not used: `widths` are N_1..N_L)."""
    widths = _check_widths(widths)
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    kernel = linear_kernel_hat(x_train, x_train, regime)
    spectrum = KernelSpectrum.from_kernel(kernel, y_train)
    grid, log_prior = log_scale_prior(widths)
    log_posterior = log_prior + spectrum.log_likelihood(np.exp(grid), regime.chi, regime.kappa)
    finite = np.isfinite(log_posterior)
    peak = float(log_posterior[finite].max())
    weights = np.where(finite, np.exp(log_posterior - peak), 0.0)
    # The ln-Gamma tails decay like e^{(N/2)s} on the left and doubly exponentially on the
    # right: an end weight w below 1e-12 of the peak leaves at most w/(½·0.005) < 1e-9 of the
    # mass off the grid.
    if weights[0] > 1e-12 or weights[-1] > 1e-12:
        raise ValueError(
            "the posterior of U is not contained in U ∈ [e^-40, e^40]; rescale the data."
        )
    weights /= weights.sum()  # trapezoid rule: the end weights are negligible (checked above)
    scales = np.exp(grid)
    eigenvalues, vectors, labels = (
        spectrum.eigenvalues, spectrum.eigenvectors, spectrum.projected_labels,
    )  # fmt: skip
    keep = weights > 0
    scales, weights = scales[keep], weights[keep]
    inverse = 1.0 / (scales[:, None] * eigenvalues[None, :] + regime.kappa)
    t_projected = labels[None, :] * inverse
    cross_projected = vectors.T @ linear_kernel_hat(x_train, x_test, regime).numpy()
    test_kernel = linear_kernel_hat(x_test, x_test, regime).numpy()
    means = (scales[:, None] * t_projected) @ cross_projected
    test_mean = weights @ means
    centred = means - test_mean
    scale_mean = float(weights @ scales)
    conditional = scale_mean * test_kernel - cross_projected.T @ (
        (weights @ (scales[:, None] ** 2 * inverse))[:, None] * cross_projected
    )
    covariance = conditional / regime.chi + (centred.T * weights) @ centred
    return DeepLinearOracleResult(
        widths=widths,
        test_mean=torch.as_tensor(test_mean),
        test_covariance=torch.as_tensor(0.5 * (covariance + covariance.T)),
        scale_mean=scale_mean,
        scale_std=float(np.sqrt(max(weights @ scales**2 - scale_mean**2, 0.0))),
        scale_mode=float(scales[int(np.argmax(weights))]),
    )


@dataclass(frozen=True)
class DeepLinearSamples:
    """Gibbs samples of the deep linear network's test outputs: per chain means of f(x*) and of
    f(x*)², with the across-chain standard errors of the pooled estimates."""

    test_mean: torch.Tensor
    test_mean_stderr: torch.Tensor
    test_second_moment: torch.Tensor
    test_second_moment_stderr: torch.Tensor
    n_chains: int
    n_sweeps: int

    @property
    def test_variance(self) -> torch.Tensor:
        return self.test_second_moment - self.test_mean**2


def _gaussian_regression_draw(
    features: torch.Tensor,
    targets: torch.Tensor,
    prior_variance: float,
    noise_variance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """One draw of θ from N(0, prior I) with y = Φθ + N(0, noise I), batched over chains:
    features (C, P, k), targets (P,) → θ (C, k). Precision Λ = I/prior + ΦᵀΦ/noise = R Rᵀ;
    θ = Λ⁻¹Φᵀy/noise + R⁻ᵀ z."""
    chains, _, k = features.shape
    precision = features.mT @ features / noise_variance
    precision.diagonal(dim1=-2, dim2=-1).add_(1.0 / prior_variance)
    factor = torch.linalg.cholesky(precision)
    rhs = (features.mT @ targets) / noise_variance
    mean = torch.cholesky_solve(rhs[..., None], factor)[..., 0]
    normal = torch.randn(chains, k, 1, generator=generator, dtype=features.dtype)
    noise = torch.linalg.solve_triangular(factor.mT, normal, upper=True)[..., 0]
    return mean + noise


def sample_deep_linear(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    regime: ScalingRegime,
    widths: Sequence[int],
    *,
    n_chains: int = 16,
    n_sweeps: int = 2000,
    burn_in: int = 500,
    seed: int = 0,
) -> DeepLinearSamples:
    """Blocked Gibbs sampling of the deep linear network's posterior (module docstring), all
    chains at once; returns the test-output moments with across-chain standard errors."""
    widths = _check_widths(widths)
    if n_chains < 2 or n_sweeps <= burn_in or burn_in < 0:
        raise ValueError("need n_chains >= 2 and 0 <= burn_in < n_sweeps.")
    x_train, y_train, x_test = check_linear_data(x_train, y_train, x_test, regime)
    generator = torch.Generator().manual_seed(seed)
    dims = (regime.input_dim, *widths)
    prior = [regime.first_layer_prior_variance] + [1.0 / dims[l] for l in range(1, len(widths))]
    readout_prior = regime.g_w / (regime.chi * widths[-1])
    noise = regime.kappa / regime.chi
    matrices = [
        math.sqrt(variance) * torch.randn(n_chains, dims[l + 1], dims[l], generator=generator,
                                          dtype=torch.float64)
        for l, variance in enumerate(prior)
    ]  # fmt: skip
    readout = math.sqrt(readout_prior) * torch.randn(n_chains, widths[-1], generator=generator,
                                                     dtype=torch.float64)  # fmt: skip
    x = x_train.to(torch.float64)
    first_moment = torch.zeros(n_chains, x_test.shape[0], dtype=torch.float64)
    second_moment = torch.zeros_like(first_moment)

    def propagate(inputs: torch.Tensor, upto: int) -> torch.Tensor:
        """(C, n, dims[upto]): inputs through matrices 0..upto−1."""
        hidden = inputs.expand(n_chains, *inputs.shape)
        for matrix in matrices[:upto]:
            hidden = hidden @ matrix.mT
        return hidden

    for sweep in range(n_sweeps):
        for layer in range(len(matrices)):
            below = propagate(x, layer)  # (C, P, dims[layer])
            above = readout[:, None, :]  # back-propagate the readout to layer + 1
            for matrix in reversed(matrices[layer + 1 :]):
                above = above @ matrix
            features = (above.mT[:, None, :, :] * below[:, :, None, :]).flatten(2)
            draw = _gaussian_regression_draw(features, y_train, prior[layer], noise, generator)
            matrices[layer] = draw.reshape(n_chains, dims[layer + 1], dims[layer])
        hidden = propagate(x, len(matrices))
        readout = _gaussian_regression_draw(hidden, y_train, readout_prior, noise, generator)
        if sweep >= burn_in:
            outputs = (propagate(x_test.to(torch.float64), len(matrices)) @ readout[..., None])
            outputs = outputs[..., 0]
            first_moment += outputs
            second_moment += outputs**2
    kept = n_sweeps - burn_in
    first_moment /= kept
    second_moment /= kept
    root = math.sqrt(n_chains)
    return DeepLinearSamples(
        test_mean=first_moment.mean(0),
        test_mean_stderr=first_moment.std(0) / root,
        test_second_moment=second_moment.mean(0),
        test_second_moment_stderr=second_moment.std(0) / root,
        n_chains=n_chains,
        n_sweeps=n_sweeps,
    )
