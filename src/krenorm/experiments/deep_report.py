"""The depth section of a compare report (docs/deep.md "In compare configs"): for every family
of problems that differ only in depth (same data, kind, activation, T, λ0, λ1), the theory's
deviation from the sampled networks at each depth and width (± the network's standard error,
docs/math/theory.md §6), its 1/N fit per depth (`agreement.fit_inverse_width`), the training
loss of theory and networks, and the metastability check of the deep points (replicas started
from the prior vs from a trained point, `networks.deep_sampling`), disagreements flagged.

Depth-1 rows of a family (one-layer specs) are shown next to the deep ones as the L = 1
baseline: their theory is `fit_theory` and their networks the one-layer samplers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from krenorm.experiments.agreement import (
    AgreementReport,
    InverseWidthFit,
    PointDeviation,
    describe_fit,
    value_with_error,
)
from krenorm.experiments.rows import ResultRow
from krenorm.networks.deep_sampling import RHAT_WARNING
from krenorm.width import width_label

#: The figure of the depth section.
DEVIATION_VS_DEPTH = "deviation_vs_depth.png"

Family = tuple


def _depth(row: ResultRow) -> int:
    return int(getattr(row.spec.architecture, "depth", 1))


def _family(row: ResultRow) -> Family:
    """The problem without its depth (and layer geometries)."""
    spec = row.spec
    return (spec.data, spec.architecture.kind, spec.architecture.activation, spec.temperature,
            spec.lambda0, spec.lambda1)


def _family_label(family: Family) -> str:
    data, kind, activation, temperature, lambda0, lambda1 = family
    classes = dict(data.options).get("classes")
    pair = "" if classes is None else " " + " vs ".join(str(c) for c in classes)
    return (f"{kind.upper()} {activation}, {data.dataset}{pair}, P = {data.n_train}, "
            f"T = {temperature:g}, λ0 = {lambda0:g}, λ1 = {lambda1:g}")


def _families(rows: Sequence[ResultRow]) -> dict[Family, list[ResultRow]]:
    """Families holding at least one deep (L ≥ 2) row, with all their rows."""
    grouped: dict[Family, list[ResultRow]] = {}
    for row in rows:
        grouped.setdefault(_family(row), []).append(row)
    return {family: members for family, members in grouped.items()
            if any(_depth(row) > 1 for row in members)}


def _points(agreement: AgreementReport) -> dict[str, PointDeviation]:
    return {point.spec_hash: point for point in agreement.points}


def _fits(agreement: AgreementReport, members: Sequence[ResultRow]
          ) -> dict[int, InverseWidthFit]:
    """The 1/N fit of each depth of a family (agreement groups points by problem, which
    includes the depth)."""
    keys = {row.spec.problem_key(): _depth(row) for row in members}
    return {keys[problem.key]: problem.fit for problem in agreement.problems
            if problem.key in keys}


def _format(value: float | None, digits: int = 5) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _starts(row: ResultRow) -> str:
    network = row.network
    if network is None:
        return "–"
    starts = network.diagnostics.get("starts")
    if not starts:
        return "not run (L = 1 sampler)" if _depth(row) == 1 else "not run"
    verdict = "agree" if starts["agree"] else "**DISAGREE (metastable)**"
    test = starts["observables"]["test_loss"]
    return (f"{verdict}: prior {test['prior']:.5f} vs trained {test['trained']:.5f} "
            f"(max \\|z\\| {starts['max_abs_z']:.1f})")


def deep_section(rows: Sequence[ResultRow], agreement: AgreementReport,
                 figure: str | None = None) -> list[str]:
    """Markdown lines of the depth section ([] when no row is deep)."""
    families = _families(rows)
    if not families:
        return []
    points = _points(agreement)
    lines = ["## Depth: theory vs sampled deep networks", "",
             "Deviation δ = ε_g(network) − ε_g(theory at the same N) ± the network's standard "
             "error; the deep theory is the renormalized-kernel ansatz of docs/deep.md (one "
             "scalar per layer for FC, one matrix on the last layer's positions for CNN). "
             "Train loss: posterior average of the instantaneous training MSE. Starts: half "
             "of each deep point's replicas start from the prior, half from a gradient-trained "
             "network; their test and train losses must agree within 3 combined SE.", ""]
    if figure:
        lines += [f"![deviation vs 1/N per depth]({figure})", "",
                  f"*{figure}: δ against 1/N, one colour per depth, error bars ± 1 SE, dashed "
                  "the weighted fit δ∞ + c/N; one panel per family.*", ""]
    flagged: list[str] = []
    unmixed: list[str] = []
    for family, members in families.items():
        lines += [f"### {_family_label(family)}", "",
                  "| L | N | α | NNGP ε_g | theory ε_g | network ε_g | deviation δ | z | "
                  "theory train loss | network train loss | R̂ | ESS | starts |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        infinite = {}
        theory_train = {}
        for row in members:
            if row.theory is not None:
                theory_train[(_depth(row), row.width)] = row.theory.train_loss
            estimate = row.infinite_estimate
            if estimate is not None:
                infinite[_depth(row)] = estimate.test_loss
        sampled = sorted((row for row in members if row.network is not None),
                         key=lambda row: (_depth(row), row.width))
        for row in sampled:
            network = row.network
            assert network is not None
            depth = _depth(row)
            point = points.get(row.spec_hash)
            details = network.diagnostics
            train = network.train_loss
            train_se = details.get("train_loss_stderr")
            network_train = ("–" if train is None else
                             value_with_error(train, train_se).lstrip("+") if train_se
                             else f"{train:.5f}")
            deviation = ("–" if point is None
                         else value_with_error(point.deviation, point.stderr))
            z = "–" if point is None else f"{point.z:+.1f}"
            network_loss = ("–" if network.test_loss_stderr is None else value_with_error(
                network.test_loss, network.test_loss_stderr).lstrip("+"))
            rhat = details.get("rhat")
            lines.append(
                f"| {depth} | {width_label(row.width)} | {network.alpha:.3g} | "
                f"{_format(infinite.get(depth))} | "
                f"{_format(None if point is None else point.theory)} | {network_loss} | "
                f"{deviation} | {z} | {_format(theory_train.get((depth, row.width)))} | "
                f"{network_train} | {'–' if rhat is None else f'{rhat:.3f}'} | "
                f"{_format(details.get('ess'), 0)} | {_starts(row)} |")
            starts = details.get("starts")
            where = f"{_family_label(family)}, L = {depth}, N = {width_label(row.width)}"
            if starts and not starts["agree"]:
                flagged.append(where)
            if starts and rhat is not None and rhat > RHAT_WARNING:
                unmixed.append(f"{where} (R̂ = {rhat:.2f})")
        lines.append("")
        fits = _fits(agreement, members)
        if fits:
            lines += ["| L | 1/N fit of δ |", "|---|---|"]
            for depth in sorted(fits):
                lines.append(f"| {depth} | {describe_fit(fits[depth])} |")
            lines.append("")
    if flagged:
        lines += ["**Metastability flagged** (prior- and trained-started replicas disagree; "
                  "the pooled estimate of these points is not a posterior average):", ""]
        lines += [f"- {item}" for item in flagged]
        lines.append("")
    else:
        lines += ["Metastability check: every deep point's prior- and trained-started replicas "
                  "agree within 3 combined standard errors.", ""]
    if unmixed:
        lines += [f"**Chains not mixed** (R̂ of the test loss > {RHAT_WARNING}): the standard "
                  "errors of these points — and so their deviations' z and the start "
                  "comparison — are unreliable; an agreement of the starts there is "
                  "inconclusive, not a pass:", ""]
        lines += [f"- {item}" for item in unmixed]
        lines.append("")
    return lines


def write_deep_figure(rows: Sequence[ResultRow], agreement: AgreementReport,
                      output_dir: str | Path) -> Path | None:
    """δ vs 1/N per depth with ± SE bars and the 1/N fits, one panel per family (None when no
    family has a deep sampled point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = _families(rows)
    points = _points(agreement)
    panels = [(family, members) for family, members in families.items()
              if any(row.spec_hash in points for row in members)]
    if not panels:
        return None
    columns = min(3, len(panels))
    n_rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(n_rows, columns, figsize=(4.6 * columns, 3.6 * n_rows),
                                squeeze=False)
    colours = {1: "tab:blue", 2: "tab:orange", 3: "tab:green", 4: "tab:red"}
    for axis, (family, members) in zip(axes.flat, panels, strict=False):
        fits = _fits(agreement, members)
        for depth in sorted({_depth(row) for row in members}):
            mine = [points[row.spec_hash] for row in members
                    if _depth(row) == depth and row.spec_hash in points]
            if not mine:
                continue
            colour = colours.get(depth, "black")
            inverse = [1 / p.width for p in mine]
            axis.errorbar(inverse, [p.deviation for p in mine], [p.stderr for p in mine],
                          fmt="o", color=colour, capsize=3, label=f"L = {depth}")
            fit = fits.get(depth)
            if fit is not None and fit.delta_infinity is not None and fit.slope is not None:
                grid = [0.0, max(inverse) * 1.1]
                axis.plot(grid, [fit.delta_infinity + fit.slope * g for g in grid], "--",
                          color=colour, linewidth=1)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlim(left=0.0)
        axis.set_xlabel("1/N")
        axis.set_ylabel("δ = ε_g(network) − ε_g(theory)")
        axis.set_title(_family_label(family).split(", P =")[0], fontsize=9)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    path = Path(output_dir) / DEVIATION_VS_DEPTH
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
