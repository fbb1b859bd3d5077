"""Architectures as trees/DAGs of kernel operations (docs/math/spectra.md §2).

Leaves are input patches (sets of coordinates); an internal node either applies a hidden layer
to the concatenation of its children's channels (an activation name, weight variance σ_w²,
bias variance σ_b²) or, with `activation=None`, concatenates them without weights (the dense
readout over positions of a CNN/LCN). The network is the tree followed by one linear readout of
the root's channels, so the NNGP is K_root and the NTK is Θ_root (krenorm.spectra.dual).

A node with several parents (overlapping patches) makes the graph a DAG; the kernel recursions
accept DAGs, the learning index needs a tree. Without pooling CNN and LCN kernels coincide, so
one builder serves both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from krenorm.kernels.activations import get_activation


@dataclass(frozen=True)
class TreeNode:
    """One node: a leaf (coordinates, no children) or an internal node (children, no coordinates).

    Internal nodes with an activation compute Σ̄ = σ_w²·mean_children K + σ_b², K = κ(Σ̄);
    `activation=None` means a weightless concatenation, K = mean_children K.
    """

    children: tuple[int, ...] = ()
    coordinates: tuple[int, ...] = ()
    activation: str | None = None
    weight_variance: float = 1.0
    bias_variance: float = 0.0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def to_dict(self) -> dict:
        return {
            "children": list(self.children),
            "coordinates": list(self.coordinates),
            "activation": self.activation,
            "weight_variance": self.weight_variance,
            "bias_variance": self.bias_variance,
        }


@dataclass(frozen=True)
class ArchitectureTree:
    """Nodes in topological order (children before parents); the last node is the root."""

    nodes: tuple[TreeNode, ...]
    input_dimension: int
    name: str = "custom"
    parents: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.input_dimension < 1:
            raise ValueError(f"input_dimension must be >= 1, got {self.input_dimension}.")
        if not self.nodes:
            raise ValueError("an architecture tree needs at least one leaf and one node.")
        parents: list[list[int]] = [[] for _ in self.nodes]
        for index, node in enumerate(self.nodes):
            _validate_node(index, node, self.input_dimension)
            for child in node.children:
                if not 0 <= child < index:
                    raise ValueError(
                        f"node {index} lists child {child}; children must be earlier nodes "
                        "(give the nodes in topological order, root last)."
                    )
                parents[child].append(index)
        root = len(self.nodes) - 1
        if self.nodes[root].is_leaf:
            raise ValueError("the root (last node) must be an internal node, not a leaf.")
        orphans = [i for i in range(root) if not parents[i]]
        if orphans:
            raise ValueError(f"nodes {orphans} feed no parent; every node except the root must.")
        object.__setattr__(self, "parents", tuple(tuple(p) for p in parents))

    @property
    def root(self) -> int:
        return len(self.nodes) - 1

    @property
    def leaves(self) -> tuple[int, ...]:
        return tuple(i for i, node in enumerate(self.nodes) if node.is_leaf)

    @property
    def is_tree(self) -> bool:
        """True when every node has one parent and the leaves' coordinates are disjoint."""
        if any(len(p) > 1 for p in self.parents):
            return False
        seen: set[int] = set()
        for leaf in self.leaves:
            coordinates = set(self.nodes[leaf].coordinates)
            if coordinates & seen:
                return False
            seen |= coordinates
        return True

    def fan_in(self, index: int) -> int:
        """c_u: number of children of node u (0 for a leaf)."""
        return len(self.nodes[index].children)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_dimension": self.input_dimension,
            "nodes": [node.to_dict() for node in self.nodes],
        }


def _validate_node(index: int, node: TreeNode, input_dimension: int) -> None:
    if node.is_leaf:
        if not node.coordinates:
            raise ValueError(f"leaf {index} has no coordinates; give it a non-empty patch.")
        if len(set(node.coordinates)) != len(node.coordinates):
            raise ValueError(f"leaf {index} repeats a coordinate: {node.coordinates}.")
        if min(node.coordinates) < 0 or max(node.coordinates) >= input_dimension:
            raise ValueError(
                f"leaf {index} has coordinates outside [0, {input_dimension}): {node.coordinates}."
            )
        return
    if node.coordinates:
        raise ValueError(f"internal node {index} must not list coordinates (only leaves do).")
    if node.activation is not None:
        get_activation(node.activation)
    if not (math.isfinite(node.weight_variance) and node.weight_variance > 0):
        raise ValueError(f"node {index}: weight_variance must be positive and finite.")
    if not (math.isfinite(node.bias_variance) and node.bias_variance >= 0):
        raise ValueError(f"node {index}: bias_variance must be non-negative and finite.")


def mlp_tree(
    input_dimension: int,
    depth: int = 1,
    activation: str = "relu",
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
) -> ArchitectureTree:
    """Fully connected network: one leaf holding all d coordinates, then `depth` hidden layers
    in a chain (each with fan-in 1 in the tree)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    nodes = [TreeNode(coordinates=tuple(range(input_dimension)))]
    for layer in range(depth):
        nodes.append(TreeNode((layer,), (), activation, weight_variance, bias_variance))
    return ArchitectureTree(tuple(nodes), input_dimension, name=f"mlp-{depth}")


def _windows(length: int, size: int, stride: int, cyclic: bool) -> list[tuple[int, ...]]:
    """Index windows of a 1-D layer: cyclic (wrapping, length/stride windows) or valid."""
    if size < 1 or stride < 1:
        raise ValueError(f"filter size and stride must be >= 1, got {size} and {stride}.")
    if size > length:
        raise ValueError(
            f"filter size {size} exceeds the layer length {length}; use a smaller one."
        )
    if cyclic:
        if length % stride:
            raise ValueError(f"cyclic layers need stride {stride} to divide the length {length}.")
        starts = range(0, length, stride)
        return [tuple((s + t) % length for t in range(size)) for s in starts]
    return [tuple(range(s, s + size)) for s in range(0, length - size + 1, stride)]


def cnn_tree(
    input_dimension: int,
    filter_sizes: Sequence[int],
    strides: Sequence[int] | None = None,
    activation: str = "relu",
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
    cyclic: bool = False,
    name: str | None = None,
) -> ArchitectureTree:
    """1-D convolutional (equivalently locally connected) network without pooling.

    Layer 1 reads patches of `filter_sizes[0]` coordinates at `strides[0]` (each patch is a leaf);
    layer l ≥ 2 reads windows of `filter_sizes[l-1]` positions of layer l−1; the root concatenates
    the last layer's positions (dense readout). stride = filter size gives non-overlapping patches
    (a tree); smaller strides give overlapping patches (a DAG). Default strides equal the filter
    sizes. `cyclic` wraps windows around (periodic images).
    """
    if not filter_sizes:
        raise ValueError("filter_sizes must list at least one layer.")
    strides = list(filter_sizes) if strides is None else list(strides)
    if len(strides) != len(filter_sizes):
        raise ValueError(
            f"strides ({len(strides)}) and filter_sizes ({len(filter_sizes)}) must match."
        )
    nodes: list[TreeNode] = []
    patches = _windows(input_dimension, filter_sizes[0], strides[0], cyclic)
    for patch in patches:
        nodes.append(TreeNode(coordinates=patch))
    layer = []
    for leaf, _ in enumerate(patches):
        layer.append(len(nodes))
        nodes.append(TreeNode((leaf,), (), activation, weight_variance, bias_variance))
    for size, stride in zip(filter_sizes[1:], strides[1:], strict=True):
        windows = _windows(len(layer), size, stride, cyclic)
        if len({i for window in windows for i in window}) != len(layer):
            raise ValueError(
                f"windows of {size} at stride {stride} leave positions of a {len(layer)}-position "
                "layer unread; choose filter sizes and strides that cover every position."
            )
        next_layer = []
        for window in windows:
            next_layer.append(len(nodes))
            children = tuple(layer[i] for i in window)
            nodes.append(TreeNode(children, (), activation, weight_variance, bias_variance))
        layer = next_layer
    nodes.append(TreeNode(tuple(layer), (), None))
    label = name or f"cnn-{len(filter_sizes)}"
    return ArchitectureTree(tuple(nodes), input_dimension, name=label)


def lcn_tree(
    input_dimension: int,
    filter_sizes: Sequence[int],
    strides: Sequence[int] | None = None,
    activation: str = "relu",
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
    cyclic: bool = False,
) -> ArchitectureTree:
    """Locally connected network (a filter per position): without pooling its NNGP and NTK equal
    the CNN's, since weight sharing only adds cross-position terms that average to zero; the tree
    is `cnn_tree`'s, named 'lcn-L'."""
    return cnn_tree(
        input_dimension,
        filter_sizes,
        strides,
        activation,
        weight_variance,
        bias_variance,
        cyclic,
        name=f"lcn-{len(filter_sizes)}",
    )
