"""Sphere products (docs/math/spectra.md §6): Gegenbauer normalisation and orthogonality
under Gauss–Jacobi, eigenvalues against independent integrals (scipy quad on S², exact DFT on
the torus S¹×S¹), Funk–Hecke reconstruction, and the n0^{−|k|} scaling of the learning index."""

import math

import pytest
import scipy.integrate
import scipy.special
import torch

from krenorm.spectra.dual import tree_kernel
from krenorm.spectra.sphere import (
    gegenbauer_polynomials,
    harmonic_multiplicity,
    sphere_measure_rule,
    sphere_product_spectrum,
)
from krenorm.spectra.trees import ArchitectureTree, TreeNode, mlp_tree


@pytest.mark.parametrize("dimension", [2, 3, 7, 60])
def test_gegenbauer_polynomials_are_orthogonal_with_harmonic_norms(dimension):
    points, weights = sphere_measure_rule(dimension, 30)
    polynomials = gegenbauer_polynomials(8, dimension, points)
    gram = (polynomials * weights) @ polynomials.T
    norms = torch.tensor([1 / harmonic_multiplicity(dimension, k) for k in range(9)])
    assert torch.allclose(gram, torch.diag(norms.to(torch.float64)), atol=1e-14)
    at_one = gegenbauer_polynomials(8, dimension, torch.ones(1, dtype=torch.float64))
    assert torch.allclose(at_one, torch.ones_like(at_one))


def test_harmonic_multiplicities():
    assert [harmonic_multiplicity(2, k) for k in range(4)] == [1, 2, 2, 2]
    assert [harmonic_multiplicity(3, k) for k in range(4)] == [1, 3, 5, 7]
    assert harmonic_multiplicity(5, 2) == 14  # symmetric traceless 5×5 matrices


def test_single_sphere_eigenvalues_match_scipy_quadrature_on_s2():
    # On S² (n = 3): ν(t) = 1/2 on [−1, 1] and P_k are the Legendre polynomials.
    tree = mlp_tree(3, 2, "erf", bias_variance=0.3)
    spectrum = sphere_product_spectrum(tree, 6, nodes=64)

    def kernel(t):
        return float(tree_kernel(tree, torch.tensor([[t]], dtype=torch.float64))[0])

    for k in range(7):
        reference, _ = scipy.integrate.quad(
            lambda t, k=k: 0.5 * kernel(t) * scipy.special.eval_legendre(k, t), -1, 1, epsabs=1e-13
        )
        assert spectrum.eigenvalue((k,)) == pytest.approx(reference, abs=1e-12)
        assert spectrum.multiplicities[k] == 2 * k + 1


def test_torus_eigenvalues_equal_the_two_dimensional_dft():
    # Two circles (n0 = 2): harmonics cos/sin(k θ), P_k(cos θ) = cos(kθ); for a kernel of
    # (cos θ1, cos θ2) the eigenvalue is the DFT coefficient of F on a uniform angle grid (exact
    # for trigonometric polynomials below the grid size, and F is analytic: aliasing ~1e-16).
    nodes = (
        TreeNode(coordinates=(0, 1)),
        TreeNode(coordinates=(2, 3)),
        TreeNode((0,), (), "erf", 1.0, 0.2),
        TreeNode((1,), (), "erf", 1.0, 0.2),
        TreeNode((2, 3), (), "erf", 1.5, 0.1),
    )
    tree = ArchitectureTree(nodes, 4)
    spectrum = sphere_product_spectrum(tree, 4, kind="ntk", nodes=48)
    grid = 64
    angles = 2 * math.pi * torch.arange(grid, dtype=torch.float64) / grid
    cosines = torch.cos(angles)
    overlaps = torch.cartesian_prod(cosines, cosines)
    values = tree_kernel(tree, overlaps, "ntk").reshape(grid, grid)
    coefficients = torch.fft.fft2(values).real / grid**2
    for k1 in range(5):
        for k2 in range(5):
            assert spectrum.eigenvalue((k1, k2)) == pytest.approx(
                float(coefficients[k1, k2]), abs=1e-13
            )
            assert spectrum.multiplicities[spectrum.degrees.index((k1, k2))] == (
                harmonic_multiplicity(2, k1) * harmonic_multiplicity(2, k2)
            )


def test_funk_hecke_sum_reconstructs_the_kernel():
    tree = mlp_tree(5, 1, "relu", bias_variance=0.2)
    spectrum = sphere_product_spectrum(tree, 40, nodes=200)
    t = torch.linspace(-0.95, 0.95, 9, dtype=torch.float64)
    polynomials = gegenbauer_polynomials(40, 5, t)
    series = sum(
        spectrum.eigenvalues[k] * spectrum.multiplicities[k] * polynomials[k] for k in range(41)
    )
    # The relu kernel has a √(1 − t²) endpoint singularity: the degree-40 truncation is ~1e-7.
    assert torch.allclose(series, tree_kernel(tree, t[:, None]), atol=1e-6)


def test_identity_network_has_only_degree_one():
    spectrum = sphere_product_spectrum(mlp_tree(6, 1, "identity"), 3, nodes=8)
    assert spectrum.eigenvalue((1,)) == pytest.approx(1 / 6, abs=1e-15)
    assert all(abs(spectrum.eigenvalue((k,))) < 1e-15 for k in (0, 2, 3))


def two_patch_tree(patch_dimension):
    """Two spheres of dimension n0, a hidden erf node on each, joined by a hidden erf root."""
    n0 = patch_dimension
    nodes = (
        TreeNode(coordinates=tuple(range(n0))),
        TreeNode(coordinates=tuple(range(n0, 2 * n0))),
        TreeNode((0,), (), "erf", 1.0, 0.3),
        TreeNode((1,), (), "erf", 1.0, 0.3),
        TreeNode((2, 3), (), "erf", 1.0, 0.3),
    )
    return ArchitectureTree(nodes, 2 * n0)


def test_eigenvalues_scale_as_n0_to_minus_the_degree():
    # Learning index with fixed fan-in: λ_k = Θ(n0^{−|k|}). λ_k n0^{|k|} changes by < 5 % when
    # n0 doubles from 100 to 200 (measured ≤ 2 %); a wrong exponent would change it 2-fold.
    profiles = [(1, 0), (0, 2), (1, 1), (2, 1), (0, 3)]
    scaled = {}
    for n0 in (100, 200):
        spectrum = sphere_product_spectrum(two_patch_tree(n0), 3, nodes=40)
        scaled[n0] = [spectrum.eigenvalue(k) * n0 ** sum(k) for k in profiles]
    for small, large in zip(scaled[100], scaled[200], strict=True):
        assert large > 0 and abs(large / small - 1) < 0.05


def test_sphere_inputs_are_validated():
    with pytest.raises(ValueError, match="n must be >= 2"):
        sphere_measure_rule(1, 10)
    overlapping = ArchitectureTree(
        (TreeNode(coordinates=(0, 1)), TreeNode(coordinates=(1, 2)), TreeNode((0, 1), (), "erf")),
        3,
    )
    with pytest.raises(ValueError, match="disjoint"):
        sphere_product_spectrum(overlapping, 2)
    with pytest.raises(ValueError, match="grid points"):
        sphere_product_spectrum(two_patch_tree(3), 2, nodes=5000)
