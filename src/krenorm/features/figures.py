"""Figures of the feature-learning lens (docs/math/features.md §5, "Deep ConvRFM", "CNFA"):
top eigenvectors of a patch metric M as filter images, images filtered by them, metric spectra,
and the CNFA report. Plain matplotlib Figure objects, rendered by the Agg canvas that
Figure.savefig uses without pyplot (no global backend state); callers save them with
`figure.savefig(path)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from krenorm._validation import check_images
from krenorm.features.cnfa import CNFAReport
from krenorm.features.metric import psd_eigh
from krenorm.kernels.patches import PatchGeometry


def top_eigenvectors(metric: torch.Tensor, n_vectors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n largest eigenvalues of M (descending) and their eigenvectors as rows (n, d)."""
    if n_vectors < 1:
        raise ValueError(f"n_vectors must be >= 1, got {n_vectors}.")
    eigenvalues, eigenvectors = psd_eigh(metric)
    order = eigenvalues.argsort(descending=True)[:n_vectors]
    return eigenvalues[order], eigenvectors[:, order].T


def _symmetric_image(axis: Axes, image: torch.Tensor) -> None:
    limit = float(image.abs().max()) or 1.0
    axis.imshow(image.cpu().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_metric_eigenvectors(
    metric: torch.Tensor, patch_shape: tuple[int, int, int], n_vectors: int = 6,
    max_channels: int | None = None,
) -> Figure:
    """Top eigenvectors of M reshaped to filters (c, q_h, q_w): one row per eigenvector, one
    column per channel (diverging colour map, symmetric limits), eigenvalue in the row label;
    only the first `max_channels` channels when given (deep levels have many)."""
    channels = patch_shape[0] if max_channels is None else min(patch_shape[0], max_channels)
    eigenvalues, vectors = top_eigenvectors(metric, n_vectors)
    figure = Figure(figsize=(1.3 * channels + 0.8, 1.3 * len(vectors)), layout="constrained")
    axes = figure.subplots(len(vectors), channels, squeeze=False)
    for row, (value, vector) in enumerate(zip(eigenvalues, vectors, strict=True)):
        filters = vector.reshape(patch_shape)
        for channel in range(channels):
            _symmetric_image(axes[row, channel], filters[channel])
            if row == 0:
                axes[row, channel].set_title(f"channel {channel}", fontsize=8)
        axes[row, 0].set_ylabel(f"λ={float(value):.3g}", fontsize=8)
    figure.suptitle("top eigenvectors of the patch metric M", fontsize=9)
    return figure


def plot_filtered_images(
    images: torch.Tensor,
    metric: torch.Tensor,
    geometry: PatchGeometry,
    n_vectors: int = 3,
    n_images: int = 3,
) -> Figure:
    """Images (channel mean, first column) and their Conv2d responses to the top eigenvectors of
    M used as filters in `geometry` (following columns)."""
    check_images("images", images)
    images = images[:n_images].to(metric.dtype)
    _, vectors = top_eigenvectors(metric, n_vectors)
    filters = vectors.reshape(len(vectors), *geometry.patch_shape(images.shape[1]))
    responses = geometry.convolve(images, filters)
    figure = Figure(figsize=(1.6 * (len(vectors) + 1), 1.6 * len(images)), layout="constrained")
    axes = figure.subplots(len(images), len(vectors) + 1, squeeze=False)
    for row in range(len(images)):
        _symmetric_image(axes[row, 0], images[row].mean(0))
        for column in range(len(vectors)):
            _symmetric_image(axes[row, column + 1], responses[row, column])
            if row == 0:
                axes[row, column + 1].set_title(f"eigenvector {column + 1}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    return figure


def plot_metric_spectra(spectra: Sequence[Sequence[float]], labels: Sequence[str]) -> Figure:
    """Eigenvalues of several metrics (descending, log scale), e.g. per ConvRFM round or per
    Deep ConvRFM level."""
    figure = Figure(figsize=(4.5, 3.2), layout="constrained")
    axis = figure.subplots()
    for spectrum, label in zip(spectra, labels, strict=True):
        values = [max(float(v), 1e-16) for v in spectrum]
        axis.semilogy(range(1, len(values) + 1), values, marker=".", label=label)
    axis.set_xlabel("index")
    axis.set_ylabel("eigenvalue of M")
    axis.legend(fontsize=8)
    return figure


def plot_cnfa_report(report: CNFAReport) -> Figure:
    """Left: Pearson agreement of WᵀW with G^α per (layer, α) for the trained network and both
    baselines, with bootstrap intervals, and the gradient-free reference of the initialization
    baseline as a black tick. Right: the trained Pearson against the number of images."""
    figure = Figure(figsize=(9, 4.0), layout="constrained")
    bars, curves = figure.subplots(1, 2)
    labels = [f"{entry.layer}\nα={entry.alpha:g}" for entry in report.layers]
    positions = range(len(labels))
    variants = (
        (-0.27, "trained", "trained"),
        (0.0, "initialization", "network at init"),
        (0.27, "initial_filters", "initial filters vs trained G"),
    )
    for offset, attribute, name in variants:
        values = [getattr(entry, attribute) for entry in report.layers]
        heights = [v.pearson for v in values]
        errors = [
            [v.pearson - v.pearson_interval[0] for v in values],
            [v.pearson_interval[1] - v.pearson for v in values],
        ]
        bars.bar([p + offset for p in positions], heights, width=0.27, yerr=errors, label=name)
    bars.scatter(
        list(positions),
        [entry.isotropic_initialization.pearson for entry in report.layers],
        marker="_", s=200, color="black", zorder=3, label="init, isotropic Δ (no gradients)",
    )
    bars.set_xticks(list(positions), labels, fontsize=7)
    bars.set_ylabel("Pearson(WᵀW, G^α)")
    bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    for entry in report.layers:
        sizes = [point.n_images for point in entry.convergence]
        curves.semilogx(
            sizes,
            [point.pearson for point in entry.convergence],
            marker=".",
            label=f"{entry.layer} α={entry.alpha:g}",
        )
    curves.set_xlabel("images used for G")
    curves.set_ylabel("Pearson(WᵀW, G^α)")
    curves.legend(fontsize=7)
    return figure
