"""`krenorm report DB`: the status of a results store in the terminal (point counts, failures,
a table of finished points) and the same report files a compare run writes (`report`), for one
sweep or the whole store.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rich.table import Table

from krenorm.experiments.figures import plot_test_loss
from krenorm.experiments.report import ReportContext, ReportFiles, write_report
from krenorm.experiments.rows import ResultRow, result_rows
from krenorm.experiments.store import ResultsStore
from krenorm.width import width_label

__all__ = ["ReportFiles", "plot_loss_vs_width", "results_table", "status_table",
           "sweep_rows", "write_sweep_report"]

#: Spec columns of the results table: header and row field; shown only when they vary (the
#: constant ones go in the caption), except architecture and width.
_SPEC_COLUMNS = (("dataset", "dataset"), ("P", "n_train"), ("arch", "architecture"),
                 ("σ", "activation"), ("N", "width"), ("T", "temperature"), ("λ0", "lambda0"),
                 ("λ1", "lambda1"), ("seed", "data_seed"), ("net seed", "network_seed"))
_ALWAYS_SHOWN = ("architecture", "width")


def _number(value: float | None, digits: int = 5) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _value(name: str, value: Any) -> str:
    if name == "width":
        return width_label(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_key(row: ResultRow) -> tuple:
    return (row.dataset, row.n_train, row.architecture, row.activation, row.width,
            row.temperature, row.lambda0, row.lambda1, row.data_seed,
            -1 if row.network_seed is None else row.network_seed)


def results_table(rows: list[ResultRow]) -> Table:
    """A rich Table of finished points, sorted by spec (non-converged theory flagged)."""
    shown = [(header, name) for header, name in _SPEC_COLUMNS
             if name in _ALWAYS_SHOWN or len({getattr(row, name) for row in rows}) > 1]
    constant = [f"{header} = {_value(name, getattr(rows[0], name))}"
                for header, name in _SPEC_COLUMNS
                if rows and (header, name) not in shown and getattr(rows[0], name) is not None]
    table = Table(*(header for header, _ in shown), "ε_g theory", "ε_g N=∞",
                  "ε_g network ± s.e.", "s", title="finished points",
                  caption=", ".join(constant) or None)
    for row in sorted(rows, key=_sort_key):
        network = ("–" if row.network_loss is None
                   else f"{row.network_loss:.5g} ± {_number(row.network_stderr, 2)}")
        theory = _number(row.theory_loss)
        if row.converged is False:
            theory += " (not converged)"
        table.add_row(*(_value(name, getattr(row, name)) for _, name in shown), theory,
                      _number(row.infinite_loss), network, _number(row.seconds, 2))
    return table


def status_table(store: ResultsStore, sweep: str | None = None) -> Table:
    """A rich Table of point counts per status and the last error of each failed point."""
    table = Table("status", "points", title=f"sweep {sweep}" if sweep else "store")
    for status, count in store.counts(sweep).items():
        table.add_row(status, str(count))
    failed = store.records(sweep, status="failed")
    if failed:
        table.add_section()
        for record in failed:
            last_line = (record.error or "").strip().splitlines()[-1:] or [""]
            table.add_row(f"failed: {record.label}", f"{record.attempts} tries: {last_line[0]}")
    return table


def write_sweep_report(db: str | Path, output_dir: str | Path, sweep: str | None = None
                       ) -> ReportFiles:
    """Write results.csv, results.json, the figures and report.md of the finished points of one
    sweep (or of the whole store) into `output_dir` (`report.write_report`)."""
    with ResultsStore(db, read_only=True) as store:
        rows = result_rows(store, sweep)
        sweeps = store.sweeps()
    name = sweep or (sweeps[0] if len(sweeps) == 1 else Path(db).stem)
    title = f"{name}: kernel renormalization theory vs sampled networks"
    return write_report(rows, output_dir, context=ReportContext(title))


def sweep_rows(store: ResultsStore, sweep: str | None = None) -> list[ResultRow]:
    """Deprecated: use `krenorm.experiments.rows.result_rows`."""
    warnings.warn("sweep_report.sweep_rows is deprecated; use "
                  "krenorm.experiments.rows.result_rows.", DeprecationWarning, stacklevel=2)
    return result_rows(store, sweep)


def plot_loss_vs_width(rows: list[ResultRow], path: str | Path) -> Path:
    """Deprecated: use `krenorm.experiments.figures.plot_test_loss(rows, path, axis='width')`."""
    warnings.warn("sweep_report.plot_loss_vs_width is deprecated; use "
                  "krenorm.experiments.figures.plot_test_loss(..., axis='width').",
                  DeprecationWarning, stacklevel=2)
    return plot_test_loss(rows, path, axis="width")


def __getattr__(name: str) -> Any:
    if name == "SweepRow":
        warnings.warn("sweep_report.SweepRow is deprecated; the one row type is "
                      "krenorm.experiments.rows.ResultRow.", DeprecationWarning, stacklevel=2)
        return ResultRow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
