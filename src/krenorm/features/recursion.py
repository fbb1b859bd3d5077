"""The RFM / ConvRFM recursion with validation-based selection (docs/math/features.md §5).

M0 = I. Round t: for every bandwidth L (Laplace/Gaussian only) and ridge λ of the grids, fit
α = (K_M + λI)⁻¹Y on the fitting split and score the predictor on the validation split; keep the
best (λ, L) of the round; then M ← normalise(G^power) with G the patch-AGOP of that predictor on
a random subset of fitting inputs. After T updates the round with the best validation score is
selected (earliest on ties). The test set never enters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from krenorm.features.deep_conv_kernels import PatchKernel
from krenorm.features.metric import Normalisation, psd_eigh, update_metric
from krenorm.features.ridge import solve_kernel_ridge

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class GridPoint:
    """Validation score of one (ridge, bandwidth) in one round."""

    ridge: float
    bandwidth: float
    score: float

    def to_dict(self) -> dict:
        return {"ridge": self.ridge, "bandwidth": self.bandwidth, "score": self.score}


@dataclass(frozen=True)
class RoundRecord:
    """One round: the metric's spectrum, the grid searched and the choice made."""

    round: int
    ridge: float
    bandwidth: float
    validation_score: float
    grid: tuple[GridPoint, ...]
    metric_eigenvalues: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "round": self.round,
            "ridge": self.ridge,
            "bandwidth": self.bandwidth,
            "validation_score": self.validation_score,
            "grid": [point.to_dict() for point in self.grid],
            "metric_eigenvalues": list(self.metric_eigenvalues),
        }


@dataclass(frozen=True)
class RecursionResult:
    """Metrics M_0..M_T, per-round records and the selected round. `score_name` says what the
    validation score is (accuracy, or −MSE for regression; higher is better). `fit_gram` and
    `validation_cross` are K(fit, fit) and K(validation, fit) of the selected round and
    bandwidth, kept so that the final refit does not recompute them."""

    metrics: tuple[torch.Tensor, ...]
    rounds: tuple[RoundRecord, ...]
    best_round: int
    score_name: str
    fit_gram: torch.Tensor | None = None
    validation_cross: torch.Tensor | None = None

    @property
    def best(self) -> RoundRecord:
        return self.rounds[self.best_round]

    def to_dict(self) -> dict:
        return {
            "rounds": [record.to_dict() for record in self.rounds],
            "best_round": self.best_round,
            "score_name": self.score_name,
        }


def score_predictions(task: Task, predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of arg-max predictions against one-hot targets, or −MSE for regression."""
    if task == "classification":
        return float((predictions.argmax(1) == targets.argmax(1)).to(torch.float64).mean())
    return -float(((predictions - targets) ** 2).mean())


def _as_grid(name: str, values: float | Sequence[float]) -> tuple[float, ...]:
    grid = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if not grid or min(grid) <= 0:
        raise ValueError(
            f"{name} must be a positive number or a non-empty list of them, got {values!r}."
        )
    return grid


def run_feature_recursion(
    kernel: PatchKernel,
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    task: Task,
    ridges: float | Sequence[float] = 1e-3,
    bandwidths: float | Sequence[float] = 10.0,
    n_rounds: int = 1,
    agop_samples: int = 2000,
    metric_power: float = 1.0,
    metric_normalisation: Normalisation = "trace",
    metric_threshold: float = 0.0,
    seed: int = 0,
) -> RecursionResult:
    """Run T = n_rounds metric updates (module docstring). Targets y_* are (n, O): one-hot for
    classification. Returns every round's metric and record and the selected round."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}.")
    if n_rounds < 0 or agop_samples < 1:
        raise ValueError("n_rounds must be >= 0 and agop_samples >= 1.")
    ridge_grid = _as_grid("ridge", ridges)
    bandwidth_grid = _as_grid("bandwidth", bandwidths) if kernel.uses_bandwidth else (1.0,)
    generator = torch.Generator().manual_seed(seed)
    dimension = kernel.dimension(x_fit)
    metric = torch.eye(dimension, dtype=x_fit.dtype, device=x_fit.device)
    metrics, records = [], []
    kept: tuple[float, torch.Tensor, torch.Tensor] | None = None  # (score, gram, cross) of the best
    for round_index in range(n_rounds + 1):
        grid, best, best_coefficients = [], None, None
        for bandwidth in bandwidth_grid:
            gram = kernel.gram(x_fit, None, metric, bandwidth)
            cross = kernel.gram(x_val, x_fit, metric, bandwidth)
            for ridge in ridge_grid:
                coefficients = solve_kernel_ridge(gram, y_fit, ridge)
                point = GridPoint(
                    ridge, bandwidth, score_predictions(task, cross @ coefficients, y_val)
                )
                grid.append(point)
                if best is None or point.score > best.score:
                    best, best_coefficients = point, coefficients
                if kept is None or point.score > kept[0]:
                    kept = (point.score, gram, cross)
        # The grids are non-empty (_as_grid), so every round has a best point.
        assert best is not None and best_coefficients is not None
        eigenvalues = psd_eigh(metric)[0].flip(0)
        metrics.append(metric)
        records.append(
            RoundRecord(
                round=round_index,
                ridge=best.ridge,
                bandwidth=best.bandwidth,
                validation_score=best.score,
                grid=tuple(grid),
                metric_eigenvalues=tuple(eigenvalues.tolist()),
            )
        )
        if round_index == n_rounds:
            break
        subset = torch.randperm(x_fit.shape[0], generator=generator)[:agop_samples]
        agop = kernel.agop(x_fit[subset], x_fit, best_coefficients, metric, best.bandwidth)
        metric = update_metric(agop, metric_power, metric_normalisation, metric_threshold)
    assert kept is not None  # round 0 always runs
    scores = [record.validation_score for record in records]
    best_round = scores.index(max(scores))
    score_name = "accuracy" if task == "classification" else "negative_mse"
    return RecursionResult(
        tuple(metrics),
        tuple(records),
        best_round,
        score_name,
        fit_gram=kept[1],
        validation_cross=kept[2],
    )
