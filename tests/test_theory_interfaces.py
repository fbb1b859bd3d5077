"""The theory's interfaces (docs/math/theory.md §3–4): width = ∞, order-parameter structures,
one diagnostics type, the posterior implementations, solver settings, and the deprecated
spellings they replace."""

import json
import math

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels import fc_kernel
from krenorm.theory import (
    CholeskyPosterior,
    DiagonalStructure,
    MatrixStructure,
    MeanTermStructure,
    OrderParameterStructure,
    ScalarStructure,
    SolverDiagnostics,
    SolverSettings,
    SpectralPosterior,
    TheoryConfig,
    fit_theory,
    solve_saddle_point,
)
from krenorm.theory.mean_term import (
    MeanTermKernels,
    solve_mean_term_saddle,
    stationary_point_hessian,
)
from krenorm.theory.solvers import is_positive_definite


def _task(n_train=30, n_test=10, side=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, side, side, generator=gen, dtype=torch.float64)
    y = torch.erf(2 * x[:, 0, : side // 2].mean((1, 2))) + 0.1 * torch.randn(
        n_train + n_test, generator=gen, dtype=torch.float64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---------------------------------------------------------------------------------------------
# Infinite width is width = math.inf


@pytest.mark.parametrize("kind, activation", [("fc", "erf"), ("cnn", "erf"), ("lcn", "erf"),
                                              ("cnn-gap", "erf"), ("fc", "relu")])
def test_width_inf_equals_the_deprecated_infinite_width_flag(kind, activation):
    x, y, x_test, _ = _task()
    spec = ArchitectureSpec(kind, activation, mask=3, stride=3)
    new = fit_theory(x, y, spec, math.inf, 0.1, 0.9, 1.2)
    with pytest.warns(DeprecationWarning, match="width=math.inf"):
        old = fit_theory(x, y, spec, 1.0, 0.1, 0.9, 1.2, infinite_width=True)
    assert old.config.width == math.inf
    assert torch.equal(new.point, old.point)
    assert torch.equal(new.q_bar, new.structure.q_bar(new.structure.identity()))
    assert torch.equal(new.predict(x_test).mean, old.predict(x_test).mean)
    assert new.log_evidence == old.log_evidence
    summary = new.summary()
    assert summary.width == math.inf and summary.alpha == 0.0
    assert "infinite_width" not in summary.to_dict()
    assert json.loads(json.dumps(summary.to_dict()))["width"] == "inf"
    with pytest.warns(DeprecationWarning, match="isinf"):
        assert summary.infinite_width
    # The solve at N = ∞ stops at once: the data term vanishes and ∇S₀(1) = 0.
    assert new.diagnostics.converged and new.diagnostics.iterations == 0
    assert new.diagnostics.gradient_norm == 0.0


def test_relu_log_evidence_at_infinite_width_is_the_gp_marginal_likelihood():
    x, y, _, _ = _task()
    fit = fit_theory(x, y, ArchitectureSpec("fc", "relu"), math.inf, 0.1, lambda1=1.3)
    kernel = fc_kernel(x, None, "relu") / 1.3  # (Q̄, Q) = (1, 0): K_R = K/λ1
    a = kernel + 0.1 * torch.eye(30, dtype=torch.float64)
    evidence = -0.5 * (torch.logdet(a) + y @ torch.linalg.solve(a, y)) - 15 * math.log(2 * math.pi)
    assert fit.log_evidence == pytest.approx(float(evidence), rel=1e-12)


def test_log_evidence_tends_to_the_infinite_width_value():
    x, y, _, _ = _task()
    spec = ArchitectureSpec("cnn", "erf", mask=3, stride=3)
    infinite = fit_theory(x, y, spec, math.inf, 0.1).log_evidence
    wide = fit_theory(x, y, spec, 1e8, 0.1).log_evidence
    assert wide == pytest.approx(infinite, abs=1e-5)


def test_theory_config_width_and_settings():
    spec = ArchitectureSpec("fc")
    config = TheoryConfig(spec, math.inf, 0.1, solver="newton", tolerance=1e-8, n_starts=2)
    assert config.solver_settings == SolverSettings("newton", 1e-8, n_starts=2)
    assert json.loads(json.dumps(config.to_dict()))["width"] == "inf"
    base = SolverSettings(max_iterations=50)
    assert TheoryConfig(spec, 5.0, 0.1, solver_settings=base, seed=3).solver_settings == (
        SolverSettings(max_iterations=50, seed=3))
    for bad, match in (({"solver": "magic"}, "solver method"), ({"tolerance": -1.0}, "tolerance"),
                       ({"n_starts": 0}, "n_starts"), ({"hessian_check": 1}, "hessian_check")):
        with pytest.raises(ValueError, match=match):
            TheoryConfig(spec, 5.0, 0.1, **bad)
    for width in (0.0, -2.0, float("nan"), "inf", True):
        with pytest.raises(ValueError, match="width"):
            TheoryConfig(spec, width, 0.1)
    with pytest.raises(TypeError):
        fit_theory(torch.zeros(3, 2), torch.zeros(3), spec, 5.0, 0.1, 1.0, 1.0, False)
    with pytest.raises(ValueError, match="unknown solver options"):
        SolverSettings().updated(iterations=3)


# ---------------------------------------------------------------------------------------------
# Structures and the deprecated spellings they replace


def test_structures_and_the_old_constructor():
    with pytest.warns(DeprecationWarning, match="MatrixStructure"):
        assert OrderParameterStructure("matrix", 4) == MatrixStructure(4)
    with pytest.warns(DeprecationWarning):
        assert OrderParameterStructure("diagonal", 3) == DiagonalStructure(3)
    assert ScalarStructure().shape == (1,) and MatrixStructure(3).n_parameters == 6
    with pytest.raises(ValueError, match="size"):
        ScalarStructure(2)
    pair = MeanTermStructure()
    assert pair.stationary == "saddle" and pair.n_negative_directions == 1
    assert pair.prior_gap(pair.identity()) == 0.0
    assert torch.equal(pair.prior_gradient(pair.identity()), torch.zeros(2, dtype=torch.float64))
    # Parameterisations round trip.
    for structure, point in ((DiagonalStructure(2), torch.tensor([0.5, 2.0])),
                             (MatrixStructure(2), torch.tensor([[2.0, 0.3], [0.3, 1.0]])),
                             (pair, torch.tensor([0.7, -0.4]))):
        point = point.double()
        assert torch.allclose(structure.from_theta(structure.to_theta(point)), point, atol=1e-14)
    # A fixed Q̄ for the pair is the GP with kernel Q̄ K/λ1: 1/(1 + Q) = Q̄.
    assert torch.allclose(pair.point_from([0.8]), torch.tensor([0.8, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="admissible"):
        MatrixStructure(2).point_from([1.0, 2.0, 2.0, 1.0])


def test_mean_term_action_gradient_and_hessian_against_finite_differences():
    x, y, _, _ = _task(n_train=25)
    action = MeanTermKernels("relu", x, 1.0, 1.2).action(y, 6.0, 0.1)
    point = torch.tensor([0.8, 0.3], dtype=torch.float64)
    evaluation = action.evaluate(point)
    step = 1e-5
    for direction in (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]),
                      torch.tensor([0.6, -0.8])):
        direction = direction.double()
        plus, minus = action.evaluate(point + step * direction), action.evaluate(
            point - step * direction)
        assert float(evaluation.gradient @ direction) == pytest.approx(
            (plus.value - minus.value) / (2 * step), rel=1e-7, abs=1e-10)
        assert torch.allclose(evaluation.hessian_vector(direction),
                              (plus.gradient - minus.gradient) / (2 * step), rtol=1e-6,
                              atol=1e-8)
    batched = evaluation.hessian_vector(torch.eye(2, dtype=torch.float64))
    assert torch.allclose(batched[1], evaluation.hessian_vector(torch.tensor(
        [0.0, 1.0], dtype=torch.float64)), atol=1e-14)


def test_mean_term_deprecated_calls_agree_with_the_new_interface():
    x, y, _, _ = _task(n_train=25)
    action = MeanTermKernels("relu", x, 1.0, 1.2).action(y, 10.0, 0.1)
    point = torch.tensor([0.8, 0.3], dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="evaluate"):
        value, gradient = action.evaluate(0.8, 0.3)
    assert value == action(point)
    assert torch.equal(torch.as_tensor(gradient), action.evaluate(point).gradient)
    solution = solve_saddle_point(action)
    with pytest.warns(DeprecationWarning, match="solve_saddle_point"):
        q_bar, q, diagnostics = solve_mean_term_saddle(action, 1e-9)
    assert [q_bar, q] == pytest.approx(solution.point.tolist(), rel=1e-10)
    assert diagnostics["converged"] and diagnostics["is_saddle"]
    with pytest.warns(DeprecationWarning, match="attribute"):
        assert solution.diagnostics["converged"] is True
    with pytest.warns(DeprecationWarning, match="hessian"):
        hessian = stationary_point_hessian(action, q_bar, q)
    assert torch.allclose(torch.as_tensor(hessian),
                          torch.tensor(solution.diagnostics.hessian, dtype=torch.float64),
                          atol=1e-12)
    with pytest.warns(DeprecationWarning, match="is_admissible"):
        assert is_positive_definite(action.structure, solution.point)


def test_one_diagnostics_type_for_minima_and_saddles():
    x, y, _, _ = _task()
    relu = fit_theory(x, y, ArchitectureSpec("fc", "relu"), 10.0, 0.05)
    cnn = fit_theory(x, y, ArchitectureSpec("cnn", "erf", mask=3, stride=3), 10.0, 0.05)
    for fit in (relu, cnn):
        assert isinstance(fit.diagnostics, SolverDiagnostics)
        json.dumps(fit.summary().to_dict())
    saddle, minimum = relu.diagnostics, cnn.diagnostics
    assert saddle.is_saddle and len(saddle.hessian_eigenvalues) == 2
    assert saddle.hessian_eigenvalues[0] < 0 < saddle.hessian_eigenvalues[1]
    assert saddle.final_damping is not None
    assert minimum.is_saddle is None and minimum.min_hessian_eigenvalue > 0
    assert "is_saddle" not in minimum.to_dict() and "is_saddle" in saddle.to_dict()
    # A minimising method does not apply to a saddle.
    with pytest.raises(ValueError, match="saddle"):
        fit_theory(x, y, ArchitectureSpec("fc", "relu"), 10.0, 0.05, solver="lbfgs")
    newton = fit_theory(x, y, ArchitectureSpec("fc", "relu"), 10.0, 0.05, solver="newton")
    assert torch.allclose(newton.point, relu.point, atol=1e-8)


def test_fixed_q_bar_for_relu_is_the_retuned_infinite_width_network():
    x, y, x_test, _ = _task()
    spec = ArchitectureSpec("fc", "relu")
    fixed = fit_theory(x, y, spec, 10.0, 0.05, lambda1=1.2, fixed_q_bar=(0.8,))
    retuned = fit_theory(x, y, spec, math.inf, 0.05, lambda1=1.2 / 0.8)
    assert fixed.diagnostics is None
    assert torch.allclose(fixed.predict(x_test).mean, retuned.predict(x_test).mean, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Posteriors


def test_cholesky_and_spectral_posteriors_agree():
    x, y, x_test, _ = _task()
    fit = fit_theory(x, y, ArchitectureSpec("fc", "erf"), 12.0, 0.05, lambda1=1.1)
    spectral = fit.posterior
    assert isinstance(spectral, SpectralPosterior)
    kernels, point = fit.kernels, fit.point
    dense = CholeskyPosterior(kernels.train_kernel(point), fit.y_train, 0.05,
                              lambda batch: kernels.test_kernels(point, batch), 7)
    for name in ("mean", "variance"):
        assert torch.allclose(getattr(spectral.predict(x_test), name),
                              getattr(dense.predict(x_test), name), atol=1e-12)
    assert torch.allclose(spectral.train_residual, dense.train_residual, atol=1e-12)
    assert torch.allclose(spectral.a_inverse_diagonal, dense.a_inverse_diagonal, atol=1e-12)
    a = kernels.train_kernel(point) + 0.05 * torch.eye(30, dtype=torch.float64)
    data_fit = float(torch.logdet(a) + y @ torch.linalg.solve(a, y))
    assert spectral.data_fit == pytest.approx(data_fit, rel=1e-12)
    assert dense.data_fit == pytest.approx(data_fit, rel=1e-12)
