"""Hyper-parameters chosen on held-out data, and the best infinite-width baseline
(docs/selection.md §2–3).

- `validation_search`: scikit-learn's GridSearchCV over `RenormalizedKernelRegressor` with one
  predefined train/validation split, scored by the theory's validation loss
  −ε_g = −(1/Pv) Σ [(y − m)² + v] (docs/math/theory.md §4).
- `evidence_search`: the same grid scored by the theory's log evidence on the whole training set
  (one split whose train and test sets are the training set): the grid counterpart of
  `EvidenceMaximizer`, which must agree with it to the grid's resolution.
- `best_readout_priors`: the best an *infinite-width* network can do by retuning its readout
  priors per patch — the kernel K_R(q) = Σ_i q_i K_ii / (λ1 Np) (a diagonal Q̄; for FC, Np = 1 and
  this is λ1 → λ1/q) with q_i > 0 chosen to minimise the validation loss ε_g(q) by L-BFGS on ln q
  (torch autograd through the Gaussian-process formulas). A finite-width CNN beats its
  infinite-width limit in a way no infinite-width CNN can copy only if it beats this line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.grams import fc_kernel, local_diagonal_blocks
from krenorm.theory.estimator import RenormalizedKernelRegressor

__all__ = ["PriorBaseline", "Selection", "best_readout_priors", "evidence_search",
           "patch_kernels", "readout_prior_loss", "validation_search"]


def _tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor)
                           else x, dtype=torch.float64)


@dataclass(frozen=True)
class Selection:
    """The grid point a search chose: best_params, its score (−validation ε_g, or ln Z), and
    every grid point's (params, score) in grid order."""

    best_params: dict[str, float]
    best_score: float
    scores: tuple[tuple[dict[str, float], float], ...]


def _validation_loss_scorer(estimator: RenormalizedKernelRegressor, x: Any, y: Any) -> float:
    return -estimator.test_loss(x, y)[0]


def _evidence_scorer(estimator: RenormalizedKernelRegressor, x: Any, y: Any) -> float:
    return float(estimator.log_evidence_)


def _selection(search: GridSearchCV) -> Selection:
    results = search.cv_results_
    scores = tuple((dict(params), float(score)) for params, score
                   in zip(results["params"], results["mean_test_score"], strict=True))
    return Selection(dict(search.best_params_), float(search.best_score_), scores)


def validation_search(estimator: RenormalizedKernelRegressor, param_grid: dict[str, Any],
                      x_train: Any, y_train: Any, x_validation: Any, y_validation: Any
                      ) -> Selection:
    """GridSearchCV over param_grid, fitted on the training set and scored by −ε_g on the
    validation set (one predefined split; no refit)."""
    x_all = np.concatenate([np.asarray(x_train), np.asarray(x_validation)])
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_validation)])
    fold = np.r_[np.full(len(x_train), -1), np.zeros(len(x_validation))]
    search = GridSearchCV(estimator, param_grid, scoring=_validation_loss_scorer,
                          cv=PredefinedSplit(fold), refit=False, error_score="raise")
    return _selection(search.fit(x_all, y_all))


def evidence_search(estimator: RenormalizedKernelRegressor, param_grid: dict[str, Any],
                    x_train: Any, y_train: Any) -> Selection:
    """GridSearchCV over param_grid scored by the log evidence on the whole training set."""
    everything = np.arange(len(x_train))
    search = GridSearchCV(estimator, param_grid, scoring=_evidence_scorer,
                          cv=[(everything, everything)], refit=False, error_score="raise")
    return _selection(search.fit(np.asarray(x_train), np.asarray(y_train)))


@dataclass(frozen=True)
class PriorBaseline:
    """Per-patch readout scales q (effective priors λ1/q_i) minimising the validation loss at
    infinite width; validation_loss at q; initial_loss at q = 1 (the untuned NNGP)."""

    q: tuple[float, ...]
    validation_loss: float
    initial_loss: float
    iterations: int

    @property
    def effective_priors(self) -> tuple[float, ...]:
        return tuple(1.0 / value for value in self.q)


def patch_kernels(spec: ArchitectureSpec, x: torch.Tensor, lambda0: float) -> torch.Tensor:
    """(Np, n, n) per-patch kernels K_ii on all inputs (one block for FC and GAP-free models
    without patches)."""
    if spec.kind == "fc":
        return fc_kernel(x, activation=spec.activation, lambda0=lambda0)[None]
    if spec.kind not in ("cnn", "lcn"):
        raise ValueError(f"best_readout_priors supports 'fc', 'cnn' and 'lcn', got "
                         f"{spec.kind!r}.")
    return local_diagonal_blocks(x, spec.geometry, activation=spec.activation, lambda0=lambda0)


def readout_prior_loss(log_q: torch.Tensor, blocks: torch.Tensor, n_train: int, y_train:
                     torch.Tensor, y_validation: torch.Tensor, temperature: float,
                     lambda1: float) -> torch.Tensor:
    """ε_g on the inputs after the first n_train (rows of `blocks`) of the infinite-width
    network with kernel Σ_i q_i K_ii/(λ1 Np), q = exp(log_q), noise T, trained on the first
    n_train; differentiable in log_q."""
    q = torch.exp(log_q)
    kernel = torch.einsum("i,imn->mn", q, blocks) / (lambda1 * blocks.shape[0])
    train = kernel[:n_train, :n_train]
    cross = kernel[n_train:, :n_train]
    # torch's own factorisation (not krenorm.linalg): the loss is differentiated through it.
    factor = torch.linalg.cholesky(train + temperature * torch.eye(n_train, dtype=train.dtype))
    solved = torch.cholesky_solve(cross.T, factor)  # A⁻¹ k(x, x0)
    mean = (solved.T @ y_train.unsqueeze(-1)).squeeze(-1)
    variance = torch.diagonal(kernel[n_train:, n_train:]) - (cross * solved.T).sum(-1)
    return ((y_validation - mean) ** 2 + variance).mean()


def best_readout_priors(spec: ArchitectureSpec, x_train: Any, y_train: Any, x_validation: Any,
                        y_validation: Any, *, temperature: float, lambda0: float = 1.0,
                        lambda1: float = 1.0, max_iterations: int = 200) -> PriorBaseline:
    """Minimise the validation ε_g of the infinite-width network over per-patch readout scales q
    (module docstring). Memory: Np (P + Pv)² floats for the per-patch kernels."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}.")
    x_tr, x_va = _tensor(x_train), _tensor(x_validation)
    y_tr, y_va = _tensor(y_train), _tensor(y_validation)
    if y_tr.ndim != 1 or y_va.ndim != 1:
        raise ValueError("best_readout_priors takes one output: y_train and y_validation must "
                         "be vectors.")
    blocks = patch_kernels(spec, torch.cat([x_tr, x_va]), lambda0)
    n_train = x_tr.shape[0]
    log_q = torch.zeros(blocks.shape[0], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        initial = float(readout_prior_loss(log_q, blocks, n_train, y_tr, y_va, temperature,
                                         lambda1))
    optimizer = torch.optim.LBFGS([log_q], lr=1.0, max_iter=max_iterations,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9)
    steps = 0

    def closure() -> torch.Tensor:
        nonlocal steps
        steps += 1
        optimizer.zero_grad()
        loss = readout_prior_loss(log_q, blocks, n_train, y_tr, y_va, temperature, lambda1)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        final = float(readout_prior_loss(log_q, blocks, n_train, y_tr, y_va, temperature,
                                       lambda1))
    if not math.isfinite(final):
        raise FloatingPointError("the validation loss became non-finite while tuning the "
                                 "readout priors; raise the temperature.")
    q = tuple(float(value) for value in torch.exp(log_q.detach()))
    return PriorBaseline(q, final, initial, steps)
