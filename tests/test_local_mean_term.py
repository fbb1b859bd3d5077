"""CNN, LCN and CNN-GAP with a non-odd activation: the (Q̄, Q) actions of docs/math/theory.md
§3.6 against exact limits (one patch = FC, odd σ = the odd actions, α → 0 = NNGP) and finite
differences."""

import math

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.grams import local_diagonal_blocks
from krenorm.kernels.local_means import local_means
from krenorm.theory.fit import fit_theory
from krenorm.theory.local_mean_term import (
    ConvolutionalMeanTermKernels,
    LocallyConnectedMeanTermKernels,
    LocalMeanTermStructure,
    PooledMeanTermKernels,
)
from krenorm.theory.mean_term import MeanTermKernels
from krenorm.theory.renormalized_kernels import renormalized_kernels
from krenorm.theory.solvers import solve_saddle_point


def _task(n_train=30, n_test=12, side=6, channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, channels, side, side, generator=gen, dtype=torch.float64)
    y = torch.erf(2 * x[:, 0, : side // 2].mean((1, 2))) + 0.1 * torch.randn(
        n_train + n_test, generator=gen, dtype=torch.float64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _point(structure: LocalMeanTermStructure, seed: int) -> torch.Tensor:
    """An admissible point away from the identity."""
    gen = torch.Generator().manual_seed(seed)
    return structure.join(structure.half.random_start(gen),
                          0.5 * (structure.half.random_start(gen) - structure.half.identity()))


def test_local_means_are_the_closed_form_relu_mean_of_each_patch():
    x, _, _, _ = _task(n_train=5)
    means = local_means(x, 3, 3, activation="relu", lambda0=1.5)
    patch = x[:, :, 3:6, 0:3].reshape(5, -1)  # position (1, 0) of the 2×2 grid
    variance = (patch**2).sum(1) / (1.5 * 9)
    assert torch.allclose(means[2], torch.sqrt(variance / (2 * math.pi)), atol=1e-14)
    assert torch.equal(local_means(x, 3, 3, activation="erf"), torch.zeros(4, 5,
                                                                            dtype=torch.float64))
    # Gauss–Hermite for an activation without a closed mean: softplus has E σ > 0.
    assert (local_means(x, 3, 3, activation="softplus") > 0).all()


@pytest.mark.parametrize("kind", ["cnn", "lcn", "cnn-gap"])
def test_one_patch_equals_fc_with_relu(kind):
    x, y, x_test, y_test = _task(n_train=25, side=4)
    spec = ArchitectureSpec(kind, "relu", mask=4, stride=4)
    local = fit_theory(x, y, spec, 5.0, 0.05, lambda1=1.3, lambda0=0.8)
    fc = fit_theory(x, y, ArchitectureSpec("fc", "relu"), 5.0, 0.05, lambda1=1.3, lambda0=0.8)
    assert local.diagnostics.converged and fc.diagnostics.converged
    assert local.point.reshape(-1) == pytest.approx(fc.point.tolist(), abs=1e-9)
    assert local.diagnostics.action == pytest.approx(fc.diagnostics.action, abs=1e-9)
    assert local.test_loss(x_test, y_test).loss == pytest.approx(
        fc.test_loss(x_test, y_test).loss, abs=1e-9)
    assert local.log_evidence == pytest.approx(fc.log_evidence, abs=1e-8)


@pytest.mark.parametrize("kind", ["cnn", "lcn", "cnn-gap"])
def test_odd_activation_recovers_the_odd_action(kind):
    # With μ ≡ 0 the Q equation gives Q = Q̄⁻¹ − 1, and S(Q̄, Q̄⁻¹ − 1) = S_odd(Q̄) − Np.
    x, y, x_test, _ = _task(n_train=25)
    spec = ArchitectureSpec(kind, "erf", mask=3, stride=3)
    odd = fit_theory(x, y, spec, 6.0, 0.05)
    model = {"cnn": ConvolutionalMeanTermKernels, "lcn": LocallyConnectedMeanTermKernels,
             "cnn-gap": PooledMeanTermKernels}[kind]
    kernels = model(spec, x, 1.0, 1.0)
    action = kernels.action(y, 6.0, 0.05)
    structure = action.structure
    q_bar = odd.point
    pair = structure.point_from(q_bar.reshape(-1))
    n_patches = 1 if kind == "cnn-gap" else 4
    assert action(pair) == pytest.approx(odd.action(q_bar) - n_patches, abs=1e-10)
    solved = solve_saddle_point(action)
    assert solved.diagnostics.converged
    assert torch.allclose(structure.q_bar(solved.point).reshape(q_bar.shape), q_bar, atol=1e-9)
    prediction = kernels.posterior(solved.point, y, 0.05).predict(x_test)
    assert torch.allclose(prediction.mean, odd.predict(x_test).mean, atol=1e-9)


@pytest.mark.parametrize("kind", ["cnn", "lcn", "cnn-gap"])
def test_infinite_width_is_the_nngp(kind):
    x, y, x_test, y_test = _task(n_train=25)
    spec = ArchitectureSpec(kind, "relu", mask=3, stride=3)
    infinite = fit_theory(x, y, spec, math.inf, 0.05, lambda1=1.3)
    wide = fit_theory(x, y, spec, 1e9, 0.05, lambda1=1.3)
    assert torch.allclose(infinite.point, infinite.structure.identity(), atol=0)
    assert torch.allclose(wide.point, infinite.point, atol=1e-6)
    # K_R(1, 0) = (1/(λ1 Np)) Σ_i K_ii (no pooling) — the NNGP of the pool-free networks.
    if kind != "cnn-gap":
        blocks = local_diagonal_blocks(x, 3, 3, activation="relu")
        nngp = blocks.sum(0) / (1.3 * 4)
        assert torch.allclose(infinite.kernels.train_kernel(infinite.point), nngp, atol=1e-12)
    assert wide.test_loss(x_test, y_test).loss == pytest.approx(
        infinite.test_loss(x_test, y_test).loss, rel=1e-6)


@pytest.mark.parametrize("kind", ["cnn", "lcn"])
def test_gradient_and_hessian_vector_products_against_central_differences(kind):
    x, y, _, _ = _task(n_train=20)
    spec = ArchitectureSpec(kind, "relu", mask=3, stride=3)
    action = renormalized_kernels(spec, x, 1.0, 1.2).action(y, 4.0, 0.1)
    structure = action.structure
    point = structure.symmetrize(_point(structure, 1))
    evaluation = action.evaluate(point)
    step = 1e-5
    for seed in range(3):
        direction = structure.symmetrize(
            torch.randn(structure.shape, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64))
        plus = action.evaluate(point + step * direction)
        minus = action.evaluate(point - step * direction)
        assert float((evaluation.gradient * direction).sum()) == pytest.approx(
            (plus.value - minus.value) / (2 * step), rel=1e-7, abs=1e-10)
        assert torch.allclose(evaluation.hessian_vector(direction),
                              (plus.gradient - minus.gradient) / (2 * step), rtol=1e-6,
                              atol=1e-8)
    # Batched directions give the single products.
    basis = torch.stack(structure.tangent_basis()[:3])
    batched = evaluation.hessian_vector(basis)
    assert torch.allclose(batched[2], evaluation.hessian_vector(basis[2]), atol=1e-13)


@pytest.mark.parametrize("kind", ["cnn", "lcn"])
def test_relu_fit_is_a_saddle_with_predictions_and_priors(kind):
    x, y, x_test, y_test = _task(n_train=30)
    spec = ArchitectureSpec(kind, "relu", mask=3, stride=3)
    fit = fit_theory(x, y, spec, 10.0, 0.05)
    diagnostics = fit.diagnostics
    assert diagnostics.converged and diagnostics.is_saddle
    # Signature: one negative direction per free entry of Q̄.
    n_negative = sum(value < 0 for value in diagnostics.hessian_eigenvalues)
    assert n_negative == fit.structure.n_parameters // 2
    loss = fit.test_loss(x_test, y_test)
    assert math.isfinite(loss.loss) and loss.variance > 0
    assert fit.effective_priors.shape == (4,)
    summary = fit.summary().to_dict()
    assert len(summary["q_bar"]) == 4
    # The posterior mean on the training set is K_R A⁻¹ y (the GP identity).
    kernel = fit.kernels.train_kernel(fit.point)
    a = kernel + 0.05 * torch.eye(30, dtype=torch.float64)
    assert torch.allclose(fit.predict(x).mean, kernel @ torch.linalg.solve(a, y), atol=1e-9)


def test_fixed_q_bar_for_relu_cnn_is_the_retuned_network():
    x, y, _, _ = _task(n_train=20)
    spec = ArchitectureSpec("lcn", "relu", mask=3, stride=3)
    q_bar = [0.7, 1.1, 0.9, 1.3]
    fixed = fit_theory(x, y, spec, 10.0, 0.05, fixed_q_bar=q_bar)
    blocks = local_diagonal_blocks(x, 3, 3, activation="relu")
    expected = (torch.tensor(q_bar, dtype=torch.float64)[:, None, None] * blocks).sum(0) / 4
    assert torch.allclose(fixed.kernels.train_kernel(fixed.point), expected, atol=1e-12)
    with pytest.raises(ValueError, match="fixed order parameter"):
        fit_theory(x, y, spec, 10.0, 0.05, fixed_q_bar=[1.0, -1.0, 1.0, 1.0])


def test_structure_parameterisation_round_trips_and_chain_rule():
    x, y, _, _ = _task(n_train=15)
    spec = ArchitectureSpec("cnn", "relu", mask=3, stride=3)
    action = renormalized_kernels(spec, x, 1.0, 1.0).action(y, 5.0, 0.1)
    structure = action.structure
    point = _point(structure, 3)
    theta = structure.to_theta(point)
    assert torch.allclose(structure.from_theta(theta), point, atol=1e-12)
    evaluation = action.evaluate(point)
    direction = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    step = 1e-5
    plus = structure.gradient_to_theta(theta + step * direction, action.evaluate(
        structure.from_theta(theta + step * direction)).gradient)
    minus = structure.gradient_to_theta(theta - step * direction, action.evaluate(
        structure.from_theta(theta - step * direction)).gradient)
    analytic = structure.hessian_vector_to_theta(theta, evaluation.gradient,
                                                 evaluation.hessian_vector, direction)
    assert torch.allclose(analytic, (plus - minus) / (2 * step), rtol=1e-5, atol=1e-7)


def test_fc_mean_term_model_is_unchanged():
    # The FC (Q̄, Q) model stays the reference of the one-patch identity.
    x, _, _, _ = _task(n_train=10)
    assert isinstance(renormalized_kernels(ArchitectureSpec("fc", "relu"), x, 1.0, 1.0),
                      MeanTermKernels)


def test_a_stored_relu_cnn_point_carries_the_signature_not_the_hessian():
    # The dense (Q̄, Q) Hessian (here 2·136 = 272 free entries: 16 patches) stays on the
    # in-memory diagnostics; a stored point's JSON carries the signature counts and the extreme
    # eigenvalues only and stays small (with the matrix it was ~1.5 MB per point).
    import json

    from krenorm.experiments.runner import run_experiment
    from krenorm.experiments.spec import DataSpec, ExperimentSpec, TheorySettings

    data = DataSpec("local-teacher", 30, 10, 0, (("image_shape", (1, 8, 8)), ("mask", 2),
                                                 ("stride", 2)))
    spec = ExperimentSpec(data, ArchitectureSpec("cnn", "relu", mask=2, stride=2), 10.0, 0.1,
                          theory=TheorySettings(infinite=False))
    outcome = run_experiment(spec)
    stored = json.loads(json.dumps(outcome.diagnostics, default=float))
    solver = stored["theory"]["solver"]
    assert solver["converged"] and solver["is_saddle"]
    assert solver["n_negative_eigenvalues"] == solver["n_positive_eigenvalues"] == 136
    assert "hessian" not in solver and "hessian_eigenvalues" not in solver
    assert solver["min_hessian_eigenvalue"] < 0 < solver["max_hessian_eigenvalue"]
    assert len(json.dumps(stored)) < 20_000
    # The in-memory object keeps the matrix for callers that need it.
    x, y, _, _ = _task(n_train=20, side=8)
    diagnostics = fit_theory(x, y, ArchitectureSpec("cnn", "relu", mask=2, stride=2), 10.0,
                             0.1).diagnostics
    assert len(diagnostics.hessian) == 272 and "hessian=" not in repr(diagnostics)
    assert diagnostics.max_hessian_eigenvalue == max(diagnostics.hessian_eigenvalues)
    assert "hessian" not in diagnostics.to_dict()
