"""Run one experiment: the effective theory at width N (N = math.inf: the NNGP limit), the N → ∞
reference, the retuned-prior Gaussian process and/or a sampled network (docs/math/theory.md
§1, §3–6) on the point's data, returning JSON-able metrics, diagnostics and provenance. The one
runner of `compare` and `sweep`. Runs in worker processes (local pool or Dask), so it takes and
returns plain values; theory and networks are imported at module level so that a fork server
preloading this module hands workers everything ready.

Metrics are a function of the spec alone (up to floating-point summation order); timings, hosts
and solver traces go to diagnostics and provenance.

Device: sampled networks and the theory's kernels and P×P algebra (float64) run on the requested
device ('cpu', 'cuda', 'auto'); Q̄ and the solver stay on the CPU. Provenance records both.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from krenorm import __version__
from krenorm.data import Dataset
from krenorm.experiments.deep_step import deep_network_part, deep_theory_part
from krenorm.experiments.network_step import sample_network
from krenorm.experiments.point_status import solver_reporter
from krenorm.experiments.spec import ExperimentSpec, TheorySettings
from krenorm.experiments.sweep_data import data_fingerprint, load_point_data
from krenorm.experiments.theory_step import fit_at_width, retuned_q_bar
from krenorm.networks.settings import SamplerSettings
from krenorm.theory.blocks import BlockSettings
from krenorm.theory.fit import FittedTheory
from krenorm.width import INFINITE_WIDTH, alpha

#: Q̄ is stored entry by entry up to this many entries (an Np × Np matrix for CNN/LCN at
#: Np = 32); larger ones are summarised (diagonal and off-diagonal means) to keep rows small.
Q_BAR_ENTRIES_STORED = 1024


@dataclass(frozen=True)
class ExperimentOutcome:
    """What one point produced: flat metrics ('theory.test_loss', 'network.test_loss', …),
    nested diagnostics, provenance and the wall time of the whole point."""

    metrics: dict
    diagnostics: dict
    provenance: dict
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _peak_rss_mib() -> float | None:
    """High-water mark of this process's resident memory (None where `resource` is missing)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda' (refused when CUDA is absent) or 'auto' (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device 'cuda' requested but torch.cuda.is_available() is False on "
                         f"{socket.gethostname()}; use 'cpu' or 'auto'.")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}.")
    return torch.device(device)


def _q_bar_summary(q_bar: list) -> dict:
    q = torch.as_tensor(q_bar, dtype=torch.float64)
    out: dict = {"shape": list(q.shape)}
    if q.numel() <= Q_BAR_ENTRIES_STORED:
        out["values"] = q.tolist()
    if q.ndim == 2:
        diagonal = torch.diagonal(q)
        off_diagonal = q[~torch.eye(q.shape[0], dtype=torch.bool)]
        out["diagonal_mean"] = float(diagonal.mean())
        out["off_diagonal_mean"] = float(off_diagonal.mean()) if off_diagonal.numel() else 0.0
    else:
        out["mean"] = float(q.mean())
    return out


def _theory_part(spec: ExperimentSpec, fit: FittedTheory, dataset: Dataset, width: float,
                 seconds: float) -> tuple[dict, dict]:
    """Metrics and diagnostics of one theory fit at width N (ε_g = bias² + variance on the test
    set, docs/math/theory.md §6)."""
    loss = fit.test_loss(dataset.x_test, dataset.y_test)
    summary = fit.summary()
    metrics = {"test_loss": loss.loss, "bias2": loss.bias2, "variance": loss.variance,
               "train_error": summary.train_error, "train_loss": summary.train_loss,
               "log_evidence": summary.log_evidence,
               "alpha": alpha(spec.data.n_train, width),
               "converged": bool(summary.diagnostics.get("converged", True))}
    diagnostics: dict[str, Any] = {
        "solver": summary.diagnostics, "q_bar": _q_bar_summary(summary.q_bar),
        "off_diagonal_share": summary.off_diagonal_share, "seconds": seconds}
    if spec.architecture.is_convolutional:
        shape = tuple(dataset.x_train.shape[1:])
        diagnostics["patch_grid"] = list(spec.architecture.output_grid(
            (shape[0], shape[1], shape[2])))
    return metrics, diagnostics


@dataclass(frozen=True)
class TheoryEngine:
    """How a point's theory fits hold the local kernel blocks of a CNN/LCN (docs/scale.md §1,
    §5) — how a point runs, not what it computes, so not part of its hash.

    memory_limit: bytes a fit may hold (None: $KRENORM_MEMORY_LIMIT, else 60 % of physical
    memory); stored blocks that would not fit are streamed, keeping what fits (the fit's
    diagnostics say which and why). scheduler: a Dask scheduler address; given, the blocks are
    built and kept sharded on its workers."""

    memory_limit: int | None = None
    scheduler: str | None = None

    def fit_options(self) -> dict[str, Any]:
        """Keyword options of `fit_theory`."""
        options: dict[str, Any] = {}
        if self.memory_limit is not None:
            options["memory_limit"] = self.memory_limit
        if self.scheduler is not None:
            options["blocks"] = BlockSettings(scheduler=self.scheduler)
        return options


def _fit(spec: ExperimentSpec, settings: TheorySettings, dataset: Dataset, width: float,
         device: torch.device, engine: TheoryEngine, **options: Any
         ) -> tuple[FittedTheory, float]:
    start = time.perf_counter()
    label = f"theory {spec.architecture.kind} N = {width:g}"
    fit = fit_at_width(dataset.x_train, dataset.y_train, spec.shallow_architecture, width,
                       spec.temperature, lambda0=spec.lambda0, lambda1=spec.lambda1,
                       device=str(device), progress=solver_reporter(label),
                       **settings.solver_options(), **engine.fit_options(), **options)
    return fit, time.perf_counter() - start


def _theory_parts(spec: ExperimentSpec, dataset: Dataset, device: torch.device,
                  engine: TheoryEngine) -> dict[str, tuple[dict, dict]]:
    """'theory' (width N), 'retuned' (infinite width, readout priors retuned by Q̄(N)) and
    'theory_infinite' (N → ∞ next to a finite N), as the settings ask."""
    settings = spec.theory
    parts: dict[str, tuple[dict, dict]] = {}
    if settings is None:
        return parts
    if spec.is_deep:  # depth ≥ 2: the deep theory (deep_step), no retuned priors
        if settings.finite:
            parts["theory"] = deep_theory_part(spec, dataset, spec.width)
        if settings.infinite and not spec.is_infinite_width:
            parts["theory_infinite"] = deep_theory_part(spec, dataset, INFINITE_WIDTH)
        return parts
    if settings.finite:
        fit, seconds = _fit(spec, settings, dataset, spec.width, device, engine)
        parts["theory"] = _theory_part(spec, fit, dataset, spec.width, seconds)
        if settings.retuned_priors:
            retuned, seconds = _fit(spec, settings, dataset, spec.width, device, engine,
                                    fixed_q_bar=retuned_q_bar(spec.shallow_architecture,
                                                              fit.q_bar))
            parts["retuned"] = _theory_part(spec, retuned, dataset, spec.width, seconds)
    if settings.infinite and not spec.is_infinite_width:
        fit, seconds = _fit(spec, settings, dataset, INFINITE_WIDTH, device, engine)
        parts["theory_infinite"] = _theory_part(spec, fit, dataset, INFINITE_WIDTH, seconds)
    return parts


def _network(spec: ExperimentSpec, settings: SamplerSettings, dataset: Dataset,
             device: torch.device) -> tuple[dict, dict]:
    summary = sample_network(spec.shallow_architecture, int(spec.width), dataset,
                             temperature=spec.temperature, lambda0=spec.lambda0,
                             lambda1=spec.lambda1, settings=settings, device=device)
    metrics = {"test_loss": summary.test_loss, "test_loss_stderr": summary.test_loss_stderr,
               "bias2": summary.bias2, "variance": summary.variance,
               "train_error": summary.train_error,
               "train_error_stderr": summary.train_error_stderr,
               "alpha": alpha(spec.data.n_train, spec.width)}
    alignment = summary.kernel_alignment
    stderr = summary.q_matrix_stderr
    diagnostics = {"ess": summary.ess, "rhat": summary.test_loss_estimate.rhat,
                   "acceptance": summary.acceptance,
                   "min_replica_acceptance": summary.min_replica_acceptance,
                   "step_size": summary.step_size, "burn_in": summary.burn_in,
                   "thin": summary.thin, "warnings": list(summary.warnings),
                   "q_matrix": _q_bar_summary(summary.q_matrix.tolist()),
                   "q_matrix_stderr": (None if stderr is None
                                       else _q_bar_summary(stderr.tolist())),
                   "kernel_alignment": None if alignment is None else alignment.to_dict(),
                   "device": summary.device, "dtype": summary.dtype,
                   "seconds": summary.wall_time_s}
    return metrics, diagnostics


def run_experiment(spec: ExperimentSpec, device: str = "cpu",
                   engine: TheoryEngine | None = None) -> ExperimentOutcome:
    """Run the theory fits and/or the sampled network of one spec on its data.

    metrics keys: 'theory.*' (width N; N = ∞ is the NNGP limit), 'theory_infinite.*' (the
    N → ∞ reference of a finite-N point), 'retuned.*' (infinite width with readout priors
    retuned by Q̄(N)) and 'network.*' (posterior averages of the sampled network), each with
    test_loss = ε_g = bias² + variance on the test set (docs/math/theory.md §6), the train error
    and α = P/N (0 at N = ∞). engine: how the theory holds CNN/LCN kernel blocks (memory
    budget — stored blocks over it are streamed — or a Dask scheduler for sharded blocks).
    A long solve reports its progress to the executor's status sink (`point_status`).
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    target_device = resolve_device(device)
    dataset = load_point_data(spec.data)
    parts = _theory_parts(spec, dataset, target_device,
                          TheoryEngine() if engine is None else engine)
    if spec.network is not None:
        parts["network"] = (deep_network_part(spec, dataset) if spec.is_deep
                            else _network(spec, spec.network, dataset, target_device))
    metrics = {f"{name}.{key}": value for name, (part, _) in parts.items()
               for key, value in part.items()}
    diagnostics: dict[str, Any] = {name: part for name, (_, part) in parts.items()}
    # CPU time of this process over the point (all its torch threads): against the wall time
    # it shows how much of a core the point actually got on a shared machine.
    diagnostics["cpu_seconds"] = time.process_time() - cpu_start
    provenance = {
        "krenorm": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(target_device) if spec.network is not None else None,
        "theory_device": str(target_device) if spec.theory is not None else None,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mib": _peak_rss_mib(),
        "cuda_device": (torch.cuda.get_device_name(target_device)
                        if target_device.type == "cuda" else None),
        "spec_hash": spec.content_hash,
        "data": dataset.provenance.to_dict(),
        "data_sha256": data_fingerprint(dataset),
    }
    return ExperimentOutcome(metrics, diagnostics, provenance, time.perf_counter() - start)
