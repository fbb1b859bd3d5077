"""Figures of the compare job: test loss vs width (theory curve, infinite-width line, network
points with standard errors), Q̄ heat maps over patch positions (theory next to the network-side
estimate), per-patch LCN priors, and kernel alignment of the sampled networks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_COLOURS = {"fc": "tab:blue", "cnn": "tab:red", "lcn": "tab:green", "cnn-gap": "tab:purple"}


def _rows(result, kind: str, source: str):
    return sorted((row for row in result.rows if row.architecture == kind
                   and row.source == source), key=lambda row: row.width)


def plot_test_loss(result, path: Path) -> Path:
    kinds = [spec.kind for spec in result.config.architectures]
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False,
                                sharey=True)
    for axis, kind in zip(axes[0], kinds, strict=True):
        colour = _COLOURS.get(kind, "black")
        theory = _rows(result, kind, "theory")
        alphas = [row.alpha for row in theory]
        axis.plot(alphas, [row.test_loss for row in theory], "-", color=colour,
                  label="finite-width theory")
        infinite = _rows(result, kind, "theory-infinite")[0]
        axis.axhline(infinite.test_loss, color="gray", ls="--", label="infinite width (NNGP)")
        retuned = _rows(result, kind, "retuned-infinite")
        if retuned:
            axis.plot([row.alpha for row in retuned], [row.test_loss for row in retuned], ":",
                      color="black", label="infinite width, retuned priors")
        networks = _rows(result, kind, "network")
        if networks:
            axis.errorbar([row.alpha for row in networks], [row.test_loss for row in networks],
                          yerr=[row.test_loss_stderr or 0.0 for row in networks], fmt="o",
                          color=colour, ecolor="black", capsize=3, label="sampled networks (±1 SE)")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("α = P / N")
        axis.set_title(kind.upper())
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test loss ε_g (bias² + variance)")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(f"{result.config.name}: theory vs sampled networks")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _heat(axis, matrix: np.ndarray, title: str, symmetric: bool = True):
    limit = float(np.max(np.abs(matrix))) if symmetric else None
    image = axis.imshow(matrix, cmap="RdBu_r" if symmetric else "viridis",
                        vmin=-limit if symmetric else None, vmax=limit)
    axis.set_title(title, fontsize=8)
    plt.colorbar(image, ax=axis, fraction=0.046)


def plot_order_parameters(result, kind: str, path: Path) -> Path | None:
    """CNN: Q̄ − 1 over patch pairs (theory and network estimate); LCN: q̄_i over the patch grid."""
    entry = result.order_parameters.get(kind)
    if not entry or kind not in ("cnn", "lcn") or not entry["theory"]:
        return None
    widths = sorted(entry["theory"], key=float)
    network_widths = [w for w in widths if w in entry["network"]]
    width = network_widths[0] if network_widths else widths[0]
    q = np.asarray(entry["theory"][width])
    panels = 2 if width in entry["network"] else 1
    figure, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 3.8), squeeze=False)
    if kind == "cnn":
        _heat(axes[0][0], q - np.eye(q.shape[0]), f"theory Q̄ − 1, N = {width}")
        if panels == 2:
            estimate = np.asarray(entry["network"][width]["q_matrix"])
            _heat(axes[0][1], estimate - np.eye(estimate.shape[0]),
                  f"network (λ1/N)Σ⟨a aᵀ⟩ − 1, N = {width}")
        for axis in axes[0]:
            axis.set_xlabel("patch j")
            axis.set_ylabel("patch i")
    else:
        grid = q.reshape(entry["grid"])
        _heat(axes[0][0], grid, f"theory q̄_i over patch positions, N = {width}",
              symmetric=False)
        if panels == 2:
            estimate = np.diag(np.asarray(entry["network"][width]["q_matrix"]))
            _heat(axes[0][1], estimate.reshape(grid.shape), "network estimate", symmetric=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_kernel_alignment(result, path: Path) -> Path | None:
    rows = [row for row in result.rows if row.source == "network"
            and row.details.get("kernel_alignment")]
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for kind in sorted({row.architecture for row in rows}):
        mine = sorted((row for row in rows if row.architecture == kind), key=lambda r: r.width)
        colour = _COLOURS.get(kind, "black")
        axis.plot([r.width for r in mine],
                  [r.details["kernel_alignment"]["centered_target_alignment_posterior"]
                   for r in mine], "o-", color=colour, label=f"{kind} after training")
        axis.plot([r.width for r in mine],
                  [r.details["kernel_alignment"]["centered_target_alignment_nngp"]
                   for r in mine], "x--", color=colour, label=f"{kind} NNGP")
    axis.set_xscale("log")
    axis.set_xlabel("width N")
    axis.set_ylabel("centred kernel–target alignment")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_figures(result) -> list[Path]:
    output = result.output_dir
    paths = [plot_test_loss(result, output / "test_loss_vs_alpha.png")]
    for spec in result.config.architectures:
        name = f"order_parameters_{spec.kind}.png"
        path = plot_order_parameters(result, spec.kind, output / name)
        if path is not None:
            paths.append(path)
    alignment = plot_kernel_alignment(result, output / "kernel_alignment.png")
    if alignment is not None:
        paths.append(alignment)
    return paths
