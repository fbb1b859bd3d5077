"""Deep infinite-width kernels (docs/math/deep.md §2): exact reductions to the one-layer kernels
and Monte-Carlo averages of wide random deep networks (krenorm.networks.deep_modules)."""

from __future__ import annotations

import pytest
import torch

from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.kernels.deep import (
    deep_fc_kernel,
    deep_fc_kernel_diagonal,
    deep_local_blocks,
    deep_local_cross_blocks,
    deep_local_diagonal_blocks,
    deep_local_test_diagonals,
    layer_offsets,
)
from krenorm.kernels.grams import (
    compute_local_blocks,
    fc_kernel,
    local_cross_blocks,
    local_test_diagonals,
)
from krenorm.kernels.patches import PatchGeometry
from krenorm.networks.deep_modules import DeepFullPosterior, DeepNetwork
from krenorm.networks.transitions import HMCKernel


def _images(n: int, seed: int, shape: tuple[int, int, int] = (2, 7, 7)) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_depth_one_equals_the_one_layer_kernels():
    x, z = _images(5, 0), _images(3, 1)
    geometry = PatchGeometry(3, 2, 1)
    for activation in ("erf", "relu"):
        assert torch.allclose(deep_local_blocks(x, [geometry], activation, [1.3]).pairs,
                              compute_local_blocks(x, geometry, activation=activation,
                                                   lambda0=1.3).pairs, atol=1e-14)
        assert torch.allclose(deep_local_cross_blocks(z, x, [geometry], activation, [1.3]),
                              local_cross_blocks(z, x, geometry, activation=activation,
                                                 lambda0=1.3), atol=1e-14)
        assert torch.allclose(deep_local_test_diagonals(z, [geometry], activation, [1.3]),
                              local_test_diagonals(z, geometry, activation=activation,
                                                   lambda0=1.3), atol=1e-14)
        assert torch.allclose(deep_fc_kernel(x, z, activation, [1.3, 2.0]),
                              fc_kernel(x, z, activation, 1.3) / 2.0, atol=1e-15)


def test_train_cross_and_test_sides_agree():
    """The pair-stored training blocks, the cross blocks of x against itself, the test
    diagonals and the LCN diagonal blocks are four code paths of one recursion."""
    x = _images(4, 2)
    geometries = [PatchGeometry(3, 1, 1), PatchGeometry(2, 2, 1), PatchGeometry(2, 1, 0)]
    priors = [1.0, 1.5, 0.7]
    full = deep_local_blocks(x, geometries, "erf", priors).full()
    assert torch.allclose(full, deep_local_cross_blocks(x, x, geometries, "erf", priors),
                          atol=1e-14)
    diagonals = deep_local_test_diagonals(x, geometries, "erf", priors)
    assert torch.allclose(torch.diagonal(full, dim1=-2, dim2=-1), diagonals, atol=1e-14)
    blocks = deep_local_diagonal_blocks(x, geometries, "erf", priors)
    assert torch.allclose(blocks, torch.diagonal(full, dim1=0, dim2=1).permute(2, 0, 1),
                          atol=1e-14)
    fc = deep_fc_kernel(x, None, "relu", [1.0, 2.0, 0.5])
    assert torch.allclose(torch.diagonal(fc), deep_fc_kernel_diagonal(x, "relu", [1.0, 2.0, 0.5]))


def test_offsets_follow_conv2d_padding_and_stride():
    out_grid, table = layer_offsets(PatchGeometry(3, 2, 1), (5, 5))
    assert out_grid == (3, 3)
    # output (0, 0) reads rows/cols −1..1: the first row and column are padding.
    assert table[0].tolist() == [-1, -1, -1, -1, 0, 1, -1, 5, 6]
    assert table[4].tolist() == [6, 7, 8, 11, 12, 13, 16, 17, 18]


def _monte_carlo(spec: DeepArchitectureSpec, x: torch.Tensor, widths: list[int],
                 priors: list[float], replicas: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    network = DeepNetwork(spec, tuple(x.shape[1:]) if spec.is_convolutional else
                          (x[0].numel(),), widths, priors, replicas=replicas,
                          generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        kernels = network.empirical_kernel(x if spec.is_convolutional else x.reshape(len(x), -1))
    return kernels.mean(0), kernels.std(0) / replicas**0.5


def _check_within_standard_error(estimate: torch.Tensor, error: torch.Tensor,
                                 exact: torch.Tensor) -> None:
    # 4 SE per entry: with ~30 entries a 4σ excursion has probability ~2e-3 for a fresh seed;
    # the seeds are fixed, and a wrong recursion (a missing 1/m, the wrong padding) is off by
    # tens of SE.
    z = (estimate - exact).abs() / error
    assert float(z.max()) < 4.0, (float(z.max()), estimate, exact)


@pytest.mark.parametrize("activation,depth", [("erf", 2), ("relu", 3)])
def test_deep_fc_kernel_matches_wide_random_networks(activation: str, depth: int):
    x = _images(5, 3).reshape(5, -1)
    priors = [1.0, 1.3, 0.8, 1.1][:depth + 1]
    exact = deep_fc_kernel(x, None, activation, priors)
    estimate, error = _monte_carlo(DeepArchitectureSpec("fc", activation, depth), x,
                                   [1000] * depth, priors, 30, 11)
    _check_within_standard_error(estimate, error, exact)


@pytest.mark.parametrize("kind,activation,geometries", [
    ("cnn", "erf", [PatchGeometry(3, 2, 1), PatchGeometry(2, 1, 1)]),
    ("cnn", "relu", [PatchGeometry(3, 1, 0), PatchGeometry(2, 2, 1), PatchGeometry(2, 1, 0)]),
    ("cnn-gap", "erf", [PatchGeometry(3, 2, 1), PatchGeometry(2, 1, 1)]),
    ("lcn", "erf", [PatchGeometry(3, 2, 1), PatchGeometry(2, 1, 1)]),
])
def test_deep_local_kernels_match_wide_random_networks(kind, activation, geometries):
    x = _images(4, 4)
    depth = len(geometries)
    priors = [1.0, 1.3, 0.8, 1.1][:depth + 1]
    blocks = deep_local_blocks(x, geometries, activation, priors[:-1])
    n_positions = blocks.n_patches
    if kind == "cnn-gap":
        weights = torch.ones(n_positions, n_positions, dtype=torch.float64) / n_positions**2
        exact = blocks.contract(weights) / priors[-1]
    else:  # no pooling: (1/d) Σ_i K_ii for CNN and LCN alike
        exact = blocks.diagonal_blocks().sum(0) / (n_positions * priors[-1])
    spec = DeepArchitectureSpec(kind, activation, depth, geometries)
    # An LCN has a filter per position: fewer channels keep its weights small.
    width, replicas = (100, 30) if kind == "lcn" else (400, 40)
    estimate, error = _monte_carlo(spec, x, [width] * depth, priors, replicas, 12)
    _check_within_standard_error(estimate, error, exact)


def test_deep_posterior_potential_and_a_sampler_step():
    """U = (1/2T)|f − y|² + Σ (λ/2)|θ|² per replica, with every layer sampled by the existing
    transition kernels (one HMC step moves all layers and keeps U finite)."""
    x = _images(6, 5)
    y = torch.linspace(-1, 1, 6, dtype=torch.float64)
    spec = DeepArchitectureSpec("cnn", "erf", 2, [PatchGeometry(3, 2, 1), PatchGeometry(2)])
    network = DeepNetwork(spec, (2, 7, 7), [3, 3], [1.0, 2.0, 0.5], replicas=2,
                          generator=torch.Generator().manual_seed(3))
    density = DeepFullPosterior(network, x, y, temperature=0.3)
    with torch.no_grad():
        expected = ((network(x) - y) ** 2).sum(1) / 0.6
        for parameter, precision in zip([*network.layers, network.readout], [1.0, 2.0, 0.5],
                                        strict=True):
            expected += 0.5 * precision * parameter.pow(2).flatten(1).sum(1)
        assert torch.allclose(density.potential(), expected)
    before = [p.detach().clone() for p in density.parameters()]
    kernel = HMCKernel(density, 0.01, torch.Generator().manual_seed(4), leapfrog_steps=3)
    statistics = kernel.step()
    assert torch.isfinite(statistics.potential).all()
    moved = [not torch.equal(a, b) for a, b in zip(before, density.parameters(), strict=True)]
    assert all(moved)
