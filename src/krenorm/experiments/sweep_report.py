"""Tables and figures from a results store (`krenorm report DB`): one row per finished point,
the store's status counts and failures, and test loss ε_g against width N per architecture
(THEORY.md §6: ε_g = bias² + variance on the test set), averaged over seeds.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from krenorm.experiments.store import ResultsStore

#: Spec fields that label a curve; seeds are averaged over.
_CURVE_FIELDS = ("dataset", "n_train", "temperature", "lambda0", "lambda1", "activation")
_CURVE_LABELS = {"dataset": "data", "n_train": "P", "temperature": "T", "lambda0": "λ0",
                 "lambda1": "λ1", "activation": "σ"}


@dataclass(frozen=True)
class SweepRow:
    """One finished point, flattened for tables: the spec fields a reader compares and the
    headline metrics (None where the point did not compute them)."""

    spec_hash: str
    dataset: str
    n_train: int
    architecture: str
    activation: str
    width: float
    temperature: float
    lambda0: float
    lambda1: float
    data_seed: int
    network_seed: int | None
    theory_loss: float | None
    infinite_loss: float | None
    network_loss: float | None
    network_stderr: float | None
    converged: bool | None
    seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReportFiles:
    """What `write_sweep_report` wrote."""

    table_csv: Path
    figure: Path | None

    def to_dict(self) -> dict:
        return {"table_csv": str(self.table_csv),
                "figure": None if self.figure is None else str(self.figure)}


def sweep_rows(store: ResultsStore, sweep: str | None = None) -> list[SweepRow]:
    """Finished points of one sweep (or of the whole store), in sweep order."""
    rows = []
    for record in store.records(sweep, status="done"):
        spec, metrics = record.spec, record.metrics
        network = spec.get("network")
        rows.append(SweepRow(
            record.spec_hash, spec["data"]["dataset"], spec["data"]["n_train"],
            spec["architecture"]["kind"], spec["architecture"]["activation"], spec["width"],
            spec["temperature"], spec["lambda0"], spec["lambda1"], spec["data"]["seed"],
            None if network is None else network["seed"], metrics.get("theory.test_loss"),
            metrics.get("theory_infinite.test_loss"), metrics.get("network.test_loss"),
            metrics.get("network.test_loss_stderr"), metrics.get("theory.converged"),
            record.seconds))
    return rows


def _number(value: float | None, digits: int = 5) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


#: Spec columns of the results table: header and row field; shown only when they vary (the
#: constant ones go in the caption), except architecture and width.
_SPEC_COLUMNS = (("dataset", "dataset"), ("P", "n_train"), ("arch", "architecture"),
                 ("σ", "activation"), ("N", "width"), ("T", "temperature"), ("λ0", "lambda0"),
                 ("λ1", "lambda1"), ("seed", "data_seed"), ("net seed", "network_seed"))
_ALWAYS_SHOWN = ("architecture", "width")


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_key(row: SweepRow) -> tuple:
    return (row.dataset, row.n_train, row.architecture, row.activation, row.width,
            row.temperature, row.lambda0, row.lambda1, row.data_seed,
            -1 if row.network_seed is None else row.network_seed)


def results_table(rows: list[SweepRow]):
    """A rich Table of finished points, sorted by spec (non-converged theory flagged)."""
    from rich.table import Table

    shown = [(header, name) for header, name in _SPEC_COLUMNS
             if name in _ALWAYS_SHOWN or len({getattr(row, name) for row in rows}) > 1]
    constant = [f"{header} = {_value(getattr(rows[0], name))}" for header, name in _SPEC_COLUMNS
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
        table.add_row(*(_value(getattr(row, name)) for _, name in shown), theory,
                      _number(row.infinite_loss), network, _number(row.seconds, 2))
    return table


def status_table(store: ResultsStore, sweep: str | None = None):
    """A rich Table of point counts per status and the last error of each failed point."""
    from rich.table import Table

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


def _mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean over seeds and its standard error (0 for a single seed)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, error


def plot_loss_vs_width(rows: list[SweepRow], path: str | Path) -> Path:
    """Test loss against width N (log axis), one panel per architecture: theory at width N as a
    line with a band of ± its standard error over seeds, sampled networks as points with error
    bars (seed standard error, or the chain's standard error for one seed), N → ∞ as a dashed
    line; one colour per (dataset, P, T, λ0, λ1, activation) that varies in the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    architectures = sorted({row.architecture for row in rows})
    varying = [name for name in _CURVE_FIELDS if len({getattr(row, name) for row in rows}) > 1]
    figure, axes = plt.subplots(1, len(architectures), figsize=(4.5 * len(architectures), 3.6),
                                squeeze=False, constrained_layout=True)
    for axis, architecture in zip(axes[0], architectures, strict=True):
        curves: dict[tuple, dict[float, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        for row in rows:
            if row.architecture != architecture:
                continue
            point = curves[tuple(getattr(row, name) for name in varying)][row.width]
            for key in ("theory_loss", "infinite_loss", "network_loss", "network_stderr"):
                if getattr(row, key) is not None:
                    point[key].append(getattr(row, key))
        for index, (key, by_width) in enumerate(sorted(curves.items())):
            colour = f"C{index}"
            label = ", ".join(f"{_CURVE_LABELS[name]}={_value(value)}"
                              for name, value in zip(varying, key, strict=True))
            widths = sorted(by_width)
            theory = [(w, *_mean_and_error(by_width[w]["theory_loss"])) for w in widths
                      if by_width[w]["theory_loss"]]
            if theory:
                x, mean, error = (list(column) for column in zip(*theory, strict=True))
                axis.plot(x, mean, "-", color=colour, label=f"theory {label}".strip())
                axis.fill_between(x, [m - e for m, e in zip(mean, error, strict=True)],
                                  [m + e for m, e in zip(mean, error, strict=True)],
                                  color=colour, alpha=0.12, linewidth=0)
            network = [(w, *_mean_and_error(by_width[w]["network_loss"])) for w in widths
                       if by_width[w]["network_loss"]]
            if network:
                errors = [error if error > 0 else statistics.fmean(by_width[w]["network_stderr"]
                                                                   or [0.0])
                          for w, _, error in network]
                axis.errorbar([w for w, _, _ in network], [m for _, m, _ in network],
                              yerr=errors, fmt="o", color=colour, capsize=3,
                              label=f"network {label}".strip())
            infinite = [value for w in widths for value in by_width[w]["infinite_loss"]]
            if infinite:
                axis.axhline(statistics.fmean(infinite), color=colour, linestyle="--",
                             linewidth=1, label=f"N = ∞ {label}".strip())
        axis.set_xscale("log")
        axis.set_xlabel("width N")
        axis.set_ylabel("test loss ε_g")
        axis.set_title(architecture)
        axis.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_sweep_report(db: str | Path, output_dir: str | Path, sweep: str | None = None
                       ) -> ReportFiles:
    """Write results.csv (one row per finished point) and loss_vs_width.png (when any point
    finished) for one sweep or the whole store."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with ResultsStore(db) as store:
        rows = sweep_rows(store, sweep)
    table_path = output / "results.csv"
    with table_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SweepRow.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_dict())
    figure = plot_loss_vs_width(rows, output / "loss_vs_width.png") if rows else None
    return ReportFiles(table_path, figure)
