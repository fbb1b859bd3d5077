"""Figures of the rescaling-versus-adaptation study (matplotlib, Agg backend).

error_vs_chi.png      per experiment: relative error of the test mean predictor of each
                      theory against sampled networks, and the test loss of theories and
                      networks (± 2 standard errors), versus χ
alignment_vs_chi.png  kernel–target alignment yᵀĈy/(|Ĉ|_F yᵀy) of the hidden kernel
teacher_vs_chi.png    overlap of the top eigenvector of ⟨VᵀV⟩/N with the teacher, and its
                      eigenvalue over the prior variance g_v/D (the spike)

Every panel marks the χ of a point with warnings (sampler R̂ too high, solver not converged,
outside the validated regime; PointResult.warnings) by a red dotted vertical line, and the figure
title counts them, so a figure is never read without them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from krenorm.adaptive.study import StudyResult

#: Line style per method, shared by the three figures (matplotlib keyword arguments).
METHOD_STYLES: dict[str, dict[str, Any]] = {
    "network": {"color": "black", "marker": "o", "linestyle": "none", "label": "sampled networks"},
    "nngp": {"color": "tab:gray", "marker": "s", "linestyle": ":", "label": "NNGP"},
    "corrected": {"color": "tab:blue", "marker": "^", "linestyle": "--",
                  "label": "rescaling (standard-scaling correction)"},
    "tree-level": {"color": "tab:red", "marker": "v", "linestyle": "-",
                   "label": "adaptation (tree level)"},
    "full-saddle": {"color": "tab:orange", "marker": "D", "linestyle": "-.",
                    "label": "adaptation (full saddle point)"},
    "oracle": {"color": "tab:green", "marker": "x", "linestyle": "-", "label": "exact oracle"},
}  # fmt: skip


def _series(result: StudyResult, experiment: str, method: str, attribute: str
            ) -> tuple[list[float], list[float]]:
    points = [p for p in result.points if p.experiment == experiment]
    xs: list[float] = []
    ys: list[float] = []
    for point in points:
        entry = point.method(method)
        if entry is not None:
            value = getattr(entry, attribute)
            if value is not None and not math.isnan(value):
                xs.append(point.chi)
                ys.append(value)
    return xs, ys


def _methods(result: StudyResult) -> list[str]:
    present = {m.method for p in result.points for m in p.methods}
    return [name for name in METHOD_STYLES if name in present]


def _panel(axis: Axes, result: StudyResult, experiment: str, attribute: str,
           skip: Iterable[str] = ()) -> None:
    skipped = set(skip)
    for method in _methods(result):
        if method in skipped:
            continue
        xs, ys = _series(result, experiment, method, attribute)
        if xs:
            axis.plot(xs, ys, **METHOD_STYLES[method])
    mark_flagged_points(axis, result, experiment)
    axis.set_xscale("log")
    axis.set_xlabel("χ (1 = standard, N = mean-field)")


def mark_flagged_points(axis: Axes, result: StudyResult, experiment: str) -> int:
    """Red dotted vertical lines at the χ of this experiment's points with warnings; returns
    how many were marked."""
    flagged = [p.chi for p in result.points if p.experiment == experiment and p.warnings]
    for index, chi in enumerate(flagged):
        axis.axvline(chi, color="red", linestyle=":", linewidth=1.5, alpha=0.7,
                     label="point with warnings (see report.md)" if index == 0 else None)
    return len(flagged)


def _experiments(result: StudyResult) -> list[str]:
    return [experiment.name for experiment in result.config.experiments]


def _figure(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    return figure, axes


def _finish(figure: Figure, axes: np.ndarray, path: Path, result: StudyResult | None = None
            ) -> Path:
    if result is not None:
        count = sum(len(p.warnings) for p in result.points)
        if count:
            figure.suptitle(f"WARNING: {count} warning(s) — red dotted lines; see report.md",
                            color="red", fontsize=10)
    handles: dict[str, Artist] = {}  # one legend entry per label, first handle wins
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="lower center",
                  ncol=min(3, len(handles)), fontsize=8, frameon=False)  # fmt: skip
    figure.tight_layout(rect=(0, 0.08, 1, 0.95 if figure.get_suptitle() else 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_error_vs_chi(result: StudyResult, path: Path) -> Path:
    """Top: relative error of each theory's test mean against the networks; bottom: test loss."""
    experiments = _experiments(result)
    figure, axes = _figure(2, len(experiments))
    for column, experiment in enumerate(experiments):
        top, bottom = axes[0, column], axes[1, column]
        _panel(top, result, experiment, "mean_error", skip=("network",))
        top.set_yscale("log")
        top.set_ylabel("|m − m_net| / |m_net|")
        top.set_title(experiment)
        _panel(bottom, result, experiment, "test_loss", skip=("network",))
        points = [p for p in result.points if p.experiment == experiment]
        bottom.errorbar(
            [p.chi for p in points], [p.network.test_loss for p in points],
            yerr=[2 * p.network_stderr for p in points], **METHOD_STYLES["network"],
        )  # fmt: skip
        bottom.set_yscale("log")
        bottom.set_ylabel("test loss")
    return _finish(figure, axes, path, result)


def plot_alignment_vs_chi(result: StudyResult, path: Path) -> Path:
    """Kernel–target alignment of the hidden kernel versus χ."""
    experiments = _experiments(result)
    figure, axes = _figure(1, len(experiments))
    for column, experiment in enumerate(experiments):
        axis = axes[0, column]
        _panel(axis, result, experiment, "alignment")
        axis.set_ylabel("alignment of Ĉ with yyᵀ")
        axis.set_title(experiment)
    return _finish(figure, axes, path, result)


def plot_teacher_vs_chi(result: StudyResult, path: Path) -> Path:
    """Top eigenvector of ⟨VᵀV⟩/N against the teacher, and the spike eigenvalue."""
    experiments = _experiments(result)
    figure, axes = _figure(2, len(experiments))
    for column, experiment in enumerate(experiments):
        top, bottom = axes[0, column], axes[1, column]
        _panel(top, result, experiment, "teacher_overlap")
        top.set_ylabel("|top eigenvector · teacher|")
        top.set_ylim(0, 1.05)
        top.set_title(experiment)
        _panel(bottom, result, experiment, "spike")
        bottom.set_yscale("log")
        bottom.set_ylabel("top eigenvalue / (g_v/D)")
    return _finish(figure, axes, path, result)


def write_study_figures(result: StudyResult, directory: str | Path) -> dict[str, Path]:
    """The three study figures as PNG files in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "error of theories vs χ": plot_error_vs_chi(result, directory / "error_vs_chi.png"),
        "hidden-kernel alignment vs χ": plot_alignment_vs_chi(
            result, directory / "alignment_vs_chi.png"
        ),
        "top eigenvector of ⟨VᵀV⟩/N vs teacher": plot_teacher_vs_chi(
            result, directory / "teacher_vs_chi.png"
        ),
    }
