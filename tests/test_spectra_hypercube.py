"""Hypercube spectra (docs/math/spectra.md §3): WHT vs dense diagonalisation,
the one-layer cyclic convolution theorem, local pooling by cyclic shifts, MLP degeneracy,
bias parity, grouping, and agreement with the foundation's CNN kernel."""

import itertools
import math

import pytest
import scipy.linalg
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels import get_activation, nngp_kernel
from krenorm.spectra.dual import tree_kernel
from krenorm.spectra.grouping import group_by_degree_profile, group_by_frequency_and_extent
from krenorm.spectra.hypercube import (
    cyclic_extent,
    cyclic_pooling_factor,
    hypercube_kernel_values,
    hypercube_spectrum,
    linear_extent,
    pooled_cyclic_spectrum,
    popcount,
    subset_sizes,
    walsh_hadamard_transform,
)
from krenorm.spectra.trees import ArchitectureTree, TreeNode, cnn_tree, lcn_tree, mlp_tree


def all_points(dimension):
    """Every x ∈ {±1}^d, row index = bit mask of the −1 entries."""
    masks = torch.arange(1 << dimension)
    return 1.0 - 2.0 * ((masks[:, None] >> torch.arange(dimension)) & 1).to(torch.float64)


def dense_gram(tree, kind="nngp"):
    """K(x, y) over all pairs, from leaf overlaps ⟨x_v, y_v⟩/|v| of the actual pairs (no XOR)."""
    points = all_points(tree.input_dimension)
    leaf_overlaps = torch.stack(
        [
            points[:, list(tree.nodes[v].coordinates)]
            @ points[:, list(tree.nodes[v].coordinates)].T
            / len(tree.nodes[v].coordinates)
            for v in tree.leaves
        ],
        dim=-1,
    )
    size = points.shape[0]
    return tree_kernel(tree, leaf_overlaps.reshape(size * size, -1), kind).reshape(size, size)


def test_walsh_hadamard_transform_matches_the_sylvester_matrix():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, 64, generator=generator, dtype=torch.float64)
    hadamard = torch.as_tensor(scipy.linalg.hadamard(64), dtype=torch.float64)
    assert torch.allclose(walsh_hadamard_transform(values), values @ hadamard.T, atol=1e-12)
    # Involution up to 2^d, and the input is untouched unless inplace.
    copy = values.clone()
    twice = walsh_hadamard_transform(walsh_hadamard_transform(values)) / 64
    assert torch.allclose(twice, values, atol=1e-12) and torch.equal(values, copy)
    with pytest.raises(ValueError, match="2\\^d"):
        walsh_hadamard_transform(torch.ones(6))


OVERLAPPING_DAG = cnn_tree(7, [3, 2], strides=[1, 1], activation="erf", bias_variance=0.3)


@pytest.mark.parametrize(
    ("tree", "kind"),
    [
        (mlp_tree(7, depth=2, activation="relu", bias_variance=0.4), "nngp"),
        (cnn_tree(8, [2, 2], activation="relu", bias_variance=0.3), "ntk"),
        (OVERLAPPING_DAG, "nngp"),
        (OVERLAPPING_DAG, "ntk"),
        (cnn_tree(6, [3], strides=[1], activation="tanh", cyclic=True), "ntk"),
    ],
)
def test_wht_spectrum_equals_dense_diagonalisation(tree, kind):
    spectrum = hypercube_spectrum(tree, kind)
    gram = dense_gram(tree, kind)
    size = gram.shape[0]
    dense = torch.linalg.eigvalsh(gram) / size
    assert torch.allclose(dense, spectrum.eigenvalues.sort().values, atol=1e-12, rtol=0)
    # Eigenvectors too: the Gram matrix maps χ_S to 2^d λ_S χ_S.
    points = all_points(tree.input_dimension)
    for mask in (0, 1, 5, size - 1):
        walsh = points[:, [i for i in range(tree.input_dimension) if mask >> i & 1]].prod(1)
        assert torch.allclose(gram @ walsh, size * spectrum.eigenvalues[mask] * walsh, atol=1e-10)


def test_profile_table_and_chunking_do_not_change_the_kernel_values():
    tree = cnn_tree(9, [3, 3], activation="erf", bias_variance=0.2)
    tabulated = hypercube_kernel_values(tree, "ntk")  # 4³ = 64 leaf-count profiles
    direct = hypercube_kernel_values(tree, "ntk", tabulate=False)
    chunked = hypercube_kernel_values(tree, "ntk", chunk_bytes=4096, tabulate=False)
    assert torch.allclose(tabulated, direct, atol=1e-15, rtol=0)
    assert torch.equal(direct, chunked)


def test_cnn_tree_kernel_matches_the_foundation_cnn_kernel():
    # One conv layer, patches of 3, stride 3, dense readout: krenorm.kernels' 'cnn' NNGP.
    generator = torch.Generator().manual_seed(1)
    images = torch.sign(torch.randn(5, 1, 1, 9, generator=generator, dtype=torch.float64))
    spec = ArchitectureSpec("cnn", "erf", mask=(1, 3), stride=(1, 3))
    reference = nngp_kernel(spec, images)
    tree = cnn_tree(9, [3], activation="erf")
    flat = images.reshape(5, 9)
    overlaps = torch.stack(
        [flat[:, 3 * v : 3 * v + 3] @ flat[:, 3 * v : 3 * v + 3].T / 3 for v in range(3)], -1
    )
    ours = tree_kernel(tree, overlaps.reshape(25, 3)).reshape(5, 5)
    assert torch.allclose(ours, reference, atol=1e-12)
    # Locally connected: the foundation's 'lcn' kernel and `lcn_tree` give the same numbers.
    lcn_reference = nngp_kernel(ArchitectureSpec("lcn", "erf", mask=(1, 3), stride=(1, 3)), images)
    lcn = tree_kernel(lcn_tree(9, [3], activation="erf"), overlaps.reshape(25, 3)).reshape(5, 5)
    assert torch.allclose(lcn, lcn_reference, atol=1e-12)


def subset_walsh_coefficient(kernel, patch_size, degree):
    """ξ_ℓ = 2^{-q} Σ_z h(mean z) z_1⋯z_ℓ by brute force over {±1}^q."""
    points = all_points(patch_size)
    values = kernel(points.mean(1))
    return float((values * points[:, :degree].prod(1)).mean())


def cyclic_diameter(subset, dimension):
    """γ(S) by brute force: shortest cyclic window containing S."""
    if not subset:
        return 0
    return min(
        length
        for length in range(1, dimension + 1)
        for start in range(dimension)
        if set(subset) <= {(start + t) % dimension for t in range(length)}
    )


ERF_BIAS = 0.5


def erf_patch_kernel(overlap):
    """h(t) = κ_erf with pre-activation covariance t + σ_b², variance 1 + σ_b²."""
    variance = torch.full_like(overlap, 1 + ERF_BIAS)
    return get_activation("erf").kernel(variance, overlap + ERF_BIAS, variance)


@pytest.mark.parametrize(("dimension", "patch_size"), [(10, 3), (9, 4)])
def test_one_layer_cyclic_convolution_eigenvalues(dimension, patch_size):
    # λ_∅ = ξ_0; λ_S = (q + 1 − γ(S)) ξ_|S| / d for γ(S) ≤ q, else 0. Exact when d ≥ 2q (a
    # window of length q then contains S in exactly q + 1 − γ ways).
    tree = cnn_tree(
        dimension, [patch_size], strides=[1], activation="erf", bias_variance=ERF_BIAS, cyclic=True
    )
    spectrum = hypercube_spectrum(tree).eigenvalues
    xi = [subset_walsh_coefficient(erf_patch_kernel, patch_size, k) for k in range(patch_size + 1)]
    assert min(abs(x) for x in xi) > 1e-4  # biased erf: every degree present
    for mask in range(1 << dimension):
        subset = [i for i in range(dimension) if mask >> i & 1]
        gamma = cyclic_diameter(subset, dimension)
        if not subset:
            expected = xi[0]
        elif gamma <= patch_size:
            expected = (patch_size + 1 - gamma) * xi[len(subset)] / dimension
        else:
            expected = 0.0
        assert abs(float(spectrum[mask]) - expected) < 1e-13, subset


def direct_pooled_gram(dimension, patch_size, width):
    """K(x,y) = (1/d) Σ_j (1/ω) Σ_{t,t'<ω} h(⟨x_(j+t), y_(j+t')⟩/q), cyclic patches x_(k),
    straight from the network: shared filter, local average pooling of width ω, dense readout."""
    points = all_points(dimension)
    patches = torch.stack(
        [points[:, [(k + t) % dimension for t in range(patch_size)]] for k in range(dimension)], 1
    )  # (2^d, d, q)
    overlaps = torch.einsum("akq,blq->abkl", patches, patches) / patch_size
    weights = torch.zeros(dimension, dimension, dtype=torch.float64)
    for j, t, t_prime in itertools.product(range(dimension), range(width), range(width)):
        weights[(j + t) % dimension, (j + t_prime) % dimension] += 1 / (dimension * width)
    return torch.einsum("abkl,kl->ab", erf_patch_kernel(overlaps), weights)


@pytest.mark.parametrize("width", [2, 3])
def test_local_pooling_multiplies_by_the_cyclic_factor(width):
    dimension, patch_size = 8, 3
    gram = direct_pooled_gram(dimension, patch_size, width)
    size = gram.shape[0]
    dense = torch.linalg.eigvalsh(gram) / size
    tree = cnn_tree(
        dimension, [patch_size], strides=[1], activation="erf", bias_variance=ERF_BIAS, cyclic=True
    )
    unpooled = hypercube_spectrum(tree)
    pooled = pooled_cyclic_spectrum(unpooled, width)
    assert torch.allclose(pooled.eigenvalues.sort().values, dense, atol=1e-12, rtol=0)

    # The stated result: orbit {S + t} of a subset with γ(S) ≤ q has eigenfunctions
    # Σ_t e^{2πi j t/d} χ_{S+t}, eigenvalue (q + 1 − γ) ξ_ℓ / d · F(j), j = 0..d−1.
    xi = [subset_walsh_coefficient(erf_patch_kernel, patch_size, k) for k in range(patch_size + 1)]
    expected = []
    seen = set()
    for mask in range(1 << dimension):
        subset = frozenset(i for i in range(dimension) if mask >> i & 1)
        orbit = {frozenset((i + t) % dimension for i in subset) for t in range(dimension)}
        if frozenset(orbit) in seen:
            continue
        seen.add(frozenset(orbit))
        gamma = cyclic_diameter(subset, dimension)
        if not subset:
            base = xi[0]
        elif gamma <= patch_size:
            base = (patch_size + 1 - gamma) * xi[len(subset)] / dimension
        else:
            base = 0.0
        size_of_orbit = len(orbit)
        for j in range(size_of_orbit):
            frequency = j * dimension // size_of_orbit
            expected.append(base * float(cyclic_pooling_factor(frequency, width, dimension)))
    expected = torch.tensor(sorted(expected), dtype=torch.float64)
    assert torch.allclose(expected, dense, atol=1e-12, rtol=0)

    # Which frequency: S = {0, 1}, the real eigenvector Σ_t cos(2π j t/d) χ_{S+t}.
    points = all_points(dimension)
    base = (patch_size + 1 - 2) * xi[2] / dimension
    for j in range(dimension):
        vector = sum(
            math.cos(2 * math.pi * j * t / dimension)
            * points[:, [t % dimension, (t + 1) % dimension]].prod(1)
            for t in range(dimension)
        )
        factor = float(cyclic_pooling_factor(j, width, dimension))
        assert torch.allclose(gram @ vector, size * base * factor * vector, atol=1e-10)


def test_pooling_factor_is_the_fejer_kernel_and_pooling_needs_shift_invariance():
    # F(0) = ω and F(f) = sin²(πωf/d) / (ω sin²(πf/d)) otherwise.
    dimension, width = 12, 4
    assert float(cyclic_pooling_factor(0, width, dimension)) == pytest.approx(width)
    for f in range(1, dimension):
        fejer = math.sin(math.pi * width * f / dimension) ** 2 / (
            width * math.sin(math.pi * f / dimension) ** 2
        )
        assert float(cyclic_pooling_factor(f, width, dimension)) == pytest.approx(fejer, abs=1e-12)
    not_cyclic = hypercube_spectrum(cnn_tree(6, [2], activation="relu"))
    with pytest.raises(ValueError, match="cyclic"):
        pooled_cyclic_spectrum(not_cyclic, 2)


@pytest.mark.parametrize(("activation", "bias"), [("relu", 0.0), ("relu", 0.7), ("erf", 0.3)])
def test_mlp_eigenvalues_depend_only_on_the_subset_size(activation, bias):
    dimension = 11
    spectrum = hypercube_spectrum(
        mlp_tree(dimension, depth=2, activation=activation, bias_variance=bias)
    )
    sizes = popcount(spectrum.masks, dimension)
    for size in range(dimension + 1):
        values = spectrum.eigenvalues[sizes == size]
        assert float(values.max() - values.min()) < 1e-14, size


def test_biases_fill_the_degrees_that_relu_and_erf_leave_empty():
    dimension = 9
    sizes = popcount(torch.arange(1 << dimension), dimension)

    def by_degree(activation, bias):
        spectrum = hypercube_spectrum(mlp_tree(dimension, 1, activation, bias_variance=bias))
        return [float(spectrum.eigenvalues[sizes == k][0]) for k in range(dimension + 1)]

    relu, erf = by_degree("relu", 0.0), by_degree("erf", 0.0)
    # ReLU κ(ρ) = ρ/4 + even function: odd degrees ≥ 3 vanish. erf κ is odd: even degrees vanish.
    assert all(abs(relu[k]) < 1e-16 for k in range(3, dimension + 1, 2))
    assert all(relu[k] > 1e-8 for k in (0, 1, *range(2, dimension + 1, 2)))
    assert all(abs(erf[k]) < 1e-16 for k in range(0, dimension + 1, 2))
    for activation in ("relu", "erf"):
        biased = by_degree(activation, 0.5)
        assert all(value > 1e-10 for value in biased), (activation, biased)


def test_degree_profile_groups_are_exact_eigenspaces_with_binomial_multiplicities():
    tree = cnn_tree(12, [3, 2], activation="relu", bias_variance=0.2)
    spectrum = hypercube_spectrum(tree, "ntk")
    groups = group_by_degree_profile(spectrum, tree)
    assert len(groups) == 4**4
    assert sum(g.group.multiplicity for g in groups) == 2**12
    for group in groups:
        expected = math.prod(math.comb(3, k) for k in group.degrees)
        assert group.group.multiplicity == expected
        assert group.group.maximum - group.group.minimum < 1e-15
        # Patches 0,1 share a layer-2 node, 2,3 another: T(k) spans both halves only if needed.
        touched = {v // 2 for v, k in enumerate(group.degrees) if k}
        if len(touched) == 2:
            assert group.group.maximum < 1e-15  # this depth-2 CNN never mixes the two halves
    with pytest.raises(ValueError, match="tree"):
        group_by_degree_profile(hypercube_spectrum(OVERLAPPING_DAG), OVERLAPPING_DAG)


def test_frequency_extent_labels_and_shallow_cnn_locality():
    dimension = 10
    masks = torch.arange(1 << dimension)
    for mask in (0b1, 0b101, 0b1000000001, 0b0110011000):
        subset = [i for i in range(dimension) if mask >> i & 1]
        assert int(linear_extent(masks[mask : mask + 1])) == max(subset) - min(subset) + 1
        assert int(cyclic_extent(masks[mask : mask + 1], dimension)) == cyclic_diameter(
            subset, dimension
        )
    small = 8
    every = torch.arange(1 << small)
    brute = [cyclic_diameter([i for i in range(small) if m >> i & 1], small) for m in range(256)]
    assert cyclic_extent(every, small).tolist() == brute
    assert torch.equal(subset_sizes(small), popcount(every, small))
    spectrum = hypercube_spectrum(cnn_tree(dimension, [2], activation="relu", bias_variance=0.1))
    for group in group_by_frequency_and_extent(spectrum):
        _, extent = group.label
        if extent > 2:  # beyond one patch of 2: zero; within: positive
            assert group.maximum < 1e-15
        else:
            assert group.maximum > 1e-6
    assert sum(g.multiplicity for g in group_by_frequency_and_extent(spectrum)) == 1 << dimension


def test_invalid_trees_are_refused_with_advice():
    with pytest.raises(ValueError, match="topological"):
        ArchitectureTree((TreeNode((1,), (), "relu"), TreeNode(coordinates=(0,))), 1)
    with pytest.raises(ValueError, match="outside"):
        ArchitectureTree((TreeNode(coordinates=(0, 5)), TreeNode((0,), (), "relu")), 3)
    with pytest.raises(ValueError, match="feed no parent"):
        ArchitectureTree(
            (TreeNode(coordinates=(0,)), TreeNode(coordinates=(1,)), TreeNode((0,), (), "relu")), 2
        )
    with pytest.raises(ValueError, match="unknown activation"):
        mlp_tree(4, 1, activation="swishy")
    with pytest.raises(ValueError, match="divide"):
        cnn_tree(7, [2], strides=[2], cyclic=True)
    with pytest.raises(ValueError, match="dimension"):
        hypercube_spectrum(mlp_tree(27, 1))
