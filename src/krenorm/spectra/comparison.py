"""The standard "space and frequency" comparison behind `krenorm spectra` (docs/math/spectra.md):
an MLP, a shallow CNN and a deep (hierarchical) CNN on {±1}^d, their eigenvalues by (frequency,
spatial extent), and learning curves for a short-range high-frequency and a long-range low-frequency
target (eigenlearning theory and kernel ridge regression points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from krenorm.spectra.dual import KernelKind
from krenorm.spectra.grouping import EigenGroup, group_by_frequency_and_extent
from krenorm.spectra.hypercube import hypercube_spectrum
from krenorm.spectra.learning_curves import (
    LearningCurveComparison,
    compare_learning_curve,
    walsh_target,
)
from krenorm.spectra.trees import ArchitectureTree, cnn_tree, mlp_tree


def _hierarchical_filters(dimension: int) -> list[int]:
    """Filter sizes of a tree CNN on d inputs: patches of 2, then windows of 2 (3 when odd)."""
    sizes = []
    remaining = dimension
    while remaining > 1:
        size = 2 if remaining % 2 == 0 else 3 if remaining % 3 == 0 else remaining
        sizes.append(size)
        remaining //= size
    return sizes


def standard_architectures(
    dimension: int, activation: str = "relu", bias_variance: float = 0.1, patch_size: int = 4
) -> dict[str, ArchitectureTree]:
    """MLP (2 hidden layers), shallow CNN (one hidden layer on non-overlapping patches of
    `patch_size`) and deep CNN (hierarchical windows of 2–3 down to one position)."""
    if dimension % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the dimension {dimension}.")
    trees = (
        mlp_tree(dimension, depth=2, activation=activation, bias_variance=bias_variance),
        cnn_tree(dimension, [patch_size], name="shallow-cnn", activation=activation,
                 bias_variance=bias_variance),
        cnn_tree(dimension, _hierarchical_filters(dimension), name="deep-cnn",
                 activation=activation, bias_variance=bias_variance),
    )
    return {tree.name: tree for tree in trees}


ARCHITECTURE_SPEC_HELP = (
    "mlp:DEPTH, or cnn:F1,F2,… with optional /S1,S2,… strides (stride < filter size: "
    "overlapping patches) and an optional trailing :cyclic; e.g. cnn:4 (shallow), cnn:2,2,3, "
    "cnn:3,2/1,2"
)


def architecture_from_spec(
    spec: str, dimension: int, activation: str = "relu", bias_variance: float = 0.1
) -> ArchitectureTree:
    """An ArchitectureTree on d = `dimension` inputs from a command-line spec
    (ARCHITECTURE_SPEC_HELP). Raises ValueError naming the spec when it is malformed or does not
    tile d (the tree builders' own message says what to change)."""
    parts = spec.strip().split(":")
    family = parts[0].lower()
    try:
        if family == "mlp" and len(parts) == 2:
            return mlp_tree(dimension, depth=int(parts[1]), activation=activation,
                            bias_variance=bias_variance)  # fmt: skip
        if family == "cnn" and len(parts) in (2, 3):
            cyclic = len(parts) == 3 and parts[2].lower() == "cyclic"
            if len(parts) == 3 and not cyclic:
                raise ValueError(f"unknown option {parts[2]!r} (only 'cyclic')")
            sizes_text, _, strides_text = parts[1].partition("/")
            sizes = [int(v) for v in sizes_text.split(",")]
            strides = [int(v) for v in strides_text.split(",")] if strides_text else None
            tree = cnn_tree(dimension, sizes, strides, activation=activation,
                            bias_variance=bias_variance, cyclic=cyclic, name=spec)  # fmt: skip
            read = {c for leaf in tree.leaves for c in tree.nodes[leaf].coordinates}
            if len(read) < dimension:
                unread = sorted(set(range(dimension)) - read)
                raise ValueError(f"the first layer's patches leave coordinates {unread} unread; "
                                 "choose a filter size and stride that tile d")
            return tree
    except ValueError as error:
        raise ValueError(f"architecture {spec!r} on d = {dimension}: {error}") from error
    raise ValueError(f"architecture {spec!r}: expected {ARCHITECTURE_SPEC_HELP}.")


def standard_targets(dimension: int) -> dict[str, tuple[tuple[int, ...], torch.Tensor]]:
    """Short-range high-frequency χ_{0,1,2} and long-range low-frequency χ_{0,d−1}."""
    short = (0, 1, 2)
    long = (0, dimension - 1)
    return {
        "short-range, high-frequency χ{0,1,2}": (short, walsh_target(dimension, [short], [1.0])),
        f"long-range, low-frequency χ{{0,{dimension - 1}}}": (
            long,
            walsh_target(dimension, [long], [1.0]),
        ),
    }


@dataclass(frozen=True)
class SpectraComparison:
    """Eigenvalue groups per architecture and learning curves per (architecture, target)."""

    eigen_dimension: int
    curve_dimension: int
    groups: dict[str, tuple[EigenGroup, ...]]
    target_eigenvalues: dict[str, dict[str, float]]
    curves: tuple[LearningCurveComparison, ...]

    def to_dict(self) -> dict:
        return {
            "eigen_dimension": self.eigen_dimension,
            "curve_dimension": self.curve_dimension,
            "groups": {k: [g.to_dict() for g in v] for k, v in self.groups.items()},
            "target_eigenvalues": self.target_eigenvalues,
            "curves": [c.to_dict() for c in self.curves],
        }


def run_spectra_comparison(
    eigen_dimension: int = 16,
    curve_dimension: int = 12,
    sample_sizes: Sequence[int] = (16, 64, 256, 1024),
    theory_sample_sizes: Sequence[int] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    ridge: float = 1e-2,
    noise_variance: float = 0.0,
    activation: str = "relu",
    *,
    kind: KernelKind = "nngp",
    architectures: Sequence[str] | None = None,
) -> SpectraComparison:
    """Spectra grouped by (|S|, linear extent) at `eigen_dimension`; learning curves at
    `curve_dimension` (theory on `theory_sample_sizes`, default a geometric grid of 40 sizes
    from min/2 to 2·max of `sample_sizes`, plus those sizes; KRR at every (sample size, seed)).

    kind: "nngp" or "ntk" of every architecture. architectures: command-line specs
    (`architecture_from_spec`) instead of the three standard ones; each must tile both
    dimensions."""
    if kind not in ("nngp", "ntk"):
        raise ValueError(f"kind must be 'nngp' or 'ntk', got {kind!r}.")

    def build(dimension: int) -> dict[str, ArchitectureTree]:
        if architectures is None:
            return standard_architectures(dimension, activation)
        trees = [architecture_from_spec(spec, dimension, activation) for spec in architectures]
        return {tree.name: tree for tree in trees}

    if theory_sample_sizes is None:
        low, high = max(1, min(sample_sizes) // 2), 2 * max(sample_sizes)
        grid = torch.logspace(math.log10(low), math.log10(high), 40, dtype=torch.float64)
        theory_sample_sizes = sorted({round(n) for n in grid.tolist()} | set(sample_sizes))
    groups = {
        name: group_by_frequency_and_extent(hypercube_spectrum(tree, kind))
        for name, tree in build(eigen_dimension).items()
    }
    curve_trees = build(curve_dimension)
    targets = standard_targets(curve_dimension)
    curves = []
    target_eigenvalues: dict[str, dict[str, float]] = {}
    for name, tree in curve_trees.items():
        eigenvalues = hypercube_spectrum(tree, kind).eigenvalues
        target_eigenvalues[name] = {}
        for label, (subset, values) in targets.items():
            target_eigenvalues[name][label] = float(eigenvalues[sum(1 << i for i in subset)])
            curve = compare_learning_curve(
                tree,
                values,
                sample_sizes,
                seeds,
                ridge,
                noise_variance,
                kind=kind,
                target_name=label,
                theory_sample_sizes=theory_sample_sizes,
            )
            curves.append(curve)
    return SpectraComparison(
        eigen_dimension, curve_dimension, groups, target_eigenvalues, tuple(curves)
    )
