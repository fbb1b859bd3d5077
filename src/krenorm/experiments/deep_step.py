"""The deep points of the one pipeline (docs/deep.md "In compare configs"): the deep effective
theory (`fit_deep_theory`, docs/math/deep.md §3–5) and the sampled deep network with its
metastability check (`sample_deep_posterior`) for an `ExperimentSpec` whose architecture is a
`DeepArchitectureSpec`. Every hidden layer has width N and prior λ0; the readout has λ1.

Metrics use the names of the one-layer runner (test_loss, bias2, variance, train_error, alpha,
…) so rows, tables and the agreement analysis read deep points unchanged; the deep extras
(train loss, order parameters per layer, the start comparison) are in the diagnostics, where
the deep section of the report (`deep_report`) reads them.
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import torch

from krenorm.data import Dataset
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.spec import ExperimentSpec
from krenorm.networks.deep_sampling import sample_deep_posterior
from krenorm.theory.deep_fit import fit_deep_theory
from krenorm.theory.diagnostics import SolverMethod, SolverSettings
from krenorm.width import alpha, is_infinite


def _deep(spec: ExperimentSpec) -> DeepArchitectureSpec:
    if not isinstance(spec.architecture, DeepArchitectureSpec):
        raise ValueError("not a deep point: its architecture is not a DeepArchitectureSpec.")
    return spec.architecture


def _inputs(architecture: DeepArchitectureSpec, x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x.reshape(x.shape[0], -1) if architecture.kind == "fc" else x


def deep_priors(spec: ExperimentSpec) -> list[float]:
    """λ_0..λ_L: λ0 for the weights into every hidden layer, λ1 for the readout."""
    return [spec.lambda0] * _deep(spec).depth + [spec.lambda1]


def _order_parameters(point: torch.Tensor) -> dict[str, Any]:
    q = point.detach().to(torch.float64)
    out: dict[str, Any] = {"shape": list(q.shape)}
    if q.numel() <= 1024:
        out["values"] = q.tolist()
    if q.ndim == 2:
        out["diagonal_mean"] = float(torch.diagonal(q).mean())
    else:
        out["mean"] = float(q.mean())
    return out


def deep_theory_part(spec: ExperimentSpec, dataset: Dataset, width: float
                     ) -> tuple[dict, dict]:
    """Metrics and diagnostics of the deep theory at width N (math.inf: the deep NNGP)."""
    architecture = _deep(spec)
    settings = spec.theory
    solver = SolverSettings() if settings is None else SolverSettings(
        method=cast(SolverMethod, settings.solver), tolerance=settings.tolerance,
        max_iterations=settings.max_iterations, n_starts=settings.n_starts, seed=settings.seed)
    start = time.perf_counter()
    fit = fit_deep_theory(_inputs(architecture, dataset.x_train), dataset.y_train, architecture,
                          [width] * architecture.depth, spec.temperature, deep_priors(spec),
                          solver_settings=solver)
    loss = fit.test_loss(_inputs(architecture, dataset.x_test), dataset.y_test)
    summary = fit.summary()
    converged = bool(summary.diagnostics.get("converged", True))
    metrics = {"test_loss": loss.loss, "bias2": loss.bias2, "variance": loss.variance,
               "train_error": summary.train_error, "train_loss": summary.train_loss,
               "log_evidence": summary.log_evidence, "alpha": alpha(spec.data.n_train, width),
               "converged": converged}
    diagnostics = {"solver": summary.diagnostics, "depth": architecture.depth,
                   "order_parameters": _order_parameters(fit.point),
                   "total_scale": summary.total_scale, "train_loss": summary.train_loss,
                   "seconds": time.perf_counter() - start}
    return metrics, diagnostics


def deep_network_part(spec: ExperimentSpec, dataset: Dataset) -> tuple[dict, dict]:
    """Metrics and diagnostics of the sampled deep network of width N (metastability check
    included: half the replicas start from a trained point)."""
    architecture = _deep(spec)
    if spec.network is None or is_infinite(spec.width):
        raise ValueError("a sampled deep network needs network settings and a finite width.")
    width = int(spec.width)
    summary = sample_deep_posterior(
        architecture, [width] * architecture.depth, deep_priors(spec),
        _inputs(architecture, dataset.x_train), dataset.y_train,
        _inputs(architecture, dataset.x_test), dataset.y_test, temperature=spec.temperature,
        settings=spec.network)
    starts = summary.starts
    metrics = {"test_loss": summary.test_loss, "test_loss_stderr": summary.test_loss_stderr,
               "bias2": summary.bias2, "variance": summary.variance,
               "train_error": summary.train_error, "train_loss": summary.train_loss,
               "train_loss_stderr": summary.train_loss_stderr,
               "alpha": alpha(spec.data.n_train, spec.width),
               "starts_agree": None if starts is None else starts.agree,
               "starts_max_abs_z": None if starts is None else starts.max_abs_z}
    diagnostics = {"ess": summary.ess, "rhat": summary.rhat, "acceptance": summary.acceptance,
                   "step_size": summary.step_size, "burn_in": summary.burn_in,
                   "thin": summary.thin, "n_records": summary.n_records,
                   "warnings": list(summary.warnings), "depth": architecture.depth,
                   "train_loss": summary.train_loss,
                   "train_loss_stderr": summary.train_loss_stderr,
                   "starts": None if starts is None else starts.to_dict(),
                   "seconds": summary.seconds}
    if not math.isfinite(summary.test_loss):
        raise FloatingPointError("the sampled deep network's test loss is not finite.")
    return metrics, diagnostics
