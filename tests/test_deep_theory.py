"""Deep effective theory (docs/math/deep.md §3–5): depth 1 equals the one-layer theories, the
infinite-width limit is the deep NNGP, analytic derivatives match finite differences, and the
identity-activation deep FC saddle is the deep linear back-propagating renormalization."""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.adaptive.rescaling import solve_rescaling
from krenorm.architectures import ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.kernels.deep import deep_fc_kernel, deep_fc_kernel_diagonal
from krenorm.kernels.patches import PatchGeometry
from krenorm.theory.deep_fit import fit_deep_theory
from krenorm.theory.diagnostics import SolverSettings
from krenorm.theory.fit import fit_theory


def _data(n: int, seed: int, shape: tuple[int, ...] = (1, 6, 6)
          ) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator, dtype=torch.float64)
    y = torch.sign(x.reshape(n, -1)[:, :3].sum(1)) + 0.1 * torch.randn(
        n, generator=generator, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("kind", ["fc", "cnn", "lcn", "cnn-gap"])
def test_depth_one_equals_the_one_layer_theory(kind: str):
    x, y = _data(30, 0)
    x_test, _ = _data(7, 1)
    geometry = PatchGeometry(3, 2, 1)
    shallow = (ArchitectureSpec(kind, "erf", geometry=geometry) if kind != "fc"
               else ArchitectureSpec("fc", "erf"))
    if kind == "fc":
        x, x_test = x.reshape(30, -1), x_test.reshape(7, -1)
    one = fit_theory(x, y, shallow, 6.0, 0.05, 1.3, 0.8)
    deep = fit_deep_theory(x, y, DeepArchitectureSpec.from_shallow(shallow), [6.0], 0.05,
                           [1.3, 0.8])
    assert deep.diagnostics is not None and deep.diagnostics.converged
    expected = one.q_bar
    assert torch.allclose(deep.point.reshape(expected.shape), expected, atol=1e-10, rtol=0)
    assert float(torch.prod(deep.point)) != 1.0  # the data renormalize the kernel here
    a, b = one.predict(x_test), deep.predict(x_test)
    assert torch.allclose(a.mean, b.mean, atol=1e-10)
    assert torch.allclose(a.variance, b.variance, atol=1e-10)
    assert deep.log_evidence == pytest.approx(one.log_evidence, abs=1e-8)
    assert deep.train_loss == pytest.approx(one.train_loss, abs=1e-10)


@pytest.mark.parametrize("kind,depth", [("fc", 2), ("fc", 3), ("cnn", 2), ("lcn", 2),
                                        ("cnn-gap", 3)])
def test_small_alpha_gives_unit_order_parameters_and_the_deep_nngp(kind: str, depth: int):
    x, y = _data(20, 2)
    x_test, _ = _data(5, 3)
    geometries = [PatchGeometry(3, 1, 1), PatchGeometry(2, 2, 0), PatchGeometry(2, 1, 0)][:depth]
    spec = DeepArchitectureSpec(kind, "erf", depth, None if kind == "fc" else geometries)
    if kind == "fc":
        x, x_test = x.reshape(20, -1), x_test.reshape(5, -1)
    priors = [1.0, 1.4, 0.9, 1.2][:depth + 1]
    infinite = fit_deep_theory(x, y, spec, math.inf, 0.1, priors)
    wide = fit_deep_theory(x, y, spec, 1e8, 0.1, priors)
    structure = infinite.action.structure
    assert torch.allclose(infinite.point, structure.identity())
    assert torch.allclose(wide.point, structure.identity(), atol=1e-6)
    if kind == "fc":  # the GP with the deep NNGP kernel, computed directly
        kernel = deep_fc_kernel(x, None, "erf", priors)
        cross = deep_fc_kernel(x_test, x, "erf", priors)
        a = kernel + 0.1 * torch.eye(20, dtype=torch.float64)
        mean = cross @ torch.linalg.solve(a, y)
        variance = deep_fc_kernel_diagonal(x_test, "erf", priors) - (
            cross * torch.linalg.solve(a, cross.T).T).sum(1)
        prediction = infinite.predict(x_test)
        assert torch.allclose(prediction.mean, mean, atol=1e-10)
        assert torch.allclose(prediction.variance, variance, atol=1e-10)
    assert torch.allclose(wide.predict(x_test).mean, infinite.predict(x_test).mean, atol=1e-5)


def _finite_difference_check(action, point: torch.Tensor, direction: torch.Tensor) -> None:
    evaluation = action.evaluate(point)
    step = 1e-5
    plus = action.evaluate(point + step * direction)
    minus = action.evaluate(point - step * direction)
    slope = (plus.value - minus.value) / (2 * step)
    assert float((evaluation.gradient * direction).sum()) == pytest.approx(slope, rel=1e-6,
                                                                              abs=1e-9)
    curvature = (plus.gradient - minus.gradient) / (2 * step)
    assert torch.allclose(evaluation.hessian_vector(direction), curvature, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["fc", "cnn", "lcn"])
def test_analytic_derivatives_match_finite_differences(kind: str):
    x, y = _data(16, 4)
    geometries = [PatchGeometry(3, 1, 1), PatchGeometry(3, 2, 0)]
    spec = DeepArchitectureSpec(kind, "erf", 2, None if kind == "fc" else geometries)
    widths = [5.0, 9.0] if kind == "fc" else [5.0, 5.0]
    fit = fit_deep_theory(x.reshape(16, -1) if kind == "fc" else x, y, spec, widths, 0.05,
                          [1.0, 1.2, 0.7])
    action = fit.action
    generator = torch.Generator().manual_seed(5)
    shape = action.structure.shape
    if kind == "cnn":
        factor = torch.randn(*shape, generator=generator, dtype=torch.float64)
        point = torch.eye(shape[0], dtype=torch.float64) * 0.8 + factor @ factor.T / (4 * shape[0])
        direction = torch.randn(*shape, generator=generator, dtype=torch.float64)
        direction = direction + direction.T
    else:
        point = torch.exp(0.4 * torch.randn(*shape, generator=generator, dtype=torch.float64))
        direction = torch.randn(*shape, generator=generator, dtype=torch.float64)
    _finite_difference_check(action, point, direction)


def test_identity_activation_equals_the_deep_linear_renormalization():
    """σ = identity: the deep FC saddle is krenorm.adaptive's back-propagating kernel
    renormalization of deep linear networks (χ = 1, κ = T), layer by layer, unequal widths."""
    x, y = _data(40, 6, shape=(12,))
    priors = [1.0, 1.5, 0.8, 1.2]
    widths = (10, 25, 16)
    fit = fit_deep_theory(x, y, DeepArchitectureSpec("fc", "identity", 3), widths, 0.1, priors)
    kernel = deep_fc_kernel(x, None, "identity", priors)
    reference = solve_rescaling(kernel, y, kappa=0.1, chi=1.0, widths=widths)
    assert fit.diagnostics is not None and fit.diagnostics.converged
    assert fit.total_scale == pytest.approx(reference.total_scale, rel=1e-8)
    assert torch.allclose(fit.point, torch.tensor(reference.layer_scales, dtype=torch.float64),
                          rtol=1e-8)
    assert abs(fit.total_scale - 1) > 0.05  # a point where renormalization matters


def test_equal_widths_product_form_equals_the_root_prior():
    """Deep FC with equal widths has equal Q_ℓ = U^{1/L}, the saddle of the product form
    L U^{1/L} − ln U: the deep CNN's root prior on one final position gives the same U."""
    x, y = _data(24, 7, shape=(1, 5, 5))
    geometries = [PatchGeometry(3, 1, 0), PatchGeometry(3, 1, 0)]  # 5 → 3 → 1 position
    priors = [1.0, 1.1, 0.9]
    cnn = fit_deep_theory(x, y, DeepArchitectureSpec("cnn", "erf", 2, geometries), 4.0, 0.02,
                          priors)
    gap = fit_deep_theory(x, y, DeepArchitectureSpec("cnn-gap", "erf", 2, geometries), 4.0, 0.02,
                          priors)
    assert torch.allclose(gap.point, gap.point[0].expand(2), rtol=1e-8)
    assert float(cnn.point[0, 0]) == pytest.approx(gap.total_scale, rel=1e-8)
    assert abs(gap.total_scale - 1) > 0.05


def test_unequal_cnn_widths_are_refused():
    x, y = _data(8, 8)
    spec = DeepArchitectureSpec("cnn", "erf", 2, [3, 2])
    with pytest.raises(ValueError, match="equal channel counts"):
        fit_deep_theory(x, y, spec, [4.0, 8.0], 0.1)


def test_multi_start_solve_reports_convergence_and_disagreement():
    """Several starts (SolverSettings.n_starts) go through the same solver: the deep CNN's
    random SPD starts reach the same Q here, and the diagnostics say so."""
    x, y = _data(20, 9)
    spec = DeepArchitectureSpec("cnn", "erf", 2, [PatchGeometry(3, 1, 1), PatchGeometry(3, 2, 0)])
    fit = fit_deep_theory(x, y, spec, 4.0, 0.05, 1.0,
                          solver_settings=SolverSettings(n_starts=3, seed=1))
    diagnostics = fit.diagnostics
    assert diagnostics is not None and diagnostics.converged and diagnostics.n_starts == 3
    assert diagnostics.start_disagreement < 1e-5
    assert diagnostics.min_hessian_eigenvalue is not None
    assert diagnostics.min_hessian_eigenvalue > 0
    summary = fit.summary().to_dict()
    assert summary["depth"] == 2 and summary["diagnostics"]["converged"]
