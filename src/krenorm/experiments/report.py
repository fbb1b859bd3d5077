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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krenorm.experiments.agreement import (
    AGREEMENT_STANDARD_ERRORS,
    AgreementReport,
    compare_networks,
    describe_fit,
    describe_point,
)
from krenorm.experiments.figures import LOSS_VS_WIDTH, write_figures
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
    hyper = _constant(rows, lambda row: (row.temperature, row.lambda0, row.lambda1,
                                         row.activation))
    if hyper is not None:
        temperature, lambda0, lambda1, activation = hyper
        lines.append(f"Hyper-parameters: T = {temperature:g}, λ0 = {lambda0:g}, "
                     f"λ1 = {lambda1:g}, activation {activation}.")
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
              "the size of those corrections.", ""]
    lines += [f"- **{problem.label}**: {describe_fit(problem.fit)}"
              for problem in agreement.problems]
    if agreement.unmatched:
        lines += ["", "Network points without a comparison: "
                  + "; ".join(agreement.unmatched) + "."]
    return [*lines, ""]


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
             "| problem | N | replicas × steps | ESS (test loss) | acceptance | notes |",
             "|---|---|---|---|---|---|"]
    for row, estimate, settings in sampled:
        details = estimate.diagnostics
        notes = " ".join(details.get("warnings") or []) or "–"
        lines.append(f"| {labels[row.spec.problem_key()]} | {width_label(row.width)} | "
                     f"{settings.n_replicas} × {settings.n_steps} | "
                     f"{_format(details.get('ess'), 4)} | "
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
    lines += _sampler_section(rows, labels)
    lines += _theory_section(rows, labels)
    lines += ["## Figures", ""]
    lines += [f"![{name}]({name})" for name in sorted(figures)]
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
    report.write_text(render_report(rows, agreement, context, [p.name for p in figures]))
    loss_vs_width = output / LOSS_VS_WIDTH
    return ReportFiles(table, loss_vs_width if loss_vs_width in figures else None, report,
                       results_json, tuple(figures))


def console_lines(agreement: AgreementReport) -> list[str]:
    """The agreement in a few terminal lines: each sampled point, then each problem's fit."""
    lines = [f"{point.label:8s} N={width_label(point.width):<6} {describe_point(point)}"
             for point in agreement.points]
    lines += [f"{problem.label:8s} {describe_fit(problem.fit)}"
              for problem in agreement.problems]
    lines += [f"not compared: {item}" for item in agreement.unmatched]
    return lines

