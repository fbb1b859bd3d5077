"""Linear-network theory of the adaptive lens (docs/math/adaptive.md): closed-form limits, the exact
Gamma-mixture oracle, rescaling = adaptation for the mean, the χ = 1 reduction to
docs/math/theory.md §3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from krenorm.adaptive.correction import standard_corrected_linear
from krenorm.adaptive.linear_oracle import linear_oracle
from krenorm.adaptive.linear_theory import linear_kernel_hat, predict_at_scale
from krenorm.adaptive.rescaling import solve_rescaling
from krenorm.adaptive.scaling import ScalingRegime, chi_for_regime
from krenorm.adaptive.tree_level import adapted_kernel, tree_level_linear
from krenorm.kernels.grams import fc_kernel


def _teacher_data(p: int, d: int, m: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(p, d, generator=generator, dtype=torch.float64)
    x_test = torch.randn(m, d, generator=generator, dtype=torch.float64)
    teacher = torch.randn(d, generator=generator, dtype=torch.float64)
    return x, x @ teacher / math.sqrt(d), x_test, x_test @ teacher / math.sqrt(d)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_regime_conversions_match_theory_parameterisation():
    regime = ScalingRegime(chi=4.0, width=16, input_dim=8, g_w=2.0, g_v=0.5, kappa=0.3)
    assert regime.readout_prior_variance == pytest.approx(2.0 / 64)
    assert regime.temperature == pytest.approx(0.075)
    assert regime.theory_lambda1 == pytest.approx(2.0)
    assert regime.theory_lambda0 == pytest.approx(2.0)
    assert chi_for_regime("intermediate", 16) == 4.0
    assert chi_for_regime("mean-field", 16) == 16.0
    with pytest.raises(ValueError, match="chi must lie"):
        ScalingRegime(chi=20.0, width=16, input_dim=8)
    with pytest.raises(ValueError, match="unknown regime"):
        chi_for_regime("lazy", 16)


def test_one_layer_kappa_to_zero_closed_form():
    # P < D so K̂ is invertible and r0 = yᵀK̂⁻¹y/P is finite.
    x, y, _, _ = _teacher_data(12, 30, 1, seed=1)
    regime = ScalingRegime(chi=1.0, width=20, input_dim=30)
    kernel = linear_kernel_hat(x, x, regime)
    alpha = 12 / 20
    r0 = float(y @ torch.linalg.solve(kernel, y)) / 12
    expected = ((1 - alpha) + math.sqrt((1 - alpha) ** 2 + 4 * alpha * r0)) / 2
    solution = solve_rescaling(kernel, y, kappa=1e-10, chi=1.0, widths=20)
    assert solution.total_scale == pytest.approx(expected, rel=1e-7)
    assert solution.layer_scales[0] ** 2 - (1 - alpha) * solution.layer_scales[0] - alpha * r0 == (
        pytest.approx(0.0, abs=1e-7)
    )


@pytest.mark.parametrize("layers", [2, 3])
def test_deep_kappa_to_zero_closed_form(layers):
    x, y, _, _ = _teacher_data(10, 25, 1, seed=2)
    regime = ScalingRegime(chi=1.0, width=40, input_dim=25)
    kernel = linear_kernel_hat(x, x, regime)
    alpha = 10 / 40
    r0 = float(y @ torch.linalg.solve(kernel, y)) / 10
    solution = solve_rescaling(kernel, y, kappa=1e-10, chi=1.0, widths=(40,) * layers)
    q = solution.layer_scales[0]
    assert all(s == pytest.approx(q, rel=1e-12) for s in solution.layer_scales)
    assert solution.total_scale == pytest.approx(q**layers, rel=1e-10)
    polynomial = np.polynomial.Polynomial(
        [-alpha * r0] + [0.0] * (layers - 1) + [-(1 - alpha), 1.0]
    )
    positive_roots = [r.real for r in polynomial.roots() if abs(r.imag) < 1e-9 and r.real > 0]
    assert len(positive_roots) == 1  # Descartes: one sign change → one positive root
    assert q == pytest.approx(positive_roots[0], rel=1e-7)


def test_unequal_layers_share_one_growth():
    x, y, _, _ = _teacher_data(15, 10, 1, seed=3)
    regime = ScalingRegime(chi=1.0, width=30, input_dim=10, kappa=0.2)
    kernel = linear_kernel_hat(x, x, regime)
    solution = solve_rescaling(kernel, y, kappa=0.2, chi=1.0, widths=(30, 60))
    growths = [n * (q - 1) for n, q in zip(solution.widths, solution.layer_scales, strict=True)]
    assert growths[0] == pytest.approx(growths[1], rel=1e-10)
    assert math.prod(solution.layer_scales) == pytest.approx(solution.total_scale, rel=1e-12)
    assert solution.residual < 1e-12


@pytest.mark.parametrize("chi_name", ["standard", "intermediate", "mean-field"])
def test_adapted_and_rescaled_kernels_give_the_same_mean(chi_name):
    x, y, x_test, _ = _teacher_data(30, 12, 20, seed=4)
    width = 25
    regime = ScalingRegime(chi_for_regime(chi_name, width), width, 12, kappa=0.05)
    result = tree_level_linear(x, y, x_test, regime)
    q = result.solution.total_scale
    kernel = linear_kernel_hat(x, x, regime)
    # GP regression with the adapted kernel on train ∪ test, written out independently:
    # Ĉ = K̂ + (χ/(NQ)) f̄ f̄ᵀ with f̄ the rescaled predictor on both sets.
    both = torch.cat([x, x_test])
    rescaled = (
        q
        * linear_kernel_hat(both, x, regime)
        @ torch.linalg.solve(q * kernel + regime.kappa * torch.eye(30, dtype=torch.float64), y)
    )
    adapted_full = adapted_kernel(linear_kernel_hat(both, both, regime), rescaled, q, regime)
    adapted_train, adapted_cross = adapted_full[:30, :30], adapted_full[30:, :30]
    adapted_mean = adapted_cross @ torch.linalg.solve(
        adapted_train + regime.kappa * torch.eye(30, dtype=torch.float64), y
    )
    assert _relative(adapted_mean, rescaled[30:]) < 1e-10
    assert _relative(result.prediction.test_mean, rescaled[30:]) < 1e-10
    # The hidden kernel g_w X⟨VᵀV⟩/N Xᵀ of the tree level is the adapted kernel itself.
    assert _relative(result.prediction.hidden_kernel, adapted_train) < 1e-10


def test_correction_at_chi_one_minimises_theory_action():
    # docs/math/theory.md §3, FC with linear σ: K = C = x·x/(λ0 N0), K_R = Q̄ K/λ1, T = κ;
    # S(Q̄) = Q̄ − ln Q̄ + (1/N)[ln det(T + K_R) + yᵀ(T + K_R)⁻¹y], minimised here numerically.
    x, y, x_test, _ = _teacher_data(40, 15, 5, seed=5)
    width, g_w, g_v, kappa = 30, 1.5, 0.8, 0.3
    regime = ScalingRegime(chi=1.0, width=width, input_dim=15, g_w=g_w, g_v=g_v, kappa=kappa)
    lambda0, lambda1 = regime.theory_lambda0, regime.theory_lambda1
    gram = fc_kernel(x, None, "identity", lambda0=lambda0, dtype=torch.float64).numpy()
    labels = y.numpy()

    def action(q_bar: float) -> float:
        a = kappa * np.eye(40) + q_bar * gram / lambda1
        _, logdet = np.linalg.slogdet(a)
        return q_bar - math.log(q_bar) + (logdet + labels @ np.linalg.solve(a, labels)) / width

    minimum = minimize_scalar(
        action, bounds=(1e-3, 50.0), method="bounded", options={"xatol": 1e-12}
    )
    corrected = standard_corrected_linear(x, y, x_test, regime)
    assert corrected.solution.total_scale == pytest.approx(minimum.x, rel=1e-7)


def test_correction_error_against_oracle_shrinks_with_width():
    x, y, x_test, _ = _teacher_data(40, 20, 25, seed=6)
    errors = []
    for width in (80, 320, 1280):
        regime = ScalingRegime(chi=1.0, width=width, input_dim=20, kappa=0.1)
        oracle = linear_oracle(x, y, x_test, regime).prediction
        corrected = standard_corrected_linear(x, y, x_test, regime).prediction
        errors.append(_relative(corrected.test_mean, oracle.test_mean))
    # The saddle point is O(1/N) (docs/math/theory.md §5): each 4-fold width increase must cut the
    # error by more than 2.5 (measured 3.2 and 3.8; an O(1/√N) error would give 2).
    assert errors[1] < errors[0] / 2.5
    assert errors[2] < errors[1] / 2.5


def test_tree_level_error_falls_as_chi_grows_to_width():
    x, y, x_test, _ = _teacher_data(40, 20, 25, seed=7)
    width = 60
    errors = []
    for chi in (1.0, math.sqrt(width), float(width)):
        regime = ScalingRegime(chi=chi, width=width, input_dim=20, kappa=0.1)
        oracle = linear_oracle(x, y, x_test, regime).prediction
        tree = tree_level_linear(x, y, x_test, regime).prediction
        errors.append(_relative(tree.test_mean, oracle.test_mean))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 10


def test_oracle_against_monte_carlo_over_the_scale():
    # Draw Q ~ Gamma(N/2, 2/N) directly and weight by the GP evidence: a self-normalised
    # importance sampler of the same 1-D posterior. 200 000 draws at N = 10 put the MC standard
    # error of E[Q|y] near 3e-3 of its value; the tolerance 2 % is ~6 standard errors.
    x, y, x_test, _ = _teacher_data(8, 5, 3, seed=8)
    regime = ScalingRegime(chi=2.0, width=10, input_dim=5, kappa=0.2)
    oracle = linear_oracle(x, y, x_test, regime)
    generator = np.random.default_rng(0)
    draws = generator.gamma(shape=5.0, scale=0.2, size=200_000)
    kernel = linear_kernel_hat(x, x, regime).numpy()
    values, vectors = np.linalg.eigh(kernel)
    projected = vectors.T @ y.numpy()
    denominator = draws[:, None] * values + regime.kappa
    log_weight = -0.5 * np.log(denominator).sum(1) - 0.5 * regime.chi * (
        projected**2 / denominator
    ).sum(1)
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    assert oracle.scale_mean == pytest.approx(float(weight @ draws), rel=0.02)
    cross = vectors.T @ linear_kernel_hat(x, x_test, regime).numpy()
    means = (draws[:, None] * projected / denominator) @ cross
    assert np.allclose(oracle.prediction.test_mean.numpy(), weight @ means, rtol=0.02, atol=1e-3)


def test_oracle_matches_saddle_in_the_wide_limit_and_spike_points_at_teacher():
    # At N = 20 000 the Gamma prior has relative width 1 %: oracle and corrected theory agree to
    # O(1/N), including ⟨VᵀV⟩/N; at χ = N the spike of ⟨VᵀV⟩/N lies along the teacher.
    d = 10
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(200, d, generator=generator, dtype=torch.float64)
    teacher = torch.zeros(d, dtype=torch.float64)
    teacher[0] = 1.0
    y = x @ teacher
    regime = ScalingRegime(chi=20_000.0, width=20_000, input_dim=d, kappa=0.05)
    oracle = linear_oracle(x, y, x[:5], regime).prediction
    corrected = standard_corrected_linear(x, y, x[:5], regime).prediction
    assert _relative(corrected.weight_covariance, oracle.weight_covariance) < 1e-3
    tree = tree_level_linear(x, y, x[:5], regime)
    assert tree.spike.overlap(teacher) > 0.99
    top = torch.linalg.eigh(oracle.weight_covariance).eigenvectors[:, -1]
    assert abs(float(top @ teacher)) > 0.99


def test_nngp_prediction_has_no_feature_learning():
    x, y, x_test, _ = _teacher_data(20, 6, 4, seed=10)
    regime = ScalingRegime(chi=1.0, width=10, input_dim=6, kappa=0.1)
    nngp = predict_at_scale("nngp", x, y, x_test, regime, 1.0)
    eye = torch.eye(6, dtype=torch.float64) * regime.first_layer_prior_variance
    assert torch.allclose(nngp.weight_covariance, eye)
    with pytest.raises(ValueError, match="method must be"):
        predict_at_scale("oracle", x, y, x_test, regime, 1.0)


def test_invalid_inputs_are_refused():
    x, y, x_test, _ = _teacher_data(5, 4, 2, seed=11)
    regime = ScalingRegime(chi=1.0, width=10, input_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        linear_oracle(x, y, x_test, regime)
    with pytest.raises(ValueError, match="widths"):
        solve_rescaling(torch.eye(5), y, 0.1, 1.0, widths=(0,))
    with pytest.raises(ValueError, match="kappa"):
        solve_rescaling(torch.eye(5), y, -1.0, 1.0, widths=10)
