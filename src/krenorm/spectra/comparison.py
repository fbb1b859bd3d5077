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
) -> SpectraComparison:
    """Spectra grouped by (|S|, linear extent) at `eigen_dimension`; learning curves at
    `curve_dimension` (theory on `theory_sample_sizes`, default a geometric grid of 40 sizes
    from min/2 to 2·max of `sample_sizes`, plus those sizes; KRR at every (sample size, seed))."""
    if theory_sample_sizes is None:
        low, high = max(1, min(sample_sizes) // 2), 2 * max(sample_sizes)
        grid = torch.logspace(math.log10(low), math.log10(high), 40, dtype=torch.float64)
        theory_sample_sizes = sorted({round(n) for n in grid.tolist()} | set(sample_sizes))
    groups = {
        name: group_by_frequency_and_extent(hypercube_spectrum(tree))
        for name, tree in standard_architectures(eigen_dimension, activation).items()
    }
    curve_trees = standard_architectures(curve_dimension, activation)
    targets = standard_targets(curve_dimension)
    curves = []
    target_eigenvalues: dict[str, dict[str, float]] = {}
    for name, tree in curve_trees.items():
        eigenvalues = hypercube_spectrum(tree).eigenvalues
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
                target_name=label,
                theory_sample_sizes=theory_sample_sizes,
            )
            curves.append(curve)
    return SpectraComparison(
        eigen_dimension, curve_dimension, groups, target_eigenvalues, tuple(curves)
    )
