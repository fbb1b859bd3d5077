"""Kernels (docs/math/theory.md §2): κ against Monte-Carlo and quadrature, Conv2d-exact patches,
local blocks, NNGP limits of sampled wide networks."""

import math

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels import (
    compute_local_blocks,
    extract_patches,
    fc_kernel,
    gauss_hermite_kernel,
    gauss_hermite_mean,
    get_activation,
    local_cross_blocks,
    local_gram_blocks,
    local_test_diagonals,
    nngp_diagonal,
    nngp_kernel,
)
from krenorm.kernels.local_kernel import LocalKernel

# (a, b, c) triples: small/large variances, positive/negative/zero correlation, ρ = ±1.
TRIPLES = torch.tensor(
    [[1.0, 0.3, 0.8], [0.5, -0.4, 2.0], [2.0, 0.0, 1.0], [0.2, 0.2, 0.2], [1.5, -1.5, 1.5]],
    dtype=torch.float64,
)


@pytest.mark.parametrize("name", ["erf", "relu", "identity", "square", "tanh", "softplus"])
def test_kappa_matches_monte_carlo(name):
    act = get_activation(name)
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    for a, b, c in TRIPLES.tolist():
        cov = torch.tensor([[a, b], [b, c]], dtype=torch.float64)
        chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(2, dtype=torch.float64))
        z = torch.randn(n, 2, generator=gen, dtype=torch.float64) @ chol.T
        product = act(z[:, 0]) * act(z[:, 1])
        estimate = product.mean()
        standard_error = product.std() / math.sqrt(n)
        exact = act.kernel(*(torch.tensor(v, dtype=torch.float64) for v in (a, b, c)))
        # 5 standard errors: 30 (activation, triple) checks, two-sided false-alarm rate ~1e-5.
        assert abs(exact - estimate) < 5 * standard_error + 1e-12, (name, a, b, c)
        values = act(z[:, 0])
        mean_se = values.std() / math.sqrt(n)
        assert abs(act.mean(torch.tensor(a, dtype=torch.float64)) - values.mean()) < 5 * mean_se


@pytest.mark.parametrize(
    ("name", "tolerance"),
    # Polynomials of degree < 128 are integrated exactly by 64 nodes (rounding only); erf is
    # analytic, so the error falls exponentially (measured 5.8e-6, 2.8e-10, 2e-16 at 32/64/128
    # nodes, worst case ρ = −1).
    [("erf", 1e-9), ("identity", 1e-12), ("square", 1e-11)],
)
def test_quadrature_matches_closed_forms(name, tolerance):
    act = get_activation(name)
    a, b, c = TRIPLES.T
    quadrature = gauss_hermite_kernel(act.function, a, b, c, nodes=64)
    assert torch.allclose(quadrature, act.kernel(a, b, c), atol=tolerance, rtol=0)
    if not act.odd:
        assert torch.allclose(gauss_hermite_mean(act.function, a), act.mean(a), atol=tolerance)


def test_quadrature_converges_algebraically_at_a_kink():
    # relu's kink limits Gauss–Hermite to O(1/n): errors 5.9e-3, 2.9e-3, 1.5e-3 at 32/64/128.
    relu = get_activation("relu")
    a, b, c = TRIPLES.T
    errors = [
        (gauss_hermite_kernel(relu.function, a, b, c, nodes=n) - relu.kernel(a, b, c)).abs().max()
        for n in (64, 128, 256)
    ]
    assert errors[2] < 1e-3
    assert 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2
    assert torch.allclose(gauss_hermite_mean(relu.function, a, nodes=256), relu.mean(a), atol=1e-3)


def test_relu_kernel_on_the_diagonal_is_half_variance():
    a = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    assert torch.allclose(get_activation("relu").kernel(a, a, a), a / 2, atol=1e-14)


def test_callable_activation_uses_quadrature_and_detects_oddness():
    act = get_activation(torch.sin)
    assert act.odd
    a, b, c = TRIPLES.T
    # E[sin u sin v] = e^{−(a+c)/2} sinh(b)
    assert torch.allclose(act.kernel(a, b, c), torch.exp(-(a + c) / 2) * torch.sinh(b), atol=1e-12)
    assert not get_activation(torch.exp).odd


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("swishy")


@pytest.mark.parametrize(
    ("channels", "mask", "stride", "padding"),
    [(1, 3, 1, 0), (1, 7, 7, 0), (3, 3, 2, 1), (3, (2, 4), (1, 3), (2, 0)), (1, 5, 2, 2)],
)
def test_patches_reproduce_conv2d(channels, mask, stride, padding):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, channels, 12, 11, generator=gen, dtype=torch.float64)
    conv = torch.nn.Conv2d(channels, 6, mask, stride=stride, padding=padding, bias=False).double()
    patches = extract_patches(x, mask, stride, padding)  # (P, Np, M)
    reproduced = torch.einsum("pim,km->pki", patches, conv.weight.reshape(6, -1))
    expected = conv(x).flatten(2)
    assert reproduced.shape == expected.shape
    assert torch.allclose(reproduced, expected, atol=1e-13, rtol=0)


def test_mask_larger_than_image_is_refused():
    with pytest.raises(ValueError, match="larger than the"):
        extract_patches(torch.zeros(2, 1, 5, 5), 7)


def _images(n=6, channels=1, side=8, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, side, side, generator=gen, dtype=torch.float64)


def test_local_blocks_definition_and_symmetry():
    x = _images()
    full = local_gram_blocks(x, mask=4, stride=2, activation="erf", lambda0=2.0)
    patches = extract_patches(x, 4, 2)
    n_patches, m = patches.shape[1], patches.shape[2]
    assert full.shape == (n_patches, n_patches, 6, 6)
    gram = torch.einsum("aim,bjm->ijab", patches, patches) / (2.0 * m)
    diag = torch.diagonal(torch.diagonal(gram, dim1=0, dim2=1), dim1=0, dim2=1)  # (Np, P)
    expected = get_activation("erf").kernel(diag[:, None, :, None], gram, diag[None, :, None, :])
    assert torch.allclose(full, expected, atol=1e-14)
    assert torch.allclose(full.transpose(0, 1), full.transpose(2, 3), atol=0)


def test_pair_storage_contractions_and_chunking():
    x = _images(n=5, side=9)
    blocks = compute_local_blocks(x, mask=3, stride=3, activation="relu")
    tiny_chunks = compute_local_blocks(x, mask=3, stride=3, activation="relu", chunk_bytes=1)
    assert torch.allclose(blocks.pairs, tiny_chunks.pairs, atol=1e-15, rtol=0)
    full = blocks.full()
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(blocks.n_patches, blocks.n_patches, generator=gen, dtype=torch.float64)
    w = w + w.T
    assert torch.allclose(blocks.contract(w), torch.einsum("ij,ijab->ab", w, full), atol=1e-12)
    b = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    b = b + b.T
    assert torch.allclose(blocks.frobenius(b), torch.einsum("ijab,ab->ij", full, b), atol=1e-12)


def test_cross_blocks_and_test_diagonals_agree_with_training_blocks():
    x = _images(n=5, side=9)
    full = local_gram_blocks(x, mask=3, stride=2, activation="erf")
    cross = local_cross_blocks(x, x, mask=3, stride=2, activation="erf")
    assert torch.allclose(cross, full, atol=1e-14)
    diagonals = local_test_diagonals(x, mask=3, stride=2, activation="erf")
    assert torch.allclose(diagonals, torch.diagonal(full, dim1=2, dim2=3), atol=1e-14)


def test_one_patch_cnn_equals_fc():
    x = _images(n=7, channels=3, side=5)
    cnn = ArchitectureSpec("cnn", "erf", mask=5, stride=5)
    fc = ArchitectureSpec("fc", "erf")
    assert torch.allclose(
        nngp_kernel(cnn, x, lambda0=0.7, lambda1=1.3),
        nngp_kernel(fc, x, lambda0=0.7, lambda1=1.3),
        atol=1e-14,
    )
    assert torch.allclose(local_gram_blocks(x, 5, 5)[0, 0], fc_kernel(x), atol=1e-14)


def _sampled_hidden_kernel(x, spec, width, shared_filters, generator, lambda0, lambda1):
    """E_a[f(x)f(z)] of one random network with a dense readout ~ N(0, 1/λ1):
    (1/(λ1 N Np)) Σ_{k,i} σ(h_ki(x))σ(h_ki(z)), h_ki = w_k(i)·r_i/√M, w ~ N(0, 1/λ0)."""
    patches = extract_patches(x, spec.mask, spec.stride)  # (P, Np, M)
    _, n_patches, m = patches.shape
    shape = (width, m) if shared_filters else (width, n_patches, m)
    w = torch.randn(*shape, generator=generator, dtype=torch.float64) / math.sqrt(lambda0)
    equation = "pim,km->pki" if shared_filters else "pim,kim->pki"
    features = get_activation(spec.activation)(torch.einsum(equation, patches, w) / math.sqrt(m))
    features = features.reshape(x.shape[0], -1)
    return features @ features.T / (lambda1 * width * n_patches)


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_nngp_of_wide_cnn_and_lcn_without_pooling_agree(activation):
    x = _images(n=4, side=6, seed=4)
    spec = ArchitectureSpec("cnn", activation, mask=3, stride=3)
    theory = nngp_kernel(spec, x, lambda0=1.5, lambda1=0.8)
    lcn = nngp_kernel(ArchitectureSpec("lcn", activation, 3, 3), x, lambda0=1.5, lambda1=0.8)
    assert torch.allclose(theory, lcn)
    gen = torch.Generator().manual_seed(5)
    width = 40_000
    for shared in (True, False):
        sampled = _sampled_hidden_kernel(x, spec, width, shared, gen, 1.5, 0.8)
        # Each entry is an average of width·Np iid terms of O(1) variance → std ≲ 1/√(4·40000)
        # ≈ 0.0025 times the entry scale (~1); 0.02 is ≥ 6 standard errors.
        assert torch.allclose(sampled, theory, atol=0.02), (shared, (sampled - theory).abs().max())


def test_gap_nngp_against_sampled_network():
    x = _images(n=4, side=6, seed=6)
    spec = ArchitectureSpec("cnn-gap", "erf", mask=3, stride=3)
    theory = nngp_kernel(spec, x)
    patches = extract_patches(x, 3, 3)
    gen = torch.Generator().manual_seed(7)
    width = 40_000
    w = torch.randn(width, patches.shape[2], generator=gen, dtype=torch.float64)
    pooled = torch.erf(torch.einsum("pim,km->pki", patches, w) / 3.0).mean(-1)  # (P, N)
    sampled = pooled @ pooled.T / width
    assert torch.allclose(sampled, theory, atol=0.02)
    assert torch.allclose(nngp_diagonal(spec, x), torch.diagonal(theory), atol=1e-14)
    assert torch.allclose(nngp_kernel(spec, x, x), theory, atol=1e-14)


def test_validation_errors():
    with pytest.raises(ValueError, match="lambda0"):
        fc_kernel(torch.ones(3, 4), lambda0=0.0)
    with pytest.raises(ValueError, match="NaN"):
        local_gram_blocks(torch.full((2, 1, 4, 4), float("nan")), 2)
    with pytest.raises(ValueError, match=r"\(P, c, H, W\)"):
        local_gram_blocks(torch.ones(2, 4, 4), 2)
    with pytest.raises(ValueError, match="unknown architecture"):
        ArchitectureSpec("rnn")


def test_memory_limit_is_checked_before_allocation():
    with pytest.raises(MemoryError, match="GiB"):
        compute_local_blocks(_images(n=50), mask=2, stride=1, memory_limit=1000)


@pytest.mark.parametrize("name", ["erf", "relu", "identity"])
def test_in_place_separable_kernel_equals_closed_form(name):
    act = get_activation(name)
    assert act.separable is not None
    a = torch.tensor([[0.0], [0.5], [2.0]], dtype=torch.float64)
    c = torch.tensor([[0.3, 0.0, 1.7]], dtype=torch.float64)
    b = torch.sqrt(a * c) * torch.tensor([[0.2, -1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(act.kernel_(a, b.clone(), c), act.kernel(a, b, c), atol=1e-14)


@pytest.mark.parametrize("name", ["erf", "relu", "identity", "tanh"])
def test_link_prepared_rows_give_the_closed_kernel(name):
    # Blocks and test-side contractions scale the patch rows by t(|x|²) before the dot products
    # (`link_inputs`); tanh has no separable form and takes the quadrature path unchanged.
    act = get_activation(name)
    x, x_test = _images(n=6, side=8), _images(n=3, side=8, seed=9)
    rows = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows[1] = 0.0  # a zero patch (ReLU's scale is defined as 0 there)
    norms = (rows**2).sum(-1)
    linked = act.link_inputs(rows, norms)
    expected = act.kernel(norms[:, None], rows @ rows.T, norms[None, :])
    assert torch.allclose(act.kernel_from_linked_(norms[:, None], linked @ linked.T,
                                                  norms[None, :]), expected, atol=1e-13)
    full = local_cross_blocks(x_test, x, mask=4, stride=2, activation=name)  # (Np, Np, 3, 6)
    blocks = compute_local_blocks(x, mask=4, stride=2, activation=name)
    assert torch.allclose(blocks.full(), local_cross_blocks(x, x, 4, 2, activation=name),
                          atol=1e-13)
    weights = torch.randn(9, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    local = LocalKernel(x, 4, 2, activation=name)
    assert torch.allclose(local.contract_cross(weights, x_test),
                          torch.einsum("ij,ijtb->tb", weights, full), atol=1e-12)
    assert torch.allclose(local.contract_cross_diagonal(torch.diagonal(weights), x_test),
                          torch.einsum("i,iitb->tb", torch.diagonal(weights), full), atol=1e-12)
