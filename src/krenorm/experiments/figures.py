"""Figures of a run, all drawn from result rows (`rows.ResultRow`) and the agreement analysis:

- test loss ε_g against α = P/N and against N, one panel per architecture: finite-width theory
  (a band of ± its standard error over data seeds when there are several), N = ∞ (dashed),
  infinite width with retuned readout priors (dotted), sampled networks with ±1 SE bars;
- the deviation network − theory against 1/N per problem, with the weighted fit δ∞ + c/N and
  its ±1σ band, δ∞ at 1/N = 0, and the deviation from the N = ∞ theory for scale;
- Q̄ over patch pairs (CNN) or patch positions (LCN), theory next to the network estimate;
- centred kernel–target alignment of the sampled networks against N.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from krenorm.architectures import ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.agreement import AgreementReport, InverseWidthFit, value_with_error
from krenorm.experiments.rows import Estimate, ResultRow
from krenorm.width import is_infinite

_COLOURS = {"fc": "tab:blue", "cnn": "tab:red", "lcn": "tab:green", "cnn-gap": "tab:purple"}


def _mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean over data seeds and its standard error (0 for one seed)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, error


def _architecture_title(spec: ArchitectureSpec | DeepArchitectureSpec,
                        specs: Sequence[ArchitectureSpec | DeepArchitectureSpec]) -> str:
    title = spec.kind.upper()
    if isinstance(spec, DeepArchitectureSpec):
        title += f" L={spec.depth}"
    if len({other.activation for other in specs}) > 1:
        title += f" {spec.activation}"
    if sum(other.kind == spec.kind for other in specs) > 1 and spec.is_convolutional:
        title += f" (mask {spec.mask[0]}, stride {spec.stride[0]})"
    return title


def _curve_key(row: ResultRow) -> tuple:
    """What a curve shares: the problem without the data seed (seeds are averaged over)."""
    data = row.spec.data
    return (data.dataset, data.n_train, data.n_test, data.options, row.temperature,
            row.lambda0, row.lambda1)


def _curve_label(key: tuple, varying: list[int]) -> str:
    names = ("data", "P", "P_test", "options", "T", "λ0", "λ1")
    return ", ".join(f"{names[index]}={key[index]:g}" if isinstance(key[index], float)
                     else f"{names[index]}={key[index]}" for index in varying)


def plot_test_loss(rows: Sequence[ResultRow], path: str | Path, *, axis: str = "alpha",
                   title: str | None = None) -> Path:
    """ε_g against α = P/N (axis='alpha') or N (axis='width'), one panel per architecture."""
    if axis not in ("alpha", "width"):
        raise ValueError(f"axis must be 'alpha' or 'width', got {axis!r}.")
    specs = list(dict.fromkeys(row.spec.architecture for row in rows))
    keys = list(dict.fromkeys(_curve_key(row) for row in rows))
    varying = [index for index in range(7) if len({key[index] for key in keys}) > 1]
    figure, axes = plt.subplots(1, len(specs), figsize=(4.4 * len(specs), 4.4), squeeze=False,
                                sharey=True)
    for panel, spec in zip(axes[0], specs, strict=True):
        for index, key in enumerate(keys):
            mine = [row for row in rows if row.spec.architecture == spec and
                    _curve_key(row) == key]
            colour = _COLOURS.get(spec.kind, "black") if len(keys) == 1 else f"C{index}"
            prefix = f"{_curve_label(key, varying)}: " if varying else ""
            _draw_curve(panel, mine, colour, prefix, axis)
        panel.set_xscale("log")
        panel.xaxis.set_major_formatter(ScalarFormatter())
        panel.xaxis.set_minor_formatter(NullFormatter())
        panel.set_xlabel("α = P / N" if axis == "alpha" else "width N")
        panel.set_title(_architecture_title(spec, specs))
        panel.grid(alpha=0.3)
        panel.margins(y=0.1)  # room for the N= labels under the lowest error bar
        if _retuned_equals_theory([row for row in rows if row.spec.architecture == spec]):
            # Said in the title, where no curve can hide it; the report's caption explains.
            panel.set_title(f"{_architecture_title(spec, specs)}\n"
                            f"{_RETUNED_TITLES.get(spec.kind, _RETUNED_TITLES['fc'])}",
                            fontsize=9)
    axes[0][0].set_ylabel("test loss ε_g (bias² + variance)")
    _shared_legend(figure, axes[0])
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    return _save(figure, path)


#: Why the retuned-prior curve lies on the finite-width theory for FC and LCN.
RETUNED_NOTE = ("retuned priors = theory here: Q̄ is a scalar (FC) or\n"
                "diagonal (LCN), so K_R is an NNGP with readout prior λ1/q̄")


#: Per architecture, why retuned priors reproduce the theory (short, for a panel title).
_RETUNED_TITLES = {
    "fc": "retuned priors ≡ theory: scalar Q̄, K_R = Q̄K/λ1",
    "cnn-gap": "retuned priors ≡ theory: scalar Q̄, K_R = Q̄K/λ1",
    "lcn": "retuned priors ≡ theory: diagonal Q̄, K_R = Σ_i q̄_i K_ii/λ1",
}


def _retuned_equals_theory(rows: Sequence[ResultRow]) -> bool:
    """Whether every retuned-prior estimate equals the finite-width theory at its width."""
    pairs = [(row.theory.test_loss, row.retuned.test_loss) for row in rows
             if row.theory is not None and row.retuned is not None]
    return bool(pairs) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in pairs)


def _neutral(handle: object) -> Line2D:
    """A grey copy of a legend handle: in a legend shared by panels of different colours the
    entry names the line style, the panel's colour names the architecture."""
    if isinstance(handle, Line2D):
        return Line2D([], [], color="0.25", ls=handle.get_linestyle(),
                      lw=handle.get_linewidth(), marker=handle.get_marker())
    return Line2D([], [], color="black", ls="none", marker="o", mfc="white", mec="0.25",
                  markersize=5)  # the sampled networks' errorbar container


def _shared_legend(figure: plt.Figure, panels: Sequence[Axes]) -> None:
    """One legend for all panels, below them: the union of their entries, each once (the
    colour of a curve is its panel's; the line style says what it is)."""
    entries: dict[str, Line2D] = {}
    for panel in panels:
        handles, labels = panel.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, _neutral(handle))
    if entries:
        figure.legend(list(entries.values()), list(entries), loc="lower center",
                      ncol=min(4, len(entries)), fontsize=8, frameon=False, title_fontsize=7,
                      title="colour: architecture · bars: ±1 SE of the sampled estimate · "
                            "labels: width N of each sampled network")


def _by_width(rows: Sequence[ResultRow], get: Callable[[ResultRow], Estimate | None]
              ) -> dict[float, list[Estimate]]:
    out: dict[float, list[Estimate]] = defaultdict(list)
    for row in rows:
        estimate = get(row)
        if estimate is not None:
            out[row.width].append(estimate)
    return out


def _x(width: float, n_train: int, axis: str) -> float:
    return n_train / width if axis == "alpha" else width


def _draw_curve(panel: Axes, rows: Sequence[ResultRow], colour: str, prefix: str,
                axis: str) -> None:
    if not rows:
        return
    n_train = rows[0].n_train
    theory = _by_width(rows, lambda row: row.theory)
    finite = sorted(width for width in theory if not is_infinite(width))
    if finite:
        x = [_x(width, n_train, axis) for width in finite]
        stats = [_mean_and_error([e.test_loss for e in theory[width]]) for width in finite]
        panel.plot(x, [m for m, _ in stats], "-", color=colour,
                   label=f"{prefix}finite-width theory")
        if any(error > 0 for _, error in stats):
            panel.fill_between(x, [m - e for m, e in stats], [m + e for m, e in stats],
                               color=colour, alpha=0.15, linewidth=0)
    infinite = [row.infinite_estimate for row in rows if row.infinite_estimate is not None]
    if infinite:
        panel.axhline(statistics.fmean(e.test_loss for e in infinite), color="gray", ls="--",
                      label=f"{prefix}infinite width (NNGP)")
    retuned = _by_width(rows, lambda row: row.retuned)
    if retuned:
        widths = sorted(retuned)
        # Drawn over the theory line, wide dots, so that it stays visible where they coincide.
        panel.plot([_x(w, n_train, axis) for w in widths],
                   [statistics.fmean(e.test_loss for e in retuned[w]) for w in widths], ":",
                   color="black", lw=1.6, zorder=3,
                   label=f"{prefix}infinite width, retuned priors")
    networks = _by_width(rows, lambda row: row.network)
    if networks:
        widths = sorted(networks)
        means, errors = [], []
        for width in widths:
            estimates = networks[width]
            mean, error = _mean_and_error([e.test_loss for e in estimates])
            if len(estimates) == 1:
                error = estimates[0].test_loss_stderr or 0.0
            means.append(mean)
            errors.append(error)
        x = [_x(w, n_train, axis) for w in widths]
        # Open markers with the bars drawn above them (barsabove), wide caps: a ±1 SE bar
        # shorter than the marker stays visible.
        panel.errorbar(x, means, yerr=errors, fmt="o", color=colour, mfc="white", mew=1.2,
                       ecolor="black", elinewidth=1.3, capsize=5, capthick=1.3, markersize=5,
                       barsabove=True, zorder=4, label=f"{prefix}sampled networks (±1 SE)")
        for x_value, mean, error, width in zip(x, means, errors, widths, strict=True):
            panel.annotate(f"N={width:g}", (x_value, mean - error), textcoords="offset points",
                           xytext=(0, -11), ha="center", fontsize=7, color=colour)


def plot_deviation(agreement: AgreementReport, path: str | Path, *,
                   title: str | None = None) -> Path | None:
    """Network − theory against 1/N per problem with the 1/N fit; None without points."""
    problems = [problem for problem in agreement.problems if problem.points]
    if not problems:
        return None
    figure, axes = plt.subplots(1, len(problems), figsize=(4.4 * len(problems), 3.8),
                                squeeze=False)
    for panel, problem in zip(axes[0], problems, strict=True):
        colour = _COLOURS.get(problem.architecture, "black")
        x = np.array([1.0 / point.width for point in problem.points])
        panel.axhline(0.0, color="gray", lw=0.8)
        reference = [(1.0 / p.width, p.deviation_infinite) for p in problem.points
                     if p.deviation_infinite is not None]
        if reference:
            panel.errorbar([r[0] for r in reference], [r[1] for r in reference],
                           yerr=[p.stderr for p in problem.points
                                 if p.deviation_infinite is not None],
                           fmt="s", mfc="none", color="gray", capsize=2, markersize=4,
                           label="network − theory (N = ∞)")
        panel.errorbar(x, [p.deviation for p in problem.points],
                       yerr=[p.stderr for p in problem.points], fmt="o", color=colour,
                       ecolor="black", capsize=4, markersize=5, barsabove=True,
                       label="network − theory (N) ± 1 SE")
        fit = problem.fit
        if fit.delta_infinity is not None and fit.delta_infinity_stderr is not None:
            grid = np.linspace(0.0, 1.1 * float(x.max()), 100)
            line = np.array([fit.value(value) for value in grid])
            band = np.array([fit.stderr(value) for value in grid])
            panel.plot(grid, line, "-", color=colour, lw=1,
                       label=f"fit δ∞ + c/N ({fit.status})")
            panel.fill_between(grid, line - band, line + band, color=colour, alpha=0.15,
                               linewidth=0)
            panel.errorbar([0.0], [fit.delta_infinity], yerr=[fit.delta_infinity_stderr],
                           fmt="D", color=colour, capsize=3, markersize=5,
                           label="δ∞ = " + value_with_error(fit.delta_infinity,
                                                            fit.delta_infinity_stderr))
        _plot_next_order(panel, problem.next_order_fit, float(x.max()), colour)
        panel.set_xlim(left=-0.03 * float(x.max()))
        panel.set_xlabel("1 / N")
        panel.set_ylabel("Δε_g = ε_g(network) − ε_g(theory)")
        panel.set_title(problem.label.upper() if problem.label == problem.architecture
                        else problem.label)
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _plot_next_order(panel: Axes, fit: InverseWidthFit | None, largest_inverse: float,
                     colour: str) -> None:
    """The fit δ∞ + c/N + d/N² (dashed, no band) and its δ∞ (open diamond, drawn 1 % of the
    axis left of 1/N = 0 so that its error bar does not hide the straight-line fit's), when
    there is one."""
    if fit is None or fit.delta_infinity is None or fit.delta_infinity_stderr is None:
        return
    grid = np.linspace(0.0, 1.1 * largest_inverse, 100)
    panel.plot(grid, [fit.value(value) for value in grid], "--", color=colour, lw=1,
               label=f"fit δ∞ + c/N + d/N² ({fit.status})")
    panel.errorbar([-0.01 * largest_inverse], [fit.delta_infinity],
                   yerr=[fit.delta_infinity_stderr], fmt="D", mfc="white", color=colour,
                   capsize=3, markersize=5,
                   label="δ∞ (next order) = " + value_with_error(fit.delta_infinity,
                                                                  fit.delta_infinity_stderr))


def _values(diagnostics: dict, name: str) -> np.ndarray | None:
    entry = diagnostics.get(name) or {}
    values = entry.get("values")
    return None if values is None else np.asarray(values, dtype=float)


def plot_order_parameters(rows: Sequence[ResultRow], kind: str, path: str | Path
                          ) -> Path | None:
    """CNN: Q̄ − 1 over patch pairs; LCN: q̄_i over the patch grid — the theory (left) next to
    the network's estimate (λ1/N) Σ⟨a aᵀ⟩ (right), one row per sampled width (the theory widths
    when nothing was sampled, at most four) of the first problem of each architecture of this
    kind (two masks of one kind are two blocks of rows, each titled with its mask and stride),
    all panels on one colour scale. None when no stored Q̄ is available."""
    if kind not in ("cnn", "lcn"):
        return None
    # (problem, N) → (Q̄ entries, patch grid) of the theory, and → Q estimate of the network.
    theory: dict[tuple, tuple[np.ndarray, list | None]] = {}
    networks: dict[tuple, np.ndarray] = {}
    for row in rows:
        if row.architecture != kind or is_infinite(row.width):
            continue
        point = (row.spec.problem_key(), row.width)
        if row.theory is not None:
            q_bar = _values(row.theory.diagnostics, "q_bar")
            if q_bar is not None:
                theory[point] = (q_bar, row.theory.diagnostics.get("patch_grid"))
        if row.network is not None:
            matrix = _values(row.network.diagnostics, "q_matrix")
            if matrix is not None:
                networks[point] = matrix
    if not theory:
        return None
    # The first problem of each architecture (mask, stride, activation…) of this kind.
    # problem_key() is (data, architecture, T, λ0, λ1): key[1] is the architecture spec.
    problems: dict[object, tuple] = {}
    for problem, _ in theory:
        problems.setdefault(problem[1], problem)
    specs = [row.spec.architecture for row in rows]
    blocks: list[tuple[tuple, str, list[float]]] = []  # (problem, architecture name, widths)
    for key in problems.values():
        theory_widths = sorted(width for problem, width in theory if problem == key)
        widths = ([width for width in theory_widths if (key, width) in networks]
                  or theory_widths[:4])
        name = _architecture_title(key[1], specs) if len(problems) > 1 else ""
        blocks.append((key, name, widths))
    sampled = any((key, width) in networks for key, _, widths in blocks for width in widths)
    panels: list[tuple[np.ndarray, str]] = []  # (matrix, title) per row: theory, network
    for key, name, widths in blocks:
        where = f"{name}\n" if name else ""  # the architecture on its own title line
        for width in widths:
            q, patch_grid = theory[(key, width)]
            estimate = networks.get((key, width))
            if kind == "cnn":
                panels.append((q - np.eye(q.shape[0]), f"theory Q̄ − 1, {where}N = {width:g}"))
                if estimate is not None:
                    panels.append((estimate - np.eye(estimate.shape[0]),
                                   f"network (λ1/N)Σ⟨a aᵀ⟩ − 1, {where}N = {width:g}"))
            else:
                grid = patch_grid or [1, q.size]
                panels.append((q.reshape(grid), f"theory q̄_i, {where}N = {width:g}"))
                if estimate is not None:
                    panels.append((np.diag(estimate).reshape(grid),
                                   f"network (λ1/N)Σ_k⟨a_ki²⟩, {where}N = {width:g}"))
            if sampled and estimate is None:  # keep theory and network in their columns
                panels.append((np.full((1, 1), np.nan), ""))
    columns = 2 if sampled else 1
    n_rows = sum(len(widths) for _, _, widths in blocks)
    figure, axes = plt.subplots(n_rows, columns, figsize=(3.6 * columns + 1.0,
                                                          3.1 * n_rows + 0.6),
                                squeeze=False, layout="constrained")
    matrices = [matrix for matrix, title in panels if title]
    if kind == "cnn":
        bound = max(float(np.max(np.abs(matrix))) for matrix in matrices)
        limits, cmap = (-bound, bound), "RdBu_r"
        labels = ("patch j", "patch i")
    else:
        limits = (min(float(m.min()) for m in matrices), max(float(m.max()) for m in matrices))
        cmap, labels = "viridis", ("patch column", "patch row")
    image = None
    for panel, (matrix, panel_title) in zip(axes.ravel(), panels, strict=False):
        if not panel_title:
            panel.set_visible(False)
            continue
        image = panel.imshow(matrix, cmap=cmap, vmin=limits[0], vmax=limits[1])
        panel.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        panel.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        panel.tick_params(labelsize=7)
        panel.set_title(panel_title, fontsize=8)
        panel.set_xlabel(labels[0], fontsize=8)
        panel.set_ylabel(labels[1], fontsize=8)
    for panel in axes.ravel()[len(panels):]:
        panel.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                        label="Q̄_ij − δ_ij" if kind == "cnn" else "q̄_i")
    figure.suptitle(f"{kind.upper()} order parameters: theory vs sampled network "
                    f"(one colour scale)", fontsize=9)
    return _save(figure, path)


def plot_kernel_alignment(rows: Sequence[ResultRow], path: str | Path) -> Path | None:
    """Centred kernel–target alignment of the posterior hidden kernel and of the NNGP kernel
    against N, per architecture; None when no network recorded kernels."""
    points = [row for row in rows if row.network is not None
              and row.network.diagnostics.get("kernel_alignment")]
    if not points:
        return None
    figure, panel = plt.subplots(figsize=(6.4, 5.2))
    nngp_lines: dict[float, list[str]] = {}
    # One curve per architecture (kind, activation, mask, stride…): a config may mix
    # activations (entries' own activation) and masks of one kind.
    specs = [row.spec.architecture for row in points]
    architectures = list(dict.fromkeys(specs))
    for index, architecture in enumerate(architectures):
        mine = sorted((row for row in points if row.spec.architecture == architecture),
                      key=lambda row: row.width)
        kind = architecture.kind
        colour = _COLOURS.get(kind, "black")
        alignments = [row.network.diagnostics["kernel_alignment"] for row in mine
                      if row.network is not None]
        widths = [row.width for row in mine]
        name = _architecture_title(architecture, specs)
        earlier_of_kind = sum(other.kind == kind for other in architectures[:index])
        style = ("o-", "s:", "^--", "v-.")[earlier_of_kind % 4]
        panel.plot(widths, [a["centered_target_alignment_posterior"] for a in alignments],
                   style, color=colour, label=f"{name}: posterior hidden kernel")
        # The NNGP kernel does not depend on N: one level per architecture. CNN and LCN with
        # non-overlapping patches share it exactly, so equal levels are drawn once and named
        # together rather than one line hiding the other.
        level = round(statistics.fmean(a["centered_target_alignment_nngp"] for a in alignments),
                      12)
        nngp_lines.setdefault(level, []).append(name)
    styles = ["--", "-.", ":"]
    for index, (level, kinds) in enumerate(nngp_lines.items()):
        colour = (_COLOURS.get(kinds[0].split()[0].lower(), "black") if len(kinds) == 1
                  else "0.3")
        names = " = ".join(kinds)
        note = " (identical kernels)" if len(kinds) > 1 else ""
        panel.axhline(level, color=colour, ls=styles[index % len(styles)], lw=1.4,
                      label=f"{names}: NNGP kernel (N = ∞){note}")
    panel.set_xscale("log")
    panel.xaxis.set_major_formatter(ScalarFormatter())
    panel.xaxis.set_minor_formatter(NullFormatter())
    panel.set_xticks(sorted({row.width for row in points}))
    panel.set_xlabel("width N of the sampled network")
    panel.set_ylabel("centred alignment A(K, y yᵀ) on the training set")
    panel.set_title("Kernel–target alignment: posterior hidden kernel ⟨Φ Φᵀ⟩\n"
                    "of the sampled networks vs the NNGP kernel", fontsize=9)
    # One column once the mask and stride are in the names (they are long), two otherwise;
    # the legend sits below the axes and the saved image grows to hold it.
    long_names = len({architecture.kind for architecture in architectures}) < len(architectures)
    panel.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                 ncol=1 if long_names else 2, frameon=False)
    panel.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path, tight=True)


def _save(figure: plt.Figure, path: str | Path, *, tight: bool = False) -> Path:
    """Write a figure as PNG; `tight` grows the image to hold artists outside the axes (a
    legend below them) instead of clipping them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight" if tight else None)
    plt.close(figure)
    return path


#: File names of the figures `write_figures` may write.
TEST_LOSS_VS_ALPHA = "test_loss_vs_alpha.png"
LOSS_VS_WIDTH = "loss_vs_width.png"
DEVIATION = "deviation_vs_inverse_width.png"
KERNEL_ALIGNMENT = "kernel_alignment.png"


def write_figures(rows: Sequence[ResultRow], agreement: AgreementReport,
                  output: str | Path, *, title: str | None = None) -> list[Path]:
    """Every figure the rows support, into `output`; returns their paths."""
    output = Path(output)
    if not rows:
        return []
    paths = [plot_test_loss(rows, output / TEST_LOSS_VS_ALPHA, axis="alpha", title=title),
             plot_test_loss(rows, output / LOSS_VS_WIDTH, axis="width", title=title)]
    optional = [plot_deviation(agreement, output / DEVIATION, title=title)]
    for kind in dict.fromkeys(row.architecture for row in rows):
        optional.append(plot_order_parameters(rows, kind, output / f"order_parameters_{kind}.png"))
    optional.append(plot_kernel_alignment(rows, output / KERNEL_ALIGNMENT))
    return paths + [path for path in optional if path is not None]
