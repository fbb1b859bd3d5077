"""The report of a run — `krenorm compare`, `krenorm demo` and `krenorm report DB` alike — from
result rows (`rows.ResultRow`): results.csv (one row per finished point), results.json (rows,
per-point deviations, 1/N fits, provenance), order_parameters.json (Q̄ per architecture and
width, theory and network), the figures (`figures`) and report.md.

report.md holds no timing or host, so the same finished points give the same report however
they were run (in one go, resumed after a kill, on a pool or a Dask cluster).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krenorm.experiments.agreement import (
    AGREEMENT_STANDARD_ERRORS,
    AgreementReport,
    InverseWidthFit,
    compare_networks,
    describe_fit,
)
from krenorm.experiments.deep_report import deep_section, write_deep_figure
from krenorm.experiments.figures import (
    DEVIATION,
    KERNEL_ALIGNMENT,
    LOSS_VS_WIDTH,
    RETUNED_NOTE,
    TEST_LOSS_VS_ALPHA,
    write_figures,
)
from krenorm.experiments.rows import ROW_FIELDS, ResultRow, problem_labels
from krenorm.width import is_infinite, width_label


@dataclass(frozen=True)
class ReportContext:
    """What the rows do not say: the run's title and the notes of its config."""

    title: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"title": self.title, "notes": list(self.notes)}


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote. figure: the test-loss-vs-N figure (None without rows)."""

    table_csv: Path
    figure: Path | None
    report: Path | None = None
    results_json: Path | None = None
    figures: tuple[Path, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"table_csv": str(self.table_csv),
                "figure": None if self.figure is None else str(self.figure),
                "report": None if self.report is None else str(self.report),
                "results_json": None if self.results_json is None else str(self.results_json),
                "figures": [str(path) for path in self.figures]}


def _format(value: Any, digits: int = 5) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _constant(rows: Sequence[ResultRow], get: Any) -> Any:
    values = {get(row) for row in rows}
    return values.pop() if len(values) == 1 else None


def _setup_lines(rows: Sequence[ResultRow]) -> list[str]:
    """Data, hyper-parameters and sampler settings, where all points share them."""
    first = rows[0]
    data = first.provenance.get("data", {}) if first.provenance else {}
    lines = []
    spec = _constant(rows, lambda row: (row.spec.data.dataset, row.spec.data.n_train,
                                        row.spec.data.n_test, row.spec.data.options))
    if spec is not None:
        dataset, n_train, n_test, options = spec
        described = ", ".join(f"{name} {list(value) if isinstance(value, tuple) else value}"
                              for name, value in options)
        lines.append(f"Data: {data.get('description', dataset)}; P = {n_train} training and "
                     f"{n_test} test points{'; ' + described if described else ''}.")
    hyper = _constant(rows, lambda row: (row.temperature, row.lambda0, row.lambda1))
    if hyper is not None:
        temperature, lambda0, lambda1 = hyper
        # One activation for all, or several (the problem labels then name each one's).
        activation = _constant(rows, lambda row: row.activation)
        activations = (f"activation {activation}" if activation is not None else
                       "activations " + ", ".join(dict.fromkeys(row.activation for row in rows))
                       + " (per problem)")
        lines.append(f"Hyper-parameters: T = {temperature:g}, λ0 = {lambda0:g}, "
                     f"λ1 = {lambda1:g}, {activations}.")
    sampled = [row for row in rows if row.spec.network is not None]
    settings = _constant(sampled, lambda row: row.spec.network)
    if settings is not None:
        lines.append(f"Networks: {settings.sampler} sampler, {settings.n_replicas} replicas × "
                     f"{settings.n_steps} steps (burn-in {settings.effective_burn_in}), "
                     f"seed {settings.seed}, {settings.dtype}.")
    return lines


def _agreement_section(agreement: AgreementReport) -> list[str]:
    if not agreement.points and not agreement.unmatched:
        return []
    lines = [
        "## Networks vs theory",
        "",
        "Deviation δ = ε_g(network) − ε_g(theory at the same N), with the standard error (SE) of "
        "the network estimate (the theory is deterministic); z = δ / SE. The last columns "
        "compare with the infinite-width theory, for scale. A deviation is consistent with "
        f"zero when |z| < {AGREEMENT_STANDARD_ERRORS:g}. The SEs come from the chains' "
        "integrated autocorrelation times and assume mixed chains (see the sampler "
        "diagnostics).",
        "",
        "| problem | N | network ε_g ± SE | theory (N) | δ ± SE | z | theory (N = ∞) | "
        "network − theory (∞) | z (∞) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in agreement.points:
        lines.append(
            f"| {point.label} | {width_label(point.width)} | {point.network:.5f} ± "
            f"{point.stderr:.5f} | {point.theory:.5f} | {point.deviation:+.5f} ± "
            f"{point.stderr:.5f} | {point.z:+.1f} | {_format(point.infinite)} | "
            f"{_signed(point.deviation_infinite)} | {_signed(point.z_infinite, 1)} |")
    lines += ["", "### Scaling with N", "",
              "Weighted least-squares fit of δ(N) = δ∞ + c/N per problem (weights 1/SE²; "
              "parameter errors from the inverse normal matrix). The theory is exact up to "
              "O(1/N) fluctuation corrections, so δ∞ should be consistent with zero; c measures "
              "the size of those corrections. With four or more widths the fit with the next "
              "order, δ∞ + c/N + d/N², is given beneath: over a wide range of N the deviation "
              "bends in 1/N, and a failed straight-line χ² test with a passing next-order one "
              "is that curvature, not a residual at N → ∞.", ""]
    for problem in agreement.problems:
        lines.append(f"- **{problem.label}**: {describe_fit(problem.fit)} "
                     f"{explain_fit(problem.fit)}")
        if problem.next_order_fit is not None:
            lines.append(f"  - next order: {describe_fit(problem.next_order_fit)}")
    if agreement.unmatched:
        lines += ["", "Network points without a comparison: "
                  + "; ".join(agreement.unmatched) + "."]
    return [*lines, ""]


def explain_fit(fit: InverseWidthFit) -> str:
    """What the verdict on δ∞ means, in one or two sentences (next to every verdict)."""
    if fit.consistent_with_zero is None:
        return ("Why no verdict: one sampled width cannot separate the theory's O(1/N) "
                "corrections from a real disagreement.")
    if fit.p_value is not None and fit.p_value < 0.05:
        return ("Meaning: the points do not lie on a straight line in 1/N, so this δ∞ is no "
                "verdict on the limit N → ∞: higher orders in 1/N (see the next-order fit, "
                "where given) or unmixed chains (see the sampler diagnostics).")
    if fit.consistent_with_zero:
        return ("Meaning: the network agrees with the theory once the O(1/N) corrections, "
                "which the theory leaves out, are extrapolated away; per-width deviations "
                "above are that c/N term, not a failure of the theory.")
    return ("Meaning: a deviation survives N → ∞ beyond 2 SE — either the theory misses an "
            "N-independent part on these data, or the SEs are too small because the chains "
            "did not mix (see the sampler diagnostics); run longer chains before concluding.")


def _signed(value: float | None, digits: int = 5) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _sampler_section(rows: Sequence[ResultRow], labels: dict) -> list[str]:
    """Per sampled network: effective sample size of the test loss, acceptance and the
    sampler's own warnings (short chains relative to τ, split-R̂ > 1.1)."""
    order = list(labels)
    sampled = sorted(((row, row.network, row.spec.network) for row in rows
                      if row.network is not None and row.spec.network is not None),
                     key=lambda item: (order.index(item[0].spec.problem_key()), item[0].width))
    if not sampled:
        return []
    lines = ["## Sampler diagnostics", "",
             "R̂: rank-normalised R̂ of the test loss over the replicas (– where the point was "
             "stored before R̂ was recorded).", "",
             "| problem | N | replicas × steps | ESS (test loss) | R̂ | acceptance | notes |",
             "|---|---|---|---|---|---|---|"]
    for row, estimate, settings in sampled:
        details = estimate.diagnostics
        notes = " ".join(details.get("warnings") or []) or "–"
        lines.append(f"| {labels[row.spec.problem_key()]} | {width_label(row.width)} | "
                     f"{settings.n_replicas} × {settings.n_steps} | "
                     f"{_format(details.get('ess'), 4)} | {_format(details.get('rhat'), 3)} | "
                     f"{_format(details.get('acceptance'), 3)} | {notes} |")
    return [*lines, ""]


def _theory_section(rows: Sequence[ResultRow], labels: dict) -> list[str]:
    lines = ["## Theory", ""]
    for key, label in labels.items():
        architecture = key[1]
        mine = [row for row in rows if row.spec.problem_key() == key]
        entries = []
        for row in mine:
            for source, estimate in (("theory", row.theory), ("retuned priors", row.retuned)):
                if estimate is not None:
                    entries.append((source, row.width, estimate))
            if row.infinite is not None:
                entries.append(("theory", float("inf"), row.infinite))
        if not entries:
            continue
        unique = {(source, width): estimate for source, width, estimate in entries}
        ordered = sorted(unique.items(), key=lambda item: (item[0][0] != "theory", item[0][1]))
        heading = label.upper() if label == architecture.kind else label
        if architecture.is_convolutional:
            heading += f" (mask {architecture.mask}, stride {architecture.stride})"
        lines += [f"### {heading}", "",
                  "| source | N | α | ε_g | bias² | variance | train error | "
                  "off-diagonal share | converged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (source, width), estimate in ordered:
            share = estimate.diagnostics.get("off_diagonal_share")
            converged = "–" if estimate.converged is None else (
                "yes" if estimate.converged else "**no**")
            lines.append(f"| {source} | {width_label(width)} | {_format(estimate.alpha, 3)} | "
                         f"{_format(estimate.test_loss)} | {_format(estimate.bias2)} | "
                         f"{_format(estimate.variance)} | {_format(estimate.train_error)} | "
                         f"{_format(share, 3)} | {converged} |")
        lines.append("")
    return lines


def _q_summary(kind: str, matrix: Any) -> tuple[str, ...]:
    """(mean diagonal, mean off-diagonal or min–max) of a Q̄ for the order-parameter table."""
    import numpy as np

    q = np.asarray(matrix, dtype=float)
    if q.size == 1:
        return (f"{float(q.reshape(())):.4f}", "–")
    if q.ndim == 1:  # LCN: q̄_i per patch
        return (f"{q.mean():.4f}", f"{q.min():.3f}…{q.max():.3f}")
    diagonal = np.diag(q)
    if kind == "lcn":
        return (f"{diagonal.mean():.4f}", f"{diagonal.min():.3f}…{diagonal.max():.3f}")
    off = q[~np.eye(q.shape[0], dtype=bool)]
    return (f"{diagonal.mean():.4f}", f"{off.mean():+.4f}")


def _order_parameter_section(rows: Sequence[ResultRow], labels: dict) -> list[str]:
    """Q̄ of the theory next to the network's estimate (λ1/N)Σ⟨a aᵀ⟩ at every sampled width:
    mean diagonal, and mean off-diagonal (CNN) or the range over patches (LCN); the largest
    |z| over the entries where the network's per-entry SEs are stored."""
    import numpy as np

    table: list[tuple[int, float, str]] = []
    order = list(labels)
    theory = {(row.spec.problem_key(), row.width): row.theory for row in rows
              if row.theory is not None and not is_infinite(row.width)}
    for row in rows:
        if row.network is None:
            continue
        key = (row.spec.problem_key(), row.width)
        estimate = row.theory if row.theory is not None else theory.get(key)
        network = (row.network.diagnostics.get("q_matrix") or {}).get("values")
        stored = ((estimate.diagnostics.get("q_bar") or {}).get("values")
                  if estimate is not None else None)
        if network is None or stored is None:
            continue
        kind = row.architecture
        q_theory = np.asarray(stored, dtype=float)
        q_network = np.asarray(network, dtype=float)
        errors = (row.network.diagnostics.get("q_matrix_stderr") or {}).get("values")
        largest_z = "–"
        if errors is not None:
            # Diagonal entries only: an off-diagonal SE from a few replicas can be tiny by chance.
            network_diagonal = np.diag(q_network) if q_network.ndim == 2 else q_network
            theory_diagonal = (np.diag(q_theory) if q_theory.ndim == 2
                               else q_theory.reshape(network_diagonal.shape))
            se = np.asarray(errors, dtype=float)
            se = np.diag(se) if se.ndim == 2 else se.reshape(network_diagonal.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.abs(network_diagonal - theory_diagonal) / se
            finite = z[np.isfinite(z)]
            largest_z = f"{finite.max():.1f}" if finite.size else "–"
        theory_diag, theory_other = _q_summary(kind, q_theory)
        network_diag, network_other = _q_summary(kind, q_network)
        table.append((order.index(row.spec.problem_key()), row.width,
                      f"| {labels[row.spec.problem_key()]} at N = {width_label(row.width)} | "
                      f"{theory_diag} | {network_diag} | {theory_other} | {network_other} | "
                      f"{largest_z} |"))
    if not table:
        return []
    return ["## Order parameters: theory vs network", "",
            "Q̄ of the theory (docs/math/theory.md §3) next to the network's estimate "
            "(λ1/N)Σ⟨a aᵀ⟩ at the same N. 'Diagonal' is the mean of Q̄_ii (the scalar Q̄ for FC); "
            "'other' is the mean off-diagonal Q̄_ij (CNN) or the range of q̄_i over patches "
            "(LCN); max |z| is the largest |network − theory| / SE over the diagonal entries "
            "(the SEs come from the replicas and assume mixed chains).", "",
            "| problem | diagonal (theory) | diagonal (network) | other (theory) | "
            "other (network) | max \\|z\\| (diagonal) |",
            "|---|---|---|---|---|---|", *(line for _, _, line in sorted(table)), ""]


#: One caption per figure file (order_parameters_<kind>.png are matched by prefix).
FIGURE_CAPTIONS = {
    TEST_LOSS_VS_ALPHA: "Test loss ε_g against α = P/N, one panel per architecture: "
                        "finite-width theory (solid), infinite width (dashed), infinite width "
                        "with retuned readout priors (dotted) and sampled networks (open "
                        "circles, ±1 SE bars, labelled with their width N). Where the dotted "
                        f"curve lies on the solid one: {RETUNED_NOTE.replace(chr(10), ' ')}.",
    LOSS_VS_WIDTH: "The same test losses against the width N.",
    DEVIATION: "Deviation network − theory against 1/N with ±1 SE bars, the weighted fit "
               "δ∞ + c/N with its ±1σ band and δ∞ at 1/N = 0 (diamond); from four widths "
               "up also the next-order fit δ∞ + c/N + d/N² (dashed) and its δ∞ (open diamond, "
               "drawn just left of 1/N = 0); grey squares: deviation from the N = ∞ theory, "
               "for scale.",
    KERNEL_ALIGNMENT: "Centred kernel–target alignment A(K, yyᵀ) on the training set of the "
                      "posterior-averaged hidden kernel ⟨ΦΦᵀ⟩ of the sampled networks "
                      "(points) and of the NNGP kernel (horizontal lines; CNN and LCN with "
                      "non-overlapping patches share one NNGP kernel). No error bars: the "
                      "hidden kernel is averaged over replicas before the alignment is taken. "
                      "No theory curve: the theory predicts the readout's kernel K_R, not "
                      "⟨ΦΦᵀ⟩; for FC K_R = Q̄K/λ1 has exactly the NNGP's alignment.",
    "order_parameters": "Order parameters at every sampled width on one colour scale: "
                        "theory Q̄ (left) and the network estimate (λ1/N)Σ⟨a aᵀ⟩ (right); "
                        "CNN: Q̄ − 1 over patch pairs (i, j); LCN: q̄_i over the patch grid.",
}


def figure_caption(name: str) -> str:
    """The caption of a figure file of `write_figures`."""
    if name.startswith("order_parameters_"):
        kind = name.removeprefix("order_parameters_").removesuffix(".png").upper()
        return f"{kind}. {FIGURE_CAPTIONS['order_parameters']}"
    return FIGURE_CAPTIONS.get(name, "")


def render_report(rows: Sequence[ResultRow], agreement: AgreementReport,
                  context: ReportContext, figures: Sequence[str]) -> str:
    """report.md as text."""
    lines = [f"# {context.title}", ""]
    if rows:
        lines += [*_setup_lines(rows), ""]
    lines += [f"> {note}" for note in context.notes]
    if context.notes:
        lines.append("")
    labels = problem_labels(list(dict.fromkeys(row.spec.problem_key() for row in rows)))
    lines += _agreement_section(agreement)
    lines += _order_parameter_section(rows, labels)
    lines += _sampler_section(rows, labels)
    lines += _theory_section(rows, labels)
    lines += ["## Figures", ""]
    for number, name in enumerate(sorted(figures), start=1):
        lines += [f"![{name}]({name})", "", f"*Figure {number} ({name}).* {figure_caption(name)}",
                  ""]
    versions = rows[0].provenance if rows else {}
    lines += ["", f"Tables: results.csv, results.json; order parameters: "
                  f"order_parameters.json. krenorm {versions.get('krenorm')}, torch "
                  f"{versions.get('torch')}."]
    return "\n".join(lines) + "\n"


def order_parameters(rows: Sequence[ResultRow]) -> dict:
    """Q̄ per problem label and finite width: the theory's (entries, when stored) and the
    network estimate (λ1/N)Σ⟨a aᵀ⟩ with its per-entry standard errors, plus the patch grid."""
    labels = problem_labels(list(dict.fromkeys(row.spec.problem_key() for row in rows)))
    out: dict[str, dict] = {}
    for row in rows:
        entry = out.setdefault(labels[row.spec.problem_key()],
                               {"theory": {}, "network": {}, "grid": None})
        label = f"{row.width:g}"
        if row.theory is not None and not is_infinite(row.width):
            stored = row.theory.diagnostics.get("q_bar") or {}
            if "values" in stored:
                entry["theory"][label] = stored["values"]
            entry["grid"] = entry["grid"] or row.theory.diagnostics.get("patch_grid")
        if row.network is not None:
            matrix = row.network.diagnostics.get("q_matrix") or {}
            stderr = row.network.diagnostics.get("q_matrix_stderr") or {}
            if "values" in matrix:
                entry["network"][label] = {"q_matrix": matrix["values"],
                                           "stderr": stderr.get("values")}
    return out


def _row_payload(row: ResultRow) -> dict:
    return {"spec_hash": row.spec_hash, "spec": row.spec.to_dict(), "seconds": row.seconds,
            **{name: None if getattr(row, name) is None else getattr(row, name).to_dict()
               for name in ("theory", "infinite", "retuned", "network")}}


def write_report(rows: Sequence[ResultRow], output_dir: str | Path, *,
                 context: ReportContext) -> ReportFiles:
    """Write the tables, figures and report.md of these rows into `output_dir`."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    agreement = compare_networks(rows)
    table = output / "results.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_dict())
    payload = {"title": context.title, "rows": [_row_payload(row) for row in rows],
               "agreements": [point.to_dict() for point in agreement.points],
               "problems": [problem.to_dict() for problem in agreement.problems],
               "unmatched": list(agreement.unmatched),
               "provenance": rows[0].provenance if rows else {}}
    results_json = output / "results.json"
    results_json.write_text(json.dumps(payload, indent=1, default=str))
    (output / "order_parameters.json").write_text(json.dumps(order_parameters(rows), indent=1))
    figures = write_figures(rows, agreement, output)
    report = output / "report.md"
    text = render_report(rows, agreement, context, [p.name for p in figures])
    # Depth (deep_report): its own section and figure, appended when any row is deep.
    deep_figure = write_deep_figure(rows, agreement, output)
    deep_lines = deep_section(rows, agreement, None if deep_figure is None else deep_figure.name)
    report.write_text(text + ("\n" + "\n".join(deep_lines) + "\n" if deep_lines else ""))
    figures = [*figures, *([deep_figure] if deep_figure is not None else [])]
    loss_vs_width = output / LOSS_VS_WIDTH
    return ReportFiles(table, loss_vs_width if loss_vs_width in figures else None, report,
                       results_json, tuple(figures))


def console_lines(agreement: AgreementReport, width: int = 80) -> list[str]:
    """The agreement in terminal lines no longer than `width` (80 by default): each sampled
    point in one short line, then each problem's 1/N verdict with what it means, wrapped."""
    lines = []
    if agreement.points:
        lines.append("problem  N       network ± SE       theory(N)  deviation δ     z")
    for point in agreement.points:
        lines.append(f"{point.label[:8]:8s} {width_label(point.width):<7} "
                     f"{point.network:.5f} ± {point.stderr:.5f}  {point.theory:.5f}    "
                     f"{point.deviation:+.5f}  {point.z:+6.1f}σ")
    for problem in agreement.problems:
        # One clause of the verdict per line (a clause is never split unless it alone is
        # wider than the terminal), then what it means.
        clauses = f"{problem.label}: {describe_fit(problem.fit)}".split("; ")
        for index, clause in enumerate(clauses):
            lines += textwrap.wrap(clause + (";" if index < len(clauses) - 1 else ""),
                                   width=width, initial_indent="" if index == 0 else "    ",
                                   subsequent_indent="    ")
        lines += textwrap.wrap(explain_fit(problem.fit), width=width, initial_indent="    ",
                               subsequent_indent="    ")
        if problem.next_order_fit is not None:
            lines += textwrap.wrap("next order: " + describe_fit(problem.next_order_fit),
                                   width=width, initial_indent="    ",
                                   subsequent_indent="    ")
    lines += textwrap.wrap("not compared: " + "; ".join(agreement.unmatched), width=width,
                           subsequent_indent="    ") if agreement.unmatched else []
    return lines
