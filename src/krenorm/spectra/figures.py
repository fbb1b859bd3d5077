"""Figures of the eigenstructure lens (docs/math/spectra.md): eigenvalue maps over (frequency,
spatial extent) per architecture, and learning curves (eigenlearning theory lines, KRR points ± 1
s.e.).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from krenorm.spectra.comparison import SpectraComparison
from krenorm.spectra.grouping import EigenGroup

#: Eigenvalues below this fraction of the largest are drawn as exact zeros (WHT rounding).
ZERO_THRESHOLD = 1e-12


def _eigenvalue_grid(groups: tuple[EigenGroup, ...], dimension: int) -> np.ndarray:
    """(d+1, d+1) array of log10 mean eigenvalue by (frequency, extent); NaN where empty,
    −inf where the eigenvalue is zero."""
    grid = np.full((dimension + 1, dimension + 1), np.nan)
    largest = max(g.maximum for g in groups)
    for group in groups:
        frequency, extent = group.label
        value = group.mean
        grid[frequency, extent] = math.log10(value) if value > ZERO_THRESHOLD * largest else -np.inf
    return grid


def plot_eigenvalue_maps(comparison: SpectraComparison, path: str | Path) -> Path:
    """Heat maps of log10 of the mean λ_S over subsets with a given (spatial extent, frequency
    |S|), one panel per architecture; grey cells are exact zeros (interactions the architecture
    cannot represent)."""
    dimension = comparison.eigen_dimension
    grids = {
        name: _eigenvalue_grid(groups, dimension) for name, groups in comparison.groups.items()
    }
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    low, high = float(finite.min()), float(finite.max())
    figure, axes = plt.subplots(
        1, len(grids), figsize=(4.4 * len(grids), 4.0), squeeze=False, layout="constrained"
    )
    # NaN cells transparent, so the grey layer of exact zeros shows through.
    colormap = plt.get_cmap("viridis").with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    for axis, (name, grid) in zip(axes[0], grids.items(), strict=True):
        zeros = np.where(np.isneginf(grid), 1.0, np.nan)
        axis.imshow(zeros, origin="lower", cmap="Greys", vmin=0, vmax=2.5, aspect="auto")
        shown = np.where(np.isfinite(grid), grid, np.nan)
        axis.imshow(shown, origin="lower", cmap=colormap, vmin=low, vmax=high, aspect="auto")
        axis.set_title(name)
        axis.set_xlabel("spatial extent (max − min + 1)")
        axis.set_ylabel("frequency |S|")
    # One colour scale shared by every panel (all images use the same norm and colormap).
    scale = ScalarMappable(norm=Normalize(vmin=low, vmax=high), cmap=colormap)
    figure.colorbar(
        scale, ax=axes[0].tolist(), label="log10 mean eigenvalue of the group (grey: 0)"
    )
    figure.suptitle(f"Eigenvalues on {{±1}}^{dimension} by frequency and spatial extent")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def plot_learning_curves(comparison: SpectraComparison, path: str | Path) -> Path:
    """One panel per target: eigenlearning test MSE (lines) and KRR means ± 1 s.e. (points)
    against the sample size, one colour per architecture."""
    targets = list(dict.fromkeys(c.target for c in comparison.curves))
    architectures = list(dict.fromkeys(c.architecture for c in comparison.curves))
    palette = plt.get_cmap("tab10")
    colours = {name: palette(index % palette.N) for index, name in enumerate(architectures)}
    figure, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 4), squeeze=False)
    for axis, target in zip(axes[0], targets, strict=True):
        for curve in comparison.curves:
            if curve.target != target:
                continue
            colour = colours[curve.architecture]
            axis.plot(
                curve.theory_sample_sizes,
                [p.test_mse for p in curve.theory],
                color=colour,
                label=f"{curve.architecture} (theory)",
            )
            if curve.experiments:
                axis.errorbar(
                    curve.experiment_sample_sizes,
                    curve.measured_mean(),
                    yerr=curve.measured_standard_error(),
                    fmt="o",
                    color=colour,
                    capsize=3,
                    label=f"{curve.architecture} (KRR)",
                )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("training samples n")
        axis.set_ylabel("test MSE")
        axis.set_title(target)
        axis.legend(fontsize=7)
    figure.suptitle(f"Learning curves on {{±1}}^{comparison.curve_dimension}")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path
