"""Mahalanobis patch kernels, closed-form predictor gradients, metric updates and the ridge solver
(docs/math/features.md §4, "ConvRFM iteration")."""

import math

import pytest
import torch
import torch.nn.functional as F

from krenorm.architectures import ArchitectureSpec
from krenorm.features.conv_kernels import MahalanobisPatchKernel, PatchGeometry
from krenorm.features.convrfm import ConvRFMClassifier
from krenorm.features.metric import psd_matrix_power, update_metric
from krenorm.features.ridge import solve_kernel_ridge
from krenorm.kernels import extract_patches, get_activation, nngp_kernel

DOUBLE = torch.float64


def _random(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def _random_metric(d, seed):
    factor = _random((d, d), seed)
    return factor @ factor.T / d + 0.1 * torch.eye(d, dtype=DOUBLE)


def _reference_patches(x, geometry):
    """Patches written independently of PatchGeometry: explicit pad, then extract_patches."""
    pad_h, pad_w = geometry.padding
    mode = "circular" if geometry.padding_mode == "circular" else "constant"
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=mode)
    return extract_patches(padded, geometry.mask, geometry.stride, 0)


def _reference_kappa(name, u, v, metric, bandwidth):
    """κ between patch stacks u (..., d) and v (..., d) from the textbook formulas: Mahalanobis
    distances of differences for Laplace/Gaussian, krenorm.kernels' ReLU κ for the NNGP, and
    κ + b (π − arccos ρ)/(2π) for the NTK."""
    if name in ("laplace", "gaussian"):
        difference = u - v
        squared = (difference @ metric * difference).sum(-1)
        if name == "laplace":
            return torch.exp(-torch.sqrt(squared) / bandwidth)
        return torch.exp(-squared / (2 * bandwidth**2))
    d = u.shape[-1]
    a = (u @ metric * u).sum(-1) / d
    b = (u @ metric * v).sum(-1) / d
    c = (v @ metric * v).sum(-1) / d
    value = get_activation("relu").kernel(a, b, c)
    if name == "ntk":
        rho = b / torch.sqrt(a * c)
        value = value + b * (math.pi - torch.acos(rho)) / (2 * math.pi)
    return value


def _reference_predictor(name, layout, u, centers, alpha, metric, bandwidth):
    """f(x) = Σ_j α_j K(x, x_j) from patches u (P, Np, d) of x, centers' patches (n, Np, d)."""
    if layout == "aligned":
        kappa = _reference_kappa(name, u[:, None], centers[None], metric, bandwidth)  # (P, n, Np)
        gram = kappa.mean(-1)
    else:
        kappa = _reference_kappa(
            name, u[:, None, :, None], centers[None, :, None], metric, bandwidth
        )  # (P, n, Np, Np)
        gram = kappa.mean((-2, -1))
    return gram @ alpha


@pytest.mark.parametrize("layout", ["aligned", "all-pairs"])
@pytest.mark.parametrize("name", ["laplace", "gaussian", "nngp", "ntk"])
def test_conv_kernel_gram_and_closed_form_gradients_equal_autograd(name, layout):
    geometry = PatchGeometry(mask=(3, 2), stride=(2, 1), padding=1, padding_mode="circular")
    kernel = MahalanobisPatchKernel(name, layout, geometry)
    x, z = _random((3, 2, 5, 6), 1), _random((4, 2, 5, 6), 2)
    metric, alpha, bandwidth = _random_metric(12, 3), _random((4, 2), 4), 1.7
    u = _reference_patches(x, geometry).requires_grad_(True)
    centers = _reference_patches(z, geometry)
    f = _reference_predictor(name, layout, u, centers, alpha, metric, bandwidth)
    assert torch.allclose(kernel.gram(x, z, metric, bandwidth) @ alpha, f.detach(), rtol=1e-12)
    autograd = torch.stack(
        [torch.autograd.grad(f[:, o].sum(), u, retain_graph=True)[0] for o in range(2)], 1
    )
    closed = kernel.predictor_gradients(x, z, alpha, metric, bandwidth)  # (P, O, Np, d)
    assert closed.shape == autograd.shape
    error = (closed - autograd).abs().max() / autograd.abs().max()
    assert error < 1e-10, f"{name}/{layout}: relative error {error:.2e}"


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_rfm_vector_gradients_match_features_formula_and_autograd(name):
    """One patch per vector: docs/math/features.md's closed forms, e.g. Laplace
    ∇f_o(x) = (1/L) Σ_j α_jo k_M(x, x_j)/‖x − x_j‖_M · M(x_j − x)."""
    kernel = MahalanobisPatchKernel(name)
    x, centers = _random((5, 4), 5), _random((6, 4), 6)
    metric, alpha, bandwidth = _random_metric(4, 7), _random((6, 3), 8), 2.5
    closed = kernel.predictor_gradients(x, centers, alpha, metric, bandwidth)[:, :, 0]  # (P, O, D)
    difference = centers[None] - x[:, None]  # (P, n, D): x_j − x
    squared = (difference @ metric * difference).sum(-1)
    value = _reference_kappa(name, x[:, None], centers[None], metric, bandwidth)
    if name == "laplace":
        weight = value / (bandwidth * torch.sqrt(squared))
    else:
        weight = value / bandwidth**2
    formula = torch.einsum("pn,no,pnd->pod", weight, alpha, difference @ metric)
    assert torch.allclose(closed, formula, rtol=1e-12, atol=1e-14)
    leaf = x.clone().requires_grad_(True)
    f = _reference_kappa(name, leaf[:, None], centers[None], metric, bandwidth) @ alpha
    autograd = torch.stack(
        [torch.autograd.grad(f[:, o].sum(), leaf, retain_graph=True)[0] for o in range(3)], 1
    )
    assert torch.allclose(closed, autograd, rtol=1e-10, atol=1e-14)


def test_laplace_self_term_is_excluded_at_a_center():
    kernel = MahalanobisPatchKernel("laplace")
    centers, alpha = _random((4, 3), 9), _random((4, 1), 10)
    metric = _random_metric(3, 11)
    at_center = kernel.predictor_gradients(centers[:1], centers, alpha, metric, 1.0)
    without_self = kernel.predictor_gradients(centers[:1], centers[1:], alpha[1:], metric, 1.0)
    assert torch.isfinite(at_center).all()
    assert torch.allclose(at_center, without_self, rtol=1e-12)


def test_identity_metric_nngp_equals_the_fixed_cnn_kernel():
    geometry = PatchGeometry(mask=3, stride=2, padding=1)
    spec = ArchitectureSpec("cnn", "relu", mask=3, stride=2, padding=1)
    kernel = MahalanobisPatchKernel("nngp", "aligned", geometry)
    x, z = _random((5, 2, 7, 7), 12), _random((3, 2, 7, 7), 13)
    identity = torch.eye(18, dtype=DOUBLE)
    assert torch.allclose(kernel.gram(x, None, identity), nngp_kernel(spec, x), rtol=1e-12)
    assert torch.allclose(kernel.gram(z, x, identity), nngp_kernel(spec, z, x), rtol=1e-12)


def test_convrfm_with_identity_metric_is_kernel_ridge_with_the_fixed_kernel():
    spec = ArchitectureSpec("cnn", "relu", mask=3, stride=1, padding=0)
    x, x_val, x_test = (
        _random((12, 1, 6, 6), 14),
        _random((4, 1, 6, 6), 15),
        _random((5, 1, 6, 6), 16),
    )
    labels = torch.arange(12) % 3
    estimator = ConvRFMClassifier(kernel="nngp", mask=3, n_rounds=0, ridge=0.05, refit=False).fit(
        x, labels, x_val, torch.arange(4) % 3
    )
    assert torch.equal(estimator.metric_, torch.eye(9, dtype=DOUBLE))
    targets = F.one_hot(labels, 3).to(DOUBLE)
    coefficients = torch.linalg.solve(
        nngp_kernel(spec, x) + 0.05 * torch.eye(12, dtype=DOUBLE), targets
    )
    expected = nngp_kernel(spec, x_test, x) @ coefficients
    assert torch.allclose(
        torch.as_tensor(estimator.decision_function(x_test)), expected, rtol=1e-10
    )


def test_identity_metric_laplace_equals_mean_of_patch_laplace_kernels():
    geometry = PatchGeometry(mask=2, stride=1, padding=0)
    kernel = MahalanobisPatchKernel("laplace", "aligned", geometry)
    x, z = _random((3, 2, 4, 4), 17), _random((2, 2, 4, 4), 18)
    u, v = extract_patches(x, 2), extract_patches(z, 2)
    distances = (u[:, None] - v[None]).norm(dim=-1)  # (3, 2, Np)
    expected = torch.exp(-distances / 3.0).mean(-1)
    assert torch.allclose(kernel.gram(x, z, torch.eye(8, dtype=DOUBLE), 3.0), expected, rtol=1e-12)


def test_metric_update_normalisations_and_threshold():
    agop = _random_metric(6, 19)
    for normalisation, check in (
        ("trace", lambda m: torch.trace(m)),
        ("frobenius", lambda m: m.norm() ** 2),
        ("max", lambda m: torch.linalg.eigvalsh(m).max() * 6),
    ):
        metric = update_metric(agop, power=0.5, normalisation=normalisation)
        assert math.isclose(float(check(metric)), 6.0, rel_tol=1e-10), normalisation
    square_root = psd_matrix_power(agop, 0.5)
    assert torch.allclose(square_root @ square_root, agop, rtol=1e-10, atol=1e-12)
    thresholded = update_metric(agop, threshold=0.5)
    eigenvalues = torch.linalg.eigvalsh(agop)
    kept = int((eigenvalues >= 0.5 * eigenvalues.max()).sum())
    assert int(torch.linalg.matrix_rank(thresholded)) == kept
    with pytest.raises(ValueError, match="positive semi-definite"):
        update_metric(-agop)
    with pytest.raises(ValueError, match="AGOP is zero"):
        update_metric(torch.zeros(3, 3, dtype=DOUBLE))


def test_kernel_ridge_by_cholesky():
    gram = _random_metric(7, 20)
    targets = _random((7, 2), 21)
    coefficients = solve_kernel_ridge(gram, targets, 0.3)
    assert torch.allclose(
        (gram + 0.3 * torch.eye(7, dtype=DOUBLE)) @ coefficients, targets, rtol=1e-10
    )
    assert solve_kernel_ridge(gram, targets[:, 0], 0.3).shape == (7,)
    with pytest.raises(ValueError, match="not positive definite"):
        solve_kernel_ridge(-gram, targets, 1e-3)
    with pytest.raises(ValueError, match="ridge"):
        solve_kernel_ridge(gram, targets, 0.0)
