"""Effective theory (docs/math/theory.md §3–5): exact limits, finite differences, architecture
identities."""

import itertools
import math
import warnings

import pytest
import torch

from krenorm.adaptive.linear_oracle import linear_oracle
from krenorm.adaptive.scaling import ScalingRegime
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels import (
    compute_local_blocks,
    fc_kernel,
    local_cross_blocks,
    local_diagonal_blocks,
    local_test_diagonals,
)
from krenorm.theory.action import (
    DiagonalBlocksBasis,
    GramLinearAction,
    LocalBlocksBasis,
    SpectralAction,
)
from krenorm.theory.fit import fit_theory
from krenorm.theory.mean_term import MeanTermKernels
from krenorm.theory.order_parameters import DiagonalStructure, MatrixStructure
from krenorm.theory.solvers import solve_saddle_point


def _task(n_train=40, n_test=30, side=6, channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, channels, side, side, generator=gen, dtype=torch.float64)
    y = torch.erf(2 * x[:, 0, : side // 2].mean((1, 2))) + 0.1 * torch.randn(
        n_train + n_test, generator=gen, dtype=torch.float64
    )
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _symmetric(size, seed):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(size, size, generator=gen, dtype=torch.float64)
    return (m + m.T) / 2


def _spd(size, seed):
    m = _symmetric(size, seed)
    return m @ m.T / size + torch.eye(size, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Exact limits


@pytest.mark.parametrize("width", [20.0, 80.0])
def test_fc_zero_temperature_closed_form(width):
    x, y, _, _ = _task(n_train=40)
    lambda1 = 1.7
    kernel = fc_kernel(x)
    fit = fit_theory(x, y, ArchitectureSpec("fc"), width, temperature=1e-9, lambda1=lambda1)
    alpha = 40 / width
    r = float(y @ torch.linalg.solve(kernel, y)) / 40
    closed = ((1 - alpha) + math.sqrt((1 - alpha) ** 2 + 4 * alpha * lambda1 * r)) / 2
    # Finite T shifts Q̄ by O(T/λ_min(K)) ≈ 1e-9/1e-3: 1e-6 relative is ample and still sharp.
    assert float(fit.q_bar) == pytest.approx(closed, rel=1e-6)


def test_linear_fc_approaches_exact_gamma_mixture_as_1_over_n():
    gen = torch.Generator().manual_seed(3)
    n_train, dim = 24, 12
    x = torch.randn(n_train + 10, dim, generator=gen, dtype=torch.float64)
    y = x[:, 0] + 0.3 * torch.randn(n_train + 10, generator=gen, dtype=torch.float64)
    x_train, y_train, x_test = x[:n_train], y[:n_train], x[n_train:]
    errors = []
    for width in (192, 384, 768):
        fit = fit_theory(x_train, y_train, ArchitectureSpec("fc", "identity"), width,
                         temperature=0.2, lambda0=1.0, lambda1=1.0)
        regime = ScalingRegime(chi=1.0, width=width, input_dim=dim, g_w=1.0, g_v=1.0, kappa=0.2)
        exact = linear_oracle(x_train, y_train, x_test, regime).prediction
        prediction = fit.predict(x_test)
        error = max(float((prediction.mean - exact.test_mean).abs().max()),
                    float((prediction.variance - exact.test_variance).abs().max()))
        errors.append(error)
    # Saddle-point corrections are O(1/N) at fixed data: doubling N halves the error once N ≫ P
    # (measured ratios 1.50, 1.71, 1.84, 1.92, 1.96, 1.98 for N = 24 → 1536 at P = 24).
    assert errors[0] < 2e-3
    for coarse, fine in itertools.pairwise(errors):
        assert 1.75 < coarse / fine < 2.25, errors


@pytest.mark.parametrize("kind", ["fc", "cnn", "lcn", "cnn-gap"])
def test_infinite_width_limit_is_the_nngp(kind):
    x, y, x_test, y_test = _task(n_train=30, n_test=12)
    spec = ArchitectureSpec(kind, "erf", mask=3, stride=3)
    infinite = fit_theory(x, y, spec, math.inf, temperature=0.1)
    wide = fit_theory(x, y, spec, 1e8, temperature=0.1)
    # α = 3e-7: Q̄ − 1 = O(α).
    identity = infinite.q_bar
    assert torch.allclose(wide.q_bar, identity, atol=1e-5)
    assert wide.test_loss(x_test, y_test).loss == pytest.approx(
        infinite.test_loss(x_test, y_test).loss, rel=1e-5)
    # The infinite-width prediction is the GP with the NNGP kernel, written out directly.
    from krenorm.kernels import nngp_diagonal, nngp_kernel
    kernel = nngp_kernel(spec, x)
    cross = nngp_kernel(spec, x_test, x)
    a = kernel + 0.1 * torch.eye(30, dtype=torch.float64)
    mean = cross @ torch.linalg.solve(a, y)
    variance = nngp_diagonal(spec, x_test) - (cross * torch.linalg.solve(a, cross.T).T).sum(1)
    prediction = infinite.predict(x_test)
    assert torch.allclose(prediction.mean, mean, atol=1e-10)
    assert torch.allclose(prediction.variance, variance, atol=1e-10)
    # Log evidence at infinite width = GP marginal likelihood.
    evidence = -0.5 * (torch.logdet(a) + y @ torch.linalg.solve(a, y)) - 15 * math.log(2 * math.pi)
    assert infinite.log_evidence == pytest.approx(float(evidence), rel=1e-10)


def test_one_patch_cnn_equals_fc():
    x, y, x_test, y_test = _task(n_train=30, n_test=10, side=5, channels=2)
    cnn = fit_theory(x, y, ArchitectureSpec("cnn", "erf", mask=5, stride=5), 20.0, 0.05)
    fc = fit_theory(x, y, ArchitectureSpec("fc", "erf"), 20.0, 0.05)
    assert cnn.q_bar.shape == (1, 1)
    assert float(cnn.q_bar) == pytest.approx(float(fc.q_bar), rel=1e-9)
    assert cnn.test_loss(x_test, y_test).loss == pytest.approx(fc.test_loss(x_test, y_test).loss,
                                                               rel=1e-9)


def _gaussian_process(kernel, cross, diagonal, y, temperature):
    a = kernel + temperature * torch.eye(kernel.shape[0], dtype=kernel.dtype)
    mean = cross @ torch.linalg.solve(a, y)
    variance = diagonal - (cross * torch.linalg.solve(a, cross.T).T).sum(1)
    return mean, variance


def test_lcn_equals_infinite_width_lcn_with_per_patch_priors():
    x, y, x_test, _ = _task(n_train=40, n_test=10)
    lambda1, temperature = 1.3, 0.05
    spec = ArchitectureSpec("lcn", "erf", mask=3, stride=3)
    fit = fit_theory(x, y, spec, 15.0, temperature, lambda1=lambda1)
    q = fit.q_bar
    assert q.shape == (4,) and not torch.allclose(q, torch.ones(4, dtype=torch.float64), atol=1e-2)
    priors = lambda1 / q  # per-patch readout precisions
    assert torch.allclose(fit.effective_priors, priors)
    blocks = local_diagonal_blocks(x, 3, 3)
    cross = torch.diagonal(local_cross_blocks(x_test, x, 3, 3), dim1=0, dim2=1)  # (Pt, P, Np)
    diagonal = torch.diagonal(local_test_diagonals(x_test, 3, 3), dim1=0, dim2=1)  # (Pt, Np)
    weights = 1 / (priors * 4)
    mean, variance = _gaussian_process(torch.einsum("i,iab->ab", weights, blocks),
                                       cross @ weights, diagonal @ weights, y, temperature)
    prediction = fit.predict(x_test)
    assert torch.allclose(prediction.mean, mean, atol=1e-10)
    assert torch.allclose(prediction.variance, variance, atol=1e-10)


def test_fc_equals_infinite_width_fc_with_renormalized_prior():
    x, y, x_test, _ = _task(n_train=40, n_test=10)
    fit = fit_theory(x, y, ArchitectureSpec("fc", "erf"), 15.0, 0.05, lambda1=0.8)
    retuned = fit_theory(x, y, ArchitectureSpec("fc", "erf"), math.inf, 0.05,
                         lambda1=float(fit.effective_priors))
    assert torch.allclose(fit.predict(x_test).mean, retuned.predict(x_test).mean, atol=1e-12)
    assert torch.allclose(fit.predict(x_test).variance, retuned.predict(x_test).variance,
                          atol=1e-12)


def test_cnn_predictions_match_dense_formula_and_q_bar_is_spd():
    x, y, x_test, _ = _task(n_train=40, n_test=8, side=6)
    lambda1, temperature = 0.9, 0.05
    fit = fit_theory(x, y, ArchitectureSpec("cnn", "erf", mask=3, stride=3), 10.0, temperature,
                     lambda1=lambda1)
    q = fit.q_bar
    assert torch.equal(q, q.T)
    assert float(torch.linalg.eigvalsh(q)[0]) > 0
    assert fit.diagnostics.converged and fit.diagnostics.min_hessian_eigenvalue > 0
    # Local renormalization switches on cross-patch blocks.
    assert float((q - torch.diag(torch.diagonal(q))).abs().max()) > 1e-3
    assert 0 < fit.summary().off_diagonal_share < 1
    full = compute_local_blocks(x, 3, 3).full()
    scale = 1 / (lambda1 * 4)
    kernel = torch.einsum("ij,ijab->ab", q, full) * scale
    cross = torch.einsum("ij,ijtb->tb", q, local_cross_blocks(x_test, x, 3, 3)) * scale
    diagonal = torch.einsum("ij,ijt->t", q, local_test_diagonals(x_test, 3, 3)) * scale
    mean, variance = _gaussian_process(kernel, cross, diagonal, y, temperature)
    prediction = fit.predict(x_test, batch_size=3)
    assert torch.allclose(prediction.mean, mean, atol=1e-10)
    assert torch.allclose(prediction.variance, variance, atol=1e-10)
    # Saddle point: Q̄⁻¹ = 1 + G.
    evaluation = fit.action.evaluate(q)
    data_gradient = evaluation.gradient - (torch.eye(4, dtype=torch.float64) - torch.linalg.inv(q))
    assert torch.allclose(torch.linalg.inv(q), torch.eye(4, dtype=torch.float64) + data_gradient,
                          atol=1e-8)


def test_multi_output_q_bar_is_identity_at_infinite_width_and_reduces_to_scalar():
    x, y, x_test, _ = _task(n_train=40, n_test=10)
    gen = torch.Generator().manual_seed(9)
    y2 = torch.stack([y, torch.tanh(x[:, 0, 0, 0]) + 0.1 * torch.randn(40, generator=gen,
                                                                        dtype=torch.float64)], 1)
    spec = ArchitectureSpec("fc", "erf")
    infinite = fit_theory(x, y2, spec, math.inf, 0.05)
    assert torch.equal(infinite.q_bar, torch.eye(2, dtype=torch.float64))
    wide = fit_theory(x, y2, spec, 1e9, 0.05)
    assert torch.allclose(wide.q_bar, torch.eye(2, dtype=torch.float64), atol=1e-6)
    finite = fit_theory(x, y2, spec, 10.0, 0.05)
    assert torch.equal(finite.q_bar, finite.q_bar.T)
    assert float(torch.linalg.eigvalsh(finite.q_bar)[0]) > 0
    assert abs(float(finite.q_bar[0, 1])) > 1e-4  # outputs couple through the shared layer
    # Each output's mean predictor is that of the Kronecker GP, written out densely.
    kernel = fc_kernel(x)
    big = torch.kron(finite.q_bar, kernel) + 0.05 * torch.eye(80, dtype=torch.float64)
    alpha = torch.linalg.solve(big, y2.T.reshape(-1))
    cross = torch.kron(finite.q_bar, fc_kernel(x_test, x))
    mean = (cross @ alpha).reshape(2, 10).T
    assert torch.allclose(finite.predict(x_test).mean, mean, atol=1e-10)
    # One output: the D×D machinery equals the scalar theory.
    single = fit_theory(x, y2[:, :1], spec, 10.0, 0.05)
    scalar = fit_theory(x, y, spec, 10.0, 0.05)
    assert float(single.q_bar) == pytest.approx(float(scalar.q_bar), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Gradients and Hessians against finite differences


def _actions():
    x, y, _, _ = _task(n_train=25, side=6)
    yield "fc", SpectralAction(fc_kernel(x), y, 12.0, 0.1, 1.3), torch.tensor([0.8],
                                                                               dtype=torch.float64)
    y2 = torch.stack([y, torch.sin(y)], 1)
    yield "fc-2", SpectralAction(fc_kernel(x), y2, 12.0, 0.1, 1.3), _spd(2, 1)
    blocks = compute_local_blocks(x, 3, 3)
    yield ("cnn", GramLinearAction(LocalBlocksBasis(blocks, 0.7), y, 12.0, 0.1,
                                   MatrixStructure(4)), _spd(4, 2))
    yield ("lcn", GramLinearAction(DiagonalBlocksBasis(local_diagonal_blocks(x, 3, 3), 0.7), y,
                                   12.0, 0.1, DiagonalStructure(4)),
           torch.tensor([0.7, 1.2, 1.0, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("case", list(_actions()), ids=lambda case: case[0])
def test_gradient_and_hessian_against_finite_differences(case):
    _, action, q = case
    evaluation = action.evaluate(q)
    direction = _symmetric(q.shape[0], 5) if q.ndim == 2 else torch.linspace(-1, 1, q.shape[0],
                                                                              dtype=torch.float64)
    step = 1e-5
    plus, minus = action.evaluate(q + step * direction), action.evaluate(q - step * direction)
    numeric_gradient = (plus.value - minus.value) / (2 * step)
    # Central differences: truncation O(h²)~1e-10, rounding ~1e-16/1e-5 = 1e-11 relative to S.
    assert float((evaluation.gradient * direction).sum()) == pytest.approx(numeric_gradient,
                                                                           rel=1e-7, abs=1e-9)
    numeric_hessian = (plus.gradient - minus.gradient) / (2 * step)
    assert torch.allclose(evaluation.hessian_vector(direction), numeric_hessian, rtol=1e-6,
                          atol=1e-8)


def test_mean_term_gradient_and_odd_reduction():
    x, y, _, _ = _task(n_train=25)
    kernels = MeanTermKernels("relu", x, 1.0, 1.2)
    action = kernels.action(y, 10.0, 0.1)
    point = torch.tensor([0.8, 0.3], dtype=torch.float64)
    gradient = action.evaluate(point).gradient
    step = 1e-6
    for index, shift in enumerate(([step, 0.0], [0.0, step])):
        plus = action(point + torch.tensor(shift, dtype=torch.float64))
        minus = action(point - torch.tensor(shift, dtype=torch.float64))
        assert gradient[index] == pytest.approx((plus - minus) / (2 * step), rel=1e-6)
    # With M = 0 the stationary Q̄ equals the odd-case saddle point on the same kernel.
    action.mean_outer = torch.zeros_like(action.mean_outer)
    solution = solve_saddle_point(action)
    (q_bar, q), diagnostics = solution.point.tolist(), solution.diagnostics
    odd = solve_saddle_point(SpectralAction(kernels.kernel, y, 10.0, 0.1, 1.2))
    assert diagnostics.converged
    assert q_bar == pytest.approx(float(odd.q_bar), rel=1e-8)
    assert q_bar == pytest.approx(1 / (1 + q), rel=1e-8)


def test_relu_fc_fit_has_mean_term_and_nngp_limit():
    x, y, x_test, y_test = _task(n_train=30, n_test=10)
    spec = ArchitectureSpec("fc", "relu")
    fit = fit_theory(x, y, spec, 10.0, 0.05)
    assert fit.diagnostics.converged and fit.conjugate_q is not None
    wide = fit_theory(x, y, spec, 1e9, 0.05)
    infinite = fit_theory(x, y, spec, math.inf, 0.05)
    assert float(wide.q_bar) == pytest.approx(1.0, abs=1e-6)
    assert wide.test_loss(x_test, y_test).loss == pytest.approx(
        infinite.test_loss(x_test, y_test).loss, rel=1e-6)


def test_relu_fc_saddle_at_large_alpha_by_continuation_and_its_hessian():
    # α = P/N = 12.5 at T = 0.1: the damped fixed point alone stalls; continuation in N with the
    # hybrid-Newton polish reaches the stationary point that scipy.optimize.root (hybr, numerical
    # Jacobian) found by hand-continuation from N = 100: (Q̄, Q) = (0.456279, 0.201658).
    x, y, _, _ = _task(n_train=25)
    spec = ArchitectureSpec("fc", "relu")
    fit = fit_theory(x, y, spec, 2.0, 0.1, lambda1=1.2)
    diagnostics = fit.diagnostics
    assert diagnostics.converged and diagnostics.gradient_norm <= 1e-9
    assert float(fit.q_bar) == pytest.approx(0.456279, abs=2e-6)
    assert fit.conjugate_q == pytest.approx(0.201658, abs=2e-6)
    # A saddle in (Q̄, Q): one eigenvalue of each sign, as at N = ∞, where the Hessian of
    # −Q̄Q + ln(1 + Q) at (1, 0) is [[0, −1], [−1, −1]] (eigenvalues −1.618, 0.618).
    assert diagnostics.is_saddle
    wide = fit_theory(x, y, spec, 1e9, 0.1, lambda1=1.2).diagnostics
    assert torch.allclose(torch.tensor(wide.hessian), torch.tensor([[0.0, -1.0], [-1.0, -1.0]]),
                          atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Solvers


@pytest.mark.parametrize("method", ["newton", "anderson", "fixed-point", "lbfgs", "newton-krylov"])
def test_solvers_agree(method):
    x, y, _, _ = _task(n_train=30)
    blocks = compute_local_blocks(x, 3, 3)
    action = GramLinearAction(LocalBlocksBasis(blocks, 1.0), y, 8.0, 0.05,
                              MatrixStructure(4))
    reference = solve_saddle_point(action, method="newton", tolerance=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = solve_saddle_point(action, method=method, tolerance=1e-9, n_starts=2)
    # Gradient norm ≤ ~1e-8 and Hessian eigenvalues ≥ 0.1 bound the distance by ~1e-7.
    assert torch.allclose(solution.q_bar, reference.q_bar, atol=1e-6)
    assert solution.diagnostics.start_disagreement < 1e-5


def test_non_convergence_is_reported():
    x, y, _, _ = _task(n_train=30)
    action = SpectralAction(fc_kernel(x), y, 5.0, 0.01)
    with pytest.warns(RuntimeWarning, match="not converged"):
        solution = solve_saddle_point(action, method="fixed-point", max_iterations=1)
    assert not solution.diagnostics.converged


# ---------------------------------------------------------------------------------------------
# Validation


def test_bad_inputs_are_refused():
    x, y, x_test, _ = _task(n_train=10, n_test=3)
    spec = ArchitectureSpec("cnn", "erf", mask=3, stride=3)
    with pytest.raises(ValueError, match="temperature"):
        fit_theory(x, y, spec, 10.0, 0.0)
    with pytest.raises(ValueError, match="width"):
        fit_theory(x, y, spec, -1.0, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        fit_theory(x, y * float("nan"), spec, 10.0, 0.1)
    # A non-odd activation on a CNN has its (Q̄, Q) theory (docs/math/theory.md §3.6).
    assert fit_theory(x, y, ArchitectureSpec("cnn", "relu", mask=3, stride=3), 10.0,
                      0.1).diagnostics.converged
    with pytest.raises(ValueError, match="FC architecture only"):
        fit_theory(x, torch.stack([y, y], 1), spec, 10.0, 0.1)
    with pytest.raises(ValueError, match=r"\(P, c, H, W\)"):
        fit_theory(x.flatten(1), y, spec, 10.0, 0.1)
    fit = fit_theory(x, y, spec, 10.0, 0.1)
    with pytest.raises(ValueError, match="test inputs"):
        fit.predict(x_test[:, :, :4])
    with pytest.raises(ValueError, match="solver method"):
        fit_theory(x, y, spec, 10.0, 0.1, solver="magic")


def test_explicit_device_gives_the_same_fit():
    # The CUDA path is the same code with tensors moved; on CPU-only machines this checks that
    # passing a device keeps Q̄ on the CPU and changes no number.
    x, y, x_test, y_test = _task(n_train=30, n_test=10)
    spec = ArchitectureSpec("cnn", "erf", mask=3, stride=3)
    default = fit_theory(x, y, spec, 10.0, 0.05)
    placed = fit_theory(x, y, spec, 10.0, 0.05, device="cpu")
    assert torch.equal(default.q_bar, placed.q_bar)
    assert placed.test_loss(x_test, y_test) == default.test_loss(x_test, y_test)


def test_batched_hessian_vectors_and_lobpcg_check_for_many_patches():
    # 36 patches → 666 free entries: the Hessian check takes the LOBPCG path.
    x, y, _, _ = _task(n_train=40, side=12)
    blocks = compute_local_blocks(x, 2, 2)
    action = GramLinearAction(LocalBlocksBasis(blocks, 1.0), y, 20.0, 0.1,
                              MatrixStructure(36))
    q = _spd(36, 3)
    evaluation = action.evaluate(q)
    directions = torch.stack([_symmetric(36, seed) for seed in (4, 5, 6)])
    batched = evaluation.hessian_vector(directions)
    one_by_one = torch.stack([evaluation.hessian_vector(d) for d in directions])
    assert torch.allclose(batched, one_by_one, atol=1e-13)
    from krenorm.theory.solvers import _Coordinates, min_hessian_eigenvalue, solve_saddle_point
    for width in (20.0, 0.5):
        action = GramLinearAction(LocalBlocksBasis(blocks, 1.0), y, width, 0.1,
                                  MatrixStructure(36))
        saddle = solve_saddle_point(action, hessian_check=False).q_bar
        for point in (q, saddle):
            evaluation = action.evaluate(point)
            dense = float(torch.linalg.eigvalsh(_Coordinates(action.structure, q.dtype).hessian(
                evaluation))[0])
            estimate = min_hessian_eigenvalue(action, point, evaluation)
            # A Rayleigh quotient: an upper bound. Started from the prior's softest directions,
            # 4 LOBPCG iterations land within 1.5e-5 here (random SPD Q̄ and saddle points at
            # α = 2 and 80, one with a negative eigenvalue); 1e-4 is the documented accuracy.
            assert dense - 1e-9 <= estimate <= dense + 1e-4, (width, dense, estimate)


def test_lobpcg_check_for_a_diagonal_q_bar_with_many_patches():
    # LCN with 100 patches (mask 2 on 20×20 images): above the dense limit, so the check starts
    # LOBPCG from the prior's softest coordinates e_i (largest q̄_i). Measured within 5e-9.
    from krenorm.theory.solvers import _Coordinates, min_hessian_eigenvalue
    x, y, _, _ = _task(n_train=40, side=20)
    blocks = local_diagonal_blocks(x, 2, 2)
    structure = DiagonalStructure(blocks.shape[0])
    generator = torch.Generator().manual_seed(1)
    for width in (20.0, 0.5):
        action = GramLinearAction(DiagonalBlocksBasis(blocks, 1.0), y, width, 0.1, structure)
        random_point = torch.exp(0.3 * torch.randn(100, dtype=torch.float64, generator=generator))
        for point in (solve_saddle_point(action, hessian_check=False).q_bar, random_point):
            evaluation = action.evaluate(point)
            dense = float(torch.linalg.eigvalsh(
                _Coordinates(structure, point.dtype).hessian(evaluation))[0])
            estimate = min_hessian_eigenvalue(action, point, evaluation)
            assert dense - 1e-9 <= estimate <= dense + 1e-4, (width, dense, estimate)
