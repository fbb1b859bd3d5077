"""Spectra of tree kernels on products of spheres (docs/math/spectra.md §6).

Input: p patches, patch v on the sphere √n_v·S^{n_v−1}; the kernel is F(t_1..t_p) with
t_v = ⟨x_v, y_v⟩/n_v. Its eigenfunctions are products of spherical harmonics, with eigenvalue

    λ_k = E_{t_v ~ ν_{n_v}} [F(t) Π_v P_{k_v}(t_v)],   multiplicity Π_v N(n_v, k_v),

where ν_n ∝ (1 − t²)^{(n−3)/2} on [−1, 1] is the law of ⟨x, y⟩ for uniform unit vectors, P_k the
Gegenbauer polynomial normalised to P_k(1) = 1 (E[P_k P_l] = δ_kl/N(n, k)), and
N(n, k) = C(n+k−1, k) − C(n+k−3, k−2) the number of degree-k harmonics. The expectation is a
tensor-product Gauss–Jacobi rule (weight (1−t)^a (1+t)^a, a = (n−3)/2), exact when F is a
polynomial of degree < 2·nodes − k in each t_v.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from scipy.special import roots_jacobi

from krenorm.memory import check_allocation
from krenorm.spectra.dual import KernelKind, tree_kernel
from krenorm.spectra.trees import ArchitectureTree

#: Largest tensor-product grid (points) evaluated at once.
MAX_GRID_POINTS = 2**22


def sphere_measure_rule(dimension: int, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Jacobi nodes and weights (summing to 1) for ν_n ∝ (1 − t²)^{(n−3)/2}, n ≥ 2."""
    if dimension < 2:
        raise ValueError(f"sphere dimension n must be >= 2 (S^{{n-1}}), got {dimension}.")
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}.")
    exponent = (dimension - 3) / 2
    points, weights = roots_jacobi(nodes, exponent, exponent)
    weights = weights / weights.sum()
    return (
        torch.as_tensor(points, dtype=torch.float64),
        torch.as_tensor(weights, dtype=torch.float64),
    )


def gegenbauer_polynomials(max_degree: int, dimension: int, t: torch.Tensor) -> torch.Tensor:
    """P_0..P_K at t, shape (K+1, *t.shape), normalised so P_k(1) = 1.

    Three-term recurrence P_{k+1} = ((2k + n − 2) t P_k − k P_{k−1}) / (k + n − 2), P_0 = 1,
    P_1 = t (n = 2 gives the Chebyshev polynomials T_k).
    """
    if max_degree < 0:
        raise ValueError(f"max_degree must be >= 0, got {max_degree}.")
    if dimension < 2:
        raise ValueError(f"sphere dimension n must be >= 2, got {dimension}.")
    t = t.to(torch.float64)
    polynomials = [torch.ones_like(t)]
    if max_degree >= 1:
        polynomials.append(t.clone())
    for k in range(1, max_degree):
        following = ((2 * k + dimension - 2) * t * polynomials[k] - k * polynomials[k - 1]) / (
            k + dimension - 2
        )
        polynomials.append(following)
    return torch.stack(polynomials)


def harmonic_multiplicity(dimension: int, degree: int) -> int:
    """N(n, k) = C(n+k−1, k) − C(n+k−3, k−2): spherical harmonics of degree k on S^{n−1}."""
    if dimension < 2 or degree < 0:
        raise ValueError(f"need n >= 2 and k >= 0, got n={dimension}, k={degree}.")
    lower = math.comb(dimension + degree - 3, degree - 2) if degree >= 2 else 0
    return math.comb(dimension + degree - 1, degree) - lower


@dataclass(frozen=True)
class SphereProductSpectrum:
    """λ_k and Π_v N(n_v, k_v) for every degree profile k with 0 ≤ k_v ≤ max_degree."""

    degrees: tuple[tuple[int, ...], ...]
    eigenvalues: tuple[float, ...]
    multiplicities: tuple[int, ...]
    patch_dimensions: tuple[int, ...]
    kind: str
    architecture: str

    def eigenvalue(self, degrees: tuple[int, ...]) -> float:
        return self.eigenvalues[self.degrees.index(tuple(degrees))]

    def to_dict(self) -> dict:
        return {
            "degrees": [list(k) for k in self.degrees],
            "eigenvalues": list(self.eigenvalues),
            "multiplicities": list(self.multiplicities),
            "patch_dimensions": list(self.patch_dimensions),
            "kind": self.kind,
            "architecture": self.architecture,
        }


def sphere_product_spectrum(
    tree: ArchitectureTree,
    max_degree: int,
    kind: KernelKind = "nngp",
    nodes: int = 64,
    memory_limit: int | None = None,
) -> SphereProductSpectrum:
    """Eigenvalues of the tree kernel on Π_v √n_v S^{n_v−1}, one sphere per leaf (n_v = |leaf|).

    The kernel is evaluated on the nodes^p tensor grid and contracted axis by axis with
    w·P_k, so the cost is nodes^p kernel evaluations plus O(p·nodes^p·(K+1)).
    """
    leaves = tree.leaves
    seen: set[int] = set()
    for leaf in leaves:
        coordinates = set(tree.nodes[leaf].coordinates)
        if coordinates & seen:
            raise ValueError("sphere products need disjoint leaves (one sphere per patch).")
        seen |= coordinates
    n_patches = len(leaves)
    grid_points = nodes**n_patches
    if grid_points > MAX_GRID_POINTS:
        raise ValueError(
            f"{nodes}^{n_patches} = {grid_points} grid points exceed {MAX_GRID_POINTS}; use fewer "
            "quadrature nodes or fewer patches."
        )
    check_allocation(
        "the quadrature grid", grid_points * (n_patches + 1), torch.float64, memory_limit
    )
    dimensions = tuple(len(tree.nodes[leaf].coordinates) for leaf in leaves)
    rules = [sphere_measure_rule(n, nodes) for n in dimensions]
    grid = torch.cartesian_prod(*[points for points, _ in rules]).reshape(grid_points, n_patches)
    values = tree_kernel(tree, grid, kind).reshape((nodes,) * n_patches)
    for axis, (n, (points, weights)) in enumerate(zip(dimensions, rules, strict=True)):
        projector = gegenbauer_polynomials(max_degree, n, points) * weights  # (K+1, nodes)
        values = torch.tensordot(values, projector, dims=([axis], [1])).movedim(-1, axis)
    profiles = tuple(itertools.product(range(max_degree + 1), repeat=n_patches))
    eigenvalues = tuple(float(values[profile]) for profile in profiles)
    multiplicities = tuple(
        math.prod(harmonic_multiplicity(n, k) for n, k in zip(dimensions, profile, strict=True))
        for profile in profiles
    )
    return SphereProductSpectrum(profiles, eigenvalues, multiplicities, dimensions, kind, tree.name)
