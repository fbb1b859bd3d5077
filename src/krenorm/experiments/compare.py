"""The main job: effective theory at finite and infinite width against sampled finite networks
on the same data (THEORY.md §3–6), for every architecture and width of a `CompareConfig`.

Outputs in the run directory: results.csv / results.json (one tidy row per (architecture, width,
source)), order_parameters.json (Q̄ per architecture and width, network-side estimates), figures
and report.md (see `figures` and `report`).
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from krenorm import __version__
from krenorm.architectures import ArchitectureSpec
from krenorm.experiments.config import CompareConfig, check_image_shape
from krenorm.theory.fit import FittedTheory, TheoryConfig

#: Network and theory agree when within this many standard errors, or this relative distance.
AGREEMENT_STANDARD_ERRORS = 2.0
AGREEMENT_RELATIVE = 0.03


@dataclass(frozen=True)
class ComparisonRow:
    """One point of the comparison. source: 'theory' (finite width), 'theory-infinite' (NNGP),
    'retuned-infinite' (infinite width with the renormalized readout priors) or 'network'."""

    architecture: str
    source: str
    width: float
    alpha: float
    test_loss: float
    test_loss_stderr: float | None
    bias2: float
    variance: float
    train_error: float
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Agreement:
    """Network vs finite-width theory at one width."""

    architecture: str
    width: float
    network: float
    stderr: float
    theory: float
    infinite: float
    within: bool

    @property
    def standard_errors(self) -> float:
        return abs(self.network - self.theory) / self.stderr if self.stderr > 0 else math.inf

    @property
    def relative(self) -> float:
        return abs(self.network - self.theory) / abs(self.theory)

    def to_dict(self) -> dict:
        return {**asdict(self), "standard_errors": self.standard_errors,
                "relative": self.relative}


@dataclass
class CompareResult:
    config: CompareConfig
    rows: list[ComparisonRow]
    order_parameters: dict
    provenance: dict
    output_dir: Path

    def agreements(self) -> list[Agreement]:
        out = []
        for row in self.rows:
            if row.source != "network":
                continue
            theory = self.find(row.architecture, "theory", row.width)
            infinite = self.find(row.architecture, "theory-infinite")
            stderr = row.test_loss_stderr or 0.0
            difference = abs(row.test_loss - theory.test_loss)
            within = (difference <= AGREEMENT_STANDARD_ERRORS * stderr
                      or difference <= AGREEMENT_RELATIVE * abs(theory.test_loss))
            out.append(Agreement(row.architecture, row.width, row.test_loss, stderr,
                                 theory.test_loss, infinite.test_loss, within))
        return out

    def find(self, architecture: str, source: str, width: float | None = None) -> ComparisonRow:
        for row in self.rows:
            if row.architecture == architecture and row.source == source and (
                    width is None or row.width == width):
                return row
        raise KeyError((architecture, source, width))


def load_data(config: CompareConfig):
    """The configured data set (or the synthetic local teacher when dataset = 'local-teacher')."""
    from krenorm.data import load_dataset, local_teacher

    data = config.data
    if data.dataset == "local-teacher":
        return local_teacher(n_train=data.n_train, n_test=data.n_test, seed=data.seed)
    return load_dataset(data.dataset, classes=data.classes, n_train=data.n_train,
                        n_test=data.n_test, side=data.side, grayscale=data.grayscale,
                        standardize=data.standardize, labels=data.labels, seed=data.seed)


def _theory_row(spec: ArchitectureSpec, source: str, width: float, fit: FittedTheory,
                x_test, y_test, seconds: float) -> ComparisonRow:
    loss = fit.test_loss(x_test, y_test)
    summary = fit.summary()
    details = {"q_bar": summary.q_bar, "off_diagonal_share": summary.off_diagonal_share,
               "log_evidence": summary.log_evidence, "diagnostics": summary.diagnostics,
               "effective_priors": summary.effective_priors}
    alpha = fit.n_train / width if math.isfinite(width) else 0.0
    return ComparisonRow(spec.kind, source, width, alpha, loss.loss, None, loss.bias2,
                         loss.variance, fit.train_error, seconds, details)


def _fit(config: CompareConfig, spec: ArchitectureSpec, x, y, width: float, **options):
    hyper = config.hyper
    start = time.perf_counter()
    theory_config = TheoryConfig(spec, width, hyper.temperature, hyper.lambda0, hyper.lambda1,
                                 **options)
    fit = FittedTheory(theory_config, x, y)
    return fit, time.perf_counter() - start


def _retuned_q_bar(spec: ArchitectureSpec, q_bar: torch.Tensor) -> torch.Tensor:
    """Readout priors an infinite-width net can absorb: all of Q̄ for FC and LCN, the diagonal
    (per-position priors) for a CNN without pooling."""
    if spec.kind == "cnn":
        return torch.diag(torch.diagonal(q_bar))
    return q_bar


def run_compare(config: CompareConfig, output_dir: str | Path | None = None,
                progress: bool = True) -> CompareResult:
    """Run theory (finite and infinite width) and sampled networks; write tables, figures and
    the report. Returns the in-memory result."""
    from rich.progress import Progress

    from krenorm.experiments.figures import write_figures
    from krenorm.experiments.report import write_report
    from krenorm.networks import sample_posterior

    output = Path(output_dir or config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = load_data(config)
    x_train, y_train, x_test, y_test = (dataset.x_train, dataset.y_train, dataset.x_test,
                                        dataset.y_test)
    check_image_shape(config, tuple(x_train.shape[1:]))
    hyper, networks = config.hyper, config.networks
    sampled = {float(w) for spec in config.architectures for w in config.network_widths(spec.kind)}
    widths = sorted(set(config.theory_widths) | sampled)
    rows: list[ComparisonRow] = []
    order_parameters: dict = {}
    n_tasks = sum(1 + len(widths) + len(config.network_widths(spec.kind))
                  for spec in config.architectures)
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(config.name, total=n_tasks)
        for spec in config.architectures:
            kind = spec.kind
            order_parameters[kind] = {"theory": {}, "network": {},
                                      "grid": list(spec.output_grid(tuple(x_train.shape[1:])))}
            bar.update(task, description=f"{kind}: infinite-width theory")
            fit, seconds = _fit(config, spec, x_train, y_train, 1.0, infinite_width=True)
            rows.append(_theory_row(spec, "theory-infinite", math.inf, fit, x_test, y_test,
                                    seconds))
            bar.advance(task)
            for width in widths:
                bar.update(task, description=f"{kind}: theory at N = {width:g}")
                fit, seconds = _fit(config, spec, x_train, y_train, width)
                rows.append(_theory_row(spec, "theory", width, fit, x_test, y_test, seconds))
                order_parameters[kind]["theory"][f"{width:g}"] = fit.q_bar.tolist()
                if config.retuned_priors:
                    retuned, seconds = _fit(config, spec, x_train, y_train, width,
                                            fixed_q_bar=tuple(_retuned_q_bar(spec, fit.q_bar)
                                                              .reshape(-1).tolist()))
                    rows.append(_theory_row(spec, "retuned-infinite", width, retuned, x_test,
                                            y_test, seconds))
                bar.advance(task)
            for width in config.network_widths(kind):
                bar.update(task, description=f"{kind}: sampling N = {width}")
                with warnings.catch_warnings():
                    # Chain-length and R̂ notes stay in summary.warnings and go to the report's
                    # sampler table, next to the point they qualify.
                    warnings.simplefilter("ignore", RuntimeWarning)
                    summary = sample_posterior(
                        spec, int(width), x_train, y_train, x_test, y_test, hyper.temperature,
                        hyper.lambda0, hyper.lambda1, sampler=networks.sampler,
                        n_replicas=networks.n_replicas, n_steps=networks.n_steps,
                        burn_in=networks.burn_in, seed=networks.seed,
                        dtype=getattr(torch, networks.dtype),
                    )
                alignment = summary.kernel_alignment
                details = {
                    "sampler": summary.sampler, "n_replicas": summary.n_replicas,
                    "n_steps": summary.n_steps, "ess": summary.ess,
                    "acceptance": summary.acceptance, "step_size": summary.step_size,
                    "warnings": list(summary.warnings),
                    "kernel_alignment": alignment.to_dict() if alignment is not None else None,
                }
                rows.append(ComparisonRow(
                    kind, "network", float(width), x_train.shape[0] / width, summary.test_loss,
                    summary.test_loss_stderr, summary.bias2, summary.variance,
                    summary.train_error, summary.wall_time_s, details))
                order_parameters[kind]["network"][f"{width:g}"] = {
                    "q_matrix": summary.q_matrix.tolist(),
                    "stderr": (summary.q_matrix_stderr.tolist()
                               if summary.q_matrix_stderr is not None else None),
                }
                bar.advance(task)
    provenance = {
        "krenorm": __version__,
        "torch": torch.__version__,
        "data": dataset.provenance.to_dict() if hasattr(dataset, "provenance") else {},
        "config": config.to_dict(),
    }
    result = CompareResult(config, rows, order_parameters, provenance, output)
    _write_tables(result)
    write_figures(result)
    write_report(result)
    return result


def _write_tables(result: CompareResult) -> None:
    output = result.output_dir
    fields = [name for name in ComparisonRow.__dataclass_fields__ if name != "details"]
    with (output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({name: getattr(row, name) for name in fields})
    payload = {"rows": [row.to_dict() for row in result.rows],
               "agreements": [agreement.to_dict() for agreement in result.agreements()],
               "provenance": result.provenance}
    (output / "results.json").write_text(json.dumps(payload, indent=2, default=_jsonable))
    (output / "order_parameters.json").write_text(json.dumps(result.order_parameters, indent=1))


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)
