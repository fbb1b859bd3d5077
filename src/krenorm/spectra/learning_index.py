"""Learning index of a tree architecture (docs/math/spectra.md §4).

With patch sizes n0 = d^{α0} and fan-ins c_u = d^{α_u}, the eigenvalue of the eigenspace with
per-patch degrees k scales as λ_k = Θ(d^{−r(k)}),

    r(k) = Σ_v α0_v·k_v + Σ_{u ∈ T(k)} α_u·m_u(k),

where T(k) is the minimal subtree joining the root to the patches with k_v > 0 and m_u(k) the
number of children of u inside T(k). Kernel ridge regression with n = d^{r*} samples learns the
eigenspaces with r < r* and none above.

The formula assumes generic nonlinear activations (with biases every degree is present). A linear
node — weightless (activation None) or identity — adds its children's kernels and so creates no
product across them: if one joins two or more children of T(k), λ_k = 0 exactly and r(k) = ∞.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from krenorm.spectra.trees import ArchitectureTree

#: Activations that create no products across children (None: weightless concatenation).
LINEAR_ACTIVATIONS = (None, "identity", "linear", "lin")


@dataclass(frozen=True)
class TreeExponents:
    """α0 for every leaf (in `tree.leaves` order) and α_u for every node (leaves: 0)."""

    leaf: tuple[float, ...]
    fan_in: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _require_tree(tree: ArchitectureTree) -> None:
    if not tree.is_tree:
        raise ValueError(
            f"{tree.name!r} is a DAG (a node with several parents or overlapping patches); the "
            "learning index and the degree profile need a tree (non-overlapping patches)."
        )


def tree_exponents(tree: ArchitectureTree, dimension: float | None = None) -> TreeExponents:
    """α from the actual sizes: α0_v = log|v| / log d, α_u = log c_u / log d (d = input size
    unless given)."""
    dimension = float(tree.input_dimension if dimension is None else dimension)
    if dimension <= 1:
        raise ValueError(f"the dimension must exceed 1 to define exponents, got {dimension}.")
    log_d = math.log(dimension)
    leaf = tuple(math.log(len(tree.nodes[v].coordinates)) / log_d for v in tree.leaves)
    fan_in = tuple(
        0.0 if node.is_leaf else math.log(len(node.children)) / log_d for node in tree.nodes
    )
    return TreeExponents(leaf, fan_in)


def _check_degrees(tree: ArchitectureTree, degrees: Sequence[int]) -> tuple[int, ...]:
    degrees = tuple(int(k) for k in degrees)
    if len(degrees) != len(tree.leaves):
        raise ValueError(
            f"give one degree per patch: {len(tree.leaves)} expected, got {len(degrees)}."
        )
    if min(degrees, default=0) < 0:
        raise ValueError(f"degrees must be non-negative, got {degrees}.")
    return degrees


def spanning_subtree(tree: ArchitectureTree, degrees: Sequence[int]) -> frozenset[int]:
    """T(k): the nodes on the paths from the root to the leaves with k_v > 0 (∅ when k = 0)."""
    _require_tree(tree)
    degrees = _check_degrees(tree, degrees)
    nodes: set[int] = set()
    for leaf, degree in zip(tree.leaves, degrees, strict=True):
        node = leaf
        while degree > 0 and node not in nodes:
            nodes.add(node)
            if node == tree.root:
                break
            (node,) = tree.parents[node]
    return frozenset(nodes)


def learning_index(
    tree: ArchitectureTree, degrees: Sequence[int], exponents: TreeExponents | None = None
) -> float:
    """r(k) = Σ_v α0_v k_v + Σ_{u∈T(k)} α_u m_u(k) (exponents default to `tree_exponents`);
    math.inf when a linear node joins several children of T(k) (see the module docstring)."""
    degrees = _check_degrees(tree, degrees)
    exponents = tree_exponents(tree) if exponents is None else exponents
    if len(exponents.leaf) != len(tree.leaves) or len(exponents.fan_in) != len(tree.nodes):
        raise ValueError("exponents must list one α0 per leaf and one α per node of this tree.")
    subtree = spanning_subtree(tree, degrees)
    index = sum(alpha * k for alpha, k in zip(exponents.leaf, degrees, strict=True))
    for node in subtree:
        inside = sum(child in subtree for child in tree.nodes[node].children)
        if inside >= 2 and tree.nodes[node].activation in LINEAR_ACTIVATIONS:
            return math.inf
        index += exponents.fan_in[node] * inside
    return float(index)
