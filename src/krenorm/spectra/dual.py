"""NNGP and NTK dual recursions on an architecture tree (docs/math/spectra.md §2).

Inputs are normalised (hypercube or product of spheres of radius √n0), so every leaf has
K_leaf(x, x) = 1 and K_leaf(x, y) = ⟨x_v, y_v⟩/n0 = t_v. For a hidden node u with children w:

    Σ̄_u = σ_w²·(1/c_u) Σ_w K_w + σ_b²        Θ̄_u = σ_w²·(1/c_u) Σ_w Θ_w + σ_b²
    K_u = κ_u(Σ̄_u)                            Θ_u = K_u + κ̇_u(Σ̄_u)·Θ̄_u,

with Θ_leaf = K_leaf, κ(a, b, c) = E[σ(u)σ(v)] and κ̇(a, b, c) = E[σ'(u)σ'(v)] for
(u, v) ~ N(0, [[a, b], [b, c]]). A weightless node (activation None) averages: K_u = mean K_w,
Θ_u = mean Θ_w. The network output is a linear readout of the root: NNGP K_root, NTK Θ_root.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch

from krenorm._validation import check_finite
from krenorm.kernels.activations import (
    Activation,
    ElementwiseFn,
    gauss_hermite_kernel,
    get_activation,
)
from krenorm.spectra.trees import ArchitectureTree

KernelKind = Literal["nngp", "ntk"]
KERNEL_KINDS: tuple[str, ...] = ("nngp", "ntk")

#: Gauss–Hermite nodes for κ̇ of activations without a closed form.
DERIVATIVE_QUADRATURE_NODES = 96


def _relu_derivative_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    norm = torch.sqrt(a * c)
    rho = torch.where(norm > 0, b / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
    return (math.pi - torch.acos(rho.clamp(-1.0, 1.0))) / (2 * math.pi)


def _erf_derivative_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (4 / math.pi) / torch.sqrt((1 + 2 * a) * (1 + 2 * c) - 4 * b**2)


def _identity_derivative_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(b)


def _square_derivative_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return 4 * b


_CLOSED_DERIVATIVE_KERNELS = {
    "relu": _relu_derivative_kernel,
    "erf": _erf_derivative_kernel,
    "identity": _identity_derivative_kernel,
    "square": _square_derivative_kernel,
}


def activation_derivative(activation: Activation) -> ElementwiseFn:
    """σ' as an elementwise function, by autograd through σ (used inside quadrature)."""

    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(activation.function(leaf).sum(), leaf)
        return gradient

    return derivative


def dual_kernel(
    activation: str | Activation, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """κ(a, b, c) = E[σ(u)σ(v)]: the foundation's closed forms or Gauss–Hermite quadrature."""
    return get_activation(activation).kernel(a, b, c)


def derivative_dual_kernel(
    activation: str | Activation, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """κ̇(a, b, c) = E[σ'(u)σ'(v)] (= ∂κ/∂b by Price's theorem).

    Closed forms: relu (π − arccos ρ)/(2π); erf (4/π)/√((1+2a)(1+2c) − 4b²); identity 1;
    square 4b. Otherwise Gauss–Hermite quadrature of σ' obtained by autograd.
    """
    act = get_activation(activation)
    a, b, c = torch.broadcast_tensors(a, b, c)
    closed = _CLOSED_DERIVATIVE_KERNELS.get(act.name)
    if closed is not None and act.closed_kernel is not None:
        return closed(a, b, c)
    return gauss_hermite_kernel(
        activation_derivative(act), a, b, c, nodes=DERIVATIVE_QUADRATURE_NODES
    )


def _on_unique_covariances(
    evaluate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    variance: torch.Tensor,
    covariance: torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """evaluate(a, b, a) for every covariance b; quadrature-only activations are evaluated once
    per distinct b (on the hypercube and quadrature grids there are few), closed forms directly."""
    act = get_activation(activation)
    if act.closed_kernel is not None and act.name in _CLOSED_DERIVATIVE_KERNELS:
        return evaluate(variance, covariance, variance)
    distinct, inverse = torch.unique(covariance, return_inverse=True)
    return evaluate(variance, distinct, variance)[inverse]


def _node_variances(tree: ArchitectureTree) -> list[torch.Tensor]:
    """Σ̄_u(x, x) for every internal node (K_leaf(x, x) = 1): the same for every input."""
    one = torch.ones((), dtype=torch.float64)
    kernel_diagonal: list[torch.Tensor] = []
    variances: list[torch.Tensor] = []
    for node in tree.nodes:
        if node.is_leaf:
            kernel_diagonal.append(one)
            variances.append(one)
            continue
        mean = torch.stack([kernel_diagonal[w] for w in node.children]).mean(0)
        if node.activation is None:
            kernel_diagonal.append(mean)
            variances.append(mean)
            continue
        variance = node.weight_variance * mean + node.bias_variance
        variances.append(variance)
        kernel_diagonal.append(dual_kernel(node.activation, variance, variance, variance))
    return variances


def tree_kernel(
    tree: ArchitectureTree, leaf_overlaps: torch.Tensor, kind: KernelKind = "nngp"
) -> torch.Tensor:
    """K_root (kind 'nngp') or Θ_root (kind 'ntk') from the leaf overlaps t_v = ⟨x_v, y_v⟩/n0.

    leaf_overlaps: (N, n_leaves) in the order of `tree.leaves`, entries in [−1, 1]. Returns (N,).
    """
    if kind not in KERNEL_KINDS:
        raise ValueError(f"kind must be one of {KERNEL_KINDS}, got {kind!r}.")
    leaves = tree.leaves
    if leaf_overlaps.ndim != 2 or leaf_overlaps.shape[1] != len(leaves):
        raise ValueError(
            f"leaf_overlaps must have shape (N, {len(leaves)}), got {tuple(leaf_overlaps.shape)}."
        )
    check_finite("leaf_overlaps", leaf_overlaps)
    leaf_overlaps = leaf_overlaps.to(torch.float64)  # theory in float64
    variances = _node_variances(tree)
    column = {leaf: i for i, leaf in enumerate(leaves)}
    # Values of the nodes still needed; a node is dropped once all its parents are done, so a
    # deep DAG holds only its current frontier.
    kernels: dict[int, torch.Tensor] = {}
    tangents: dict[int, torch.Tensor] = {}
    remaining_parents = [len(p) for p in tree.parents]
    for index, node in enumerate(tree.nodes):
        if node.is_leaf:
            kernels[index] = tangents[index] = leaf_overlaps[:, column[index]]
            continue
        mean_kernel = torch.stack([kernels[w] for w in node.children]).mean(0)
        mean_tangent = (torch.stack([tangents[w] for w in node.children]).mean(0)
                        if kind == "ntk" else mean_kernel)  # the tangent is unused for the NNGP
        if node.activation is None:
            kernels[index], tangents[index] = mean_kernel, mean_tangent
        else:
            covariance = node.weight_variance * mean_kernel + node.bias_variance
            variance = variances[index]
            activation = node.activation
            kernels[index] = _on_unique_covariances(
                partial(dual_kernel, activation), variance, covariance, activation
            )
            tangents[index] = kernels[index]
            if kind == "ntk":
                pre_tangent = node.weight_variance * mean_tangent + node.bias_variance
                slope = _on_unique_covariances(
                    partial(derivative_dual_kernel, activation), variance, covariance, activation
                )
                tangents[index] = kernels[index] + slope * pre_tangent
        for child in node.children:
            remaining_parents[child] -= 1
            if remaining_parents[child] == 0:
                del kernels[child], tangents[child]
    result = kernels[tree.root] if kind == "nngp" else tangents[tree.root]
    if not torch.isfinite(result).all():
        raise ValueError(
            "the kernel recursion produced NaN/inf; check the activation and variances."
        )
    return result
