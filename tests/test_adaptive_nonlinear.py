"""Tree-level adaptive solver for nonlinear φ (docs/math/adaptive.md §2): checked against the
linear closed form and against a deterministic 2-D quadrature of the single-neuron law (erf)."""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.adaptive.nonlinear import AdaptiveSolverSettings, solve_adaptive_saddle_point
from krenorm.adaptive.scaling import ScalingRegime, nngp_kernel_hat
from krenorm.adaptive.tasks import hermite_polynomial, hermite_task, make_task, teacher_directions
from krenorm.adaptive.tree_level import tree_level_linear


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("resample_ess_fraction", [0.5, 0.99])
def test_identity_activation_reproduces_linear_closed_form(resample_ess_fraction):
    # Mean-field χ = N: the strongest tilt. With 4096 particles the scatter over seeds was
    # 3–8e-4 in the test mean and 2–3.5 % in ⟨VᵀV⟩/N (≈ √(D/S)); tolerances are ~4× that.
    # resample_ess_fraction = 0.99 forces MALA resample–move rounds at every χ.
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(20, 6, generator=generator, dtype=torch.float64)
    x_test = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(6, generator=generator, dtype=torch.float64) / math.sqrt(6)
    regime = ScalingRegime(chi=30.0, width=30, input_dim=6, kappa=0.1)
    exact = tree_level_linear(x, y, x_test, regime)
    settings = AdaptiveSolverSettings(
        n_particles=4096, seed=1, resample_ess_fraction=resample_ess_fraction
    )
    solution = solve_adaptive_saddle_point(x, y, x_test, regime, "identity", settings)
    assert solution.converged
    assert _relative(solution.test_mean, exact.prediction.test_mean) < 3e-3
    assert _relative(solution.weight_covariance, exact.prediction.weight_covariance) < 0.12
    top = torch.linalg.eigh(solution.weight_covariance).eigenvectors[:, -1]
    assert abs(float(top @ exact.spike.direction)) > 0.999
    moves = [step for step in solution.steps if step.moves]
    assert moves, "no resample–move round happened"
    assert all(0.2 < step.acceptance < 0.95 for step in moves)
    assert solution.final_ess > 0.3 * settings.n_particles
    assert solution.steps[-1].chi == 30.0


def _grid_saddle_point(x, x_test, y, regime, fluctuations):
    """Reference for D = 2: the single-neuron law on a 401² grid (±12 prior sd; the mass beyond
    90 % of the box is < 1e-20), the fixed point on Ĉ by plain damped iteration."""
    half_width = 12 * math.sqrt(regime.first_layer_prior_variance)
    grid = torch.linspace(-half_width, half_width, 401, dtype=torch.float64)
    nodes = torch.cartesian_prod(grid, grid)
    log_prior = -0.5 * (nodes**2).sum(1) / regime.first_layer_prior_variance
    features, test_features = torch.erf(nodes @ x.T), torch.erf(nodes @ x_test.T)
    strength = regime.g_w * regime.chi / regime.width
    fluctuation = regime.g_w / regime.width if fluctuations else 0.0
    system = regime.kappa * torch.eye(len(y), dtype=torch.float64)
    kernel = nngp_kernel_hat(x, None, "erf")
    for _ in range(3000):
        inverse = torch.linalg.inv(kernel + system)
        log_tilt = 0.5 * strength * (features @ (inverse @ y)) ** 2
        log_tilt = log_tilt - 0.5 * fluctuation * ((features @ inverse) * features).sum(1)
        weights = torch.softmax(log_prior + log_tilt, 0)
        update = regime.g_w * (features.T * weights) @ features
        if (update - kernel).norm() < 1e-12:
            break
        kernel = kernel + 0.3 * (update - kernel)
    solved = torch.linalg.solve(kernel + system, y)
    test_mean = (regime.g_w * (features.T * weights) @ test_features).T @ solved
    return kernel, kernel @ solved, test_mean


@pytest.mark.parametrize(("fluctuations", "width"), [(False, 20), (True, 4)])
def test_erf_solver_matches_grid_quadrature_of_single_neuron_law(fluctuations, width):
    # χ = N. The solver's Monte-Carlo scatter over seeds was ≤ 6e-4 (train), ≤ 3e-3 (test),
    # ≤ 7e-3 (kernel) with 8192 particles; tolerances are 2–3× the worst seed.
    generator = torch.Generator().manual_seed(5)
    x = 1.5 * torch.randn(6, 2, generator=generator, dtype=torch.float64)
    x_test = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    y = torch.sign(x[:, 0])
    regime = ScalingRegime(chi=float(width), width=width, input_dim=2, kappa=0.05)
    kernel, train_mean, test_mean = _grid_saddle_point(x, x_test, y, regime, fluctuations)
    # Teeth: the law is strongly adapted, and at N = 4 the fluctuation term moves Ĉ by ~6 %.
    assert _relative(kernel, nngp_kernel_hat(x, None, "erf")) > 0.2
    if fluctuations:
        without = _grid_saddle_point(x, x_test, y, regime, False)[0]
        assert _relative(kernel, without) > 0.04

    solution = solve_adaptive_saddle_point(
        x, y, x_test, regime, "erf", AdaptiveSolverSettings(n_particles=8192, seed=0),
        fluctuations=fluctuations,
    )  # fmt: skip
    assert solution.converged
    assert _relative(solution.train_mean, train_mean) < 2e-3
    assert _relative(solution.test_mean, test_mean) < 8e-3
    assert _relative(solution.hidden_kernel, kernel) < 2e-2


def test_settings_and_inputs_are_validated():
    with pytest.raises(ValueError, match="damping"):
        AdaptiveSolverSettings(damping=0.0)
    with pytest.raises(ValueError, match="n_particles"):
        AdaptiveSolverSettings(n_particles=0)
    regime = ScalingRegime(chi=1.0, width=4, input_dim=3)
    x = torch.zeros(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="D = 3"):
        solve_adaptive_saddle_point(x, torch.zeros(5), x, regime)


def test_tasks_have_the_documented_targets():
    data = hermite_task(50, 20, 30, seed=0)
    z = data.x_train[:, 0]
    assert torch.allclose(data.y_train, z - 0.1 * (z**3 - 3 * z))
    assert torch.equal(teacher_directions(data)[0], torch.eye(30, dtype=torch.float64)[0])
    assert torch.allclose(hermite_polynomial(4, z), z**4 - 6 * z**2 + 3)
    ising = make_task("ising", 40, 10, 12, seed=1)
    direction = teacher_directions(ising)[0]
    assert set(ising.x_train.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ising.y_train, torch.where(ising.x_train @ direction >= 0, 1.0, -1.0))
    xor = make_task("xor", 30, 10, 5, seed=2)
    assert torch.equal(
        xor.y_train, torch.where(xor.x_train[:, 0] * xor.x_train[:, 1] >= 0, 1.0, -1.0)
    )
    teacher = make_task("teacher", 30, 10, 8, seed=3)
    assert torch.allclose(teacher.y_train, teacher.x_train @ teacher.teacher["w"] / math.sqrt(8))
    with pytest.raises(ValueError, match="unknown task"):
        make_task("parity", 10, 10, 3)
