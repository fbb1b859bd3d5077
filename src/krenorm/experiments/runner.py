"""Run one sweep point: the effective theory at width N and/or at N → ∞ (THEORY.md §3–6) and/or
a sampled network (§1, §4) on the point's data, returning JSON-able metrics, diagnostics and
provenance. Runs in worker processes (local pool or Dask), so it takes and returns plain values;
theory and networks are imported at module level so that a fork server preloading this module
hands workers everything ready.

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

import torch

from krenorm import __version__
from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.sweep_data import data_fingerprint, load_point_data
from krenorm.networks import sample_posterior
from krenorm.theory import fit_theory

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


def _theory(spec: ExperimentSpec, dataset, infinite: bool, device: torch.device
            ) -> tuple[dict, dict]:
    start = time.perf_counter()
    options = {} if infinite else spec.theory.solver_options()
    fit = fit_theory(dataset.x_train, dataset.y_train, spec.architecture, spec.width,
                     spec.temperature, spec.lambda0, spec.lambda1, infinite_width=infinite,
                     device=str(device), **options)
    loss = fit.test_loss(dataset.x_test, dataset.y_test)
    summary = fit.summary()
    converged = True if infinite else bool(summary.diagnostics.get("converged", True))
    metrics = {"test_loss": loss.loss, "bias2": loss.bias2, "variance": loss.variance,
               "train_error": summary.train_error, "train_loss": summary.train_loss,
               "log_evidence": summary.log_evidence,
               "alpha": 0.0 if infinite else summary.alpha,
               "converged": converged}
    diagnostics = {"solver": summary.diagnostics, "q_bar": _q_bar_summary(summary.q_bar),
                   "off_diagonal_share": summary.off_diagonal_share,
                   "seconds": time.perf_counter() - start}
    return metrics, diagnostics


def _network(spec: ExperimentSpec, dataset, device: torch.device) -> tuple[dict, dict]:
    settings = spec.network
    summary = sample_posterior(
        spec.architecture, int(spec.width), dataset.x_train, dataset.y_train, dataset.x_test,
        dataset.y_test, spec.temperature, spec.lambda0, spec.lambda1, sampler=settings.sampler,
        n_replicas=settings.n_replicas, n_steps=settings.n_steps, burn_in=settings.burn_in,
        seed=settings.seed, device=device, dtype=getattr(torch, settings.dtype))
    metrics = {"test_loss": summary.test_loss, "test_loss_stderr": summary.test_loss_stderr,
               "bias2": summary.bias2, "variance": summary.variance,
               "train_error": summary.train_error,
               "train_error_stderr": summary.train_error_stderr}
    diagnostics = {"ess": summary.ess, "acceptance": summary.acceptance,
                   "min_replica_acceptance": summary.min_replica_acceptance,
                   "step_size": summary.step_size, "burn_in": summary.burn_in,
                   "thin": summary.thin, "warnings": list(summary.warnings),
                   "q_matrix": _q_bar_summary(summary.q_matrix.tolist()),
                   "device": summary.device, "dtype": summary.dtype,
                   "seconds": summary.wall_time_s}
    return metrics, diagnostics


def run_experiment(spec: ExperimentSpec, device: str = "cpu") -> ExperimentOutcome:
    """Run the theory fits and/or the sampled network of one spec on its data.

    metrics keys: 'theory.*' (width N), 'theory_infinite.*' (N → ∞, the NNGP kernel) and
    'network.*' (posterior averages of the sampled network), each with test_loss = ε_g =
    bias² + variance on the test set (THEORY.md §6) and the train error.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    target_device = resolve_device(device)
    dataset = load_point_data(spec.data)
    parts: dict[str, tuple[dict, dict]] = {}
    if spec.theory is not None and spec.theory.finite:
        parts["theory"] = _theory(spec, dataset, infinite=False, device=target_device)
    if spec.theory is not None and spec.theory.infinite:
        parts["theory_infinite"] = _theory(spec, dataset, infinite=True, device=target_device)
    if spec.network is not None:
        parts["network"] = _network(spec, dataset, target_device)
    metrics = {f"{name}.{key}": value for name, (part, _) in parts.items()
               for key, value in part.items()}
    diagnostics = {name: part for name, (_, part) in parts.items()}
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
