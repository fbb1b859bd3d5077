"""The main job (`krenorm compare`, `krenorm demo`): the effective theory at finite and infinite
width against sampled finite networks on the same data (docs/math/theory.md §3–6), for every
architecture and width of a `CompareConfig`.

A compare run is a fixed sweep (docs/architecture.md "One pipeline"): its config expands to
`ExperimentSpec`s, `sweep.run_sweep` runs them through the same runner and executors (local
pool, the driver process, or a Dask cluster) into the same SQLite store — results.sqlite in the
output directory unless the config or the caller names another — so an interrupted run resumes
where it stopped; then `report.write_report` writes results.csv / results.json /
order_parameters.json, the figures and report.md from the finished points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from krenorm.experiments.agreement import AgreementReport, PointDeviation, compare_networks
from krenorm.experiments.config import CompareConfig
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.report import ReportContext, ReportFiles, write_report
from krenorm.experiments.rows import Estimate, ResultRow, result_rows
from krenorm.experiments.store import ResultsStore
from krenorm.experiments.sweep import SweepResult, run_sweep

#: Sources `CompareResult.find` knows: the theory at width N (N = math.inf: the NNGP limit),
#: the infinite-width process with retuned readout priors, the sampled network.
FIND_SOURCES = ("theory", "retuned", "network")


@dataclass(frozen=True)
class CompareResult:
    """A finished (or partly failed: see `sweep.failed`) compare run: its rows, the agreement
    of the networks with the theory, what the sweep did and the files written."""

    config: CompareConfig
    rows: tuple[ResultRow, ...]
    agreement: AgreementReport
    output_dir: Path
    sweep: SweepResult
    files: ReportFiles

    def agreements(self) -> list[PointDeviation]:
        """Every sampled point against the theory at its width (and at N = ∞)."""
        return self.agreement.points

    def find(self, architecture: str, source: str, width: float) -> Estimate:
        """The estimate of one source ('theory', 'retuned', 'network') for the first
        architecture of this kind at exactly width N (math.inf for the NNGP theory)."""
        if source not in FIND_SOURCES:
            raise ValueError(f"source must be one of {FIND_SOURCES}, got {source!r}.")
        for row in self.rows:
            if row.architecture != architecture:
                continue
            estimate = getattr(row, source)
            if estimate is not None and row.width == width:
                return estimate
            if source == "theory" and row.infinite is not None and width == float("inf"):
                return row.infinite
        raise KeyError((architecture, source, width))

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "output_dir": str(self.output_dir),
                "sweep": self.sweep.to_dict(), "files": self.files.to_dict(),
                "agreement": self.agreement.to_dict()}


def run_compare(config: CompareConfig, output_dir: str | Path | None = None,
                progress: bool = True, *, workers: int | None = None,
                scheduler: str | None = None, db: str | Path | None = None,
                stale_after_s: float = 120.0) -> CompareResult:
    """Run (or resume) every point of the compare config not yet finished in its store, then
    write tables, figures and the report into `output_dir` (default: the config's).

    workers / scheduler: as for `krenorm sweep` (local pool of `workers` processes, 0 = this
    process, or a Dask scheduler address). db: the results store (default: the config's db,
    else results.sqlite in the output directory). Everything is validated — the data loaded
    once and every architecture checked against it — before any work."""
    output = Path(output_dir or config.output_dir)
    sweep = config.to_sweep(output)
    try:
        # extend: an edited compare config keeps its store; the report reads only the points
        # of the current config (result_rows with its hashes), so nothing merges silently.
        outcome = run_sweep(sweep, db=db, workers=workers, scheduler=scheduler,
                            progress=progress, stale_after_s=stale_after_s, extend=True)
    except ConfigError as error:
        # The data options of a compare config are written directly in [data].
        raise ConfigError(str(error).replace("data.options.", "data.")) from error
    with ResultsStore(outcome.db) as store:
        rows = tuple(result_rows(store, sweep.name, (spec.content_hash
                                                     for spec in sweep.points)))
    context = ReportContext(f"{config.name}: kernel renormalization theory vs sampled networks",
                            config.notes)
    files = write_report(rows, output, context=context)
    return CompareResult(config, rows, compare_networks(rows), output, outcome, files)
