"""Fit the deep effective theory and predict (docs/math/deep.md §3–5).

    fit_deep_theory(x, y, spec, widths=(N_1..N_L), temperature=T, priors=(λ_0..λ_L))

builds the deep kernels (krenorm.kernels.deep), the action of the architecture — deep FC and
deep CNN-GAP: one scalar per layer (`DeepProductAction`); deep CNN: one d×d SPD matrix with the
L-th-root prior; deep LCN: its diagonal (`theory.deep_local`) — solves the stationary point with
`solve_saddle_point` (continuation in N when the direct solve fails, as `fit_theory`), and
predicts with docs/math/theory.md §4's posterior:

    m(x0) = k_R(x0)ᵀA⁻¹y,  v(x0) = K_R(x0, x0) − k_R(x0)ᵀA⁻¹k_R(x0),  ε_g = bias² + variance,
    ln Z = −(N_1/2)[S₀(point) − S₀(1)] − ½[ln det A + yᵀA⁻¹y] − (P/2) ln 2π.

Every activation is treated with the central (zero-mean) ansatz: for ReLU at L = 1 this differs
from `fit_theory`, which uses the (Q̄, Q) mean-term action for FC. The CNN and LCN actions assume
equal channel counts (the L-th root is the per-layer factor of equal layers).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from krenorm._validation import check_finite, check_positive, check_targets
from krenorm.deep_architecture import DeepArchitectureSpec, check_layer_values
from krenorm.kernels.deep import (
    deep_fc_kernel,
    deep_fc_kernel_diagonal,
    deep_local_blocks,
    deep_local_cross_blocks,
    deep_local_diagonal_blocks,
    deep_local_test_diagonals,
)
from krenorm.theory.action import (
    DiagonalBlocksBasis,
    EffectiveAction,
    GramLinearAction,
    LocalBlocksBasis,
    SpectralAction,
    SpectralBasis,
)
from krenorm.theory.deep_fc import DeepProductAction
from krenorm.theory.deep_local import RootPriorDiagonalStructure, RootPriorMatrixStructure
from krenorm.theory.diagnostics import SaddlePoint, SolverDiagnostics, SolverSettings
from krenorm.theory.fit import PosteriorPredictions
from krenorm.theory.posterior import (
    CholeskyPosterior,
    GaussianPosterior,
    SpectralPosterior,
)
from krenorm.theory.solvers import SaddlePointConvergenceWarning, solve_saddle_point
from krenorm.width import is_infinite

__all__ = ["DeepFittedTheory", "DeepTheorySummary", "fit_deep_theory"]

#: Widths N·factor followed, warm-starting each, when the direct solve does not converge.
_CONTINUATION_FACTORS = (1000.0, 100.0, 10.0, 3.0, 1.0)
#: Entries of one batch of test cross blocks (d²·Pt·P float64 values): about 256 MB.
_TEST_BATCH_ENTRIES = 2**25

TestKernels = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DeepTheorySummary:
    """The numbers a user reads: order parameters (per layer for FC/GAP, the last layer's
    matrix or diagonal for CNN/LCN), U = Π Q_ℓ for FC/GAP, log evidence, training error and
    loss, and the solver's diagnostics (convergence, multi-start disagreement)."""

    kind: str
    depth: int
    widths: list[float]
    temperature: float
    priors: list[float]
    n_train: int
    order_parameters: list[Any]
    total_scale: float | None
    log_evidence: float
    train_error: float
    train_loss: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["widths"] = ["inf" if math.isinf(w) else w for w in self.widths]
        return out


def _solve(action: EffectiveAction, settings: SolverSettings) -> SaddlePoint:
    """The direct solve, else continuation in N from N·1000 down (as `fit_theory`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
        saddle = solve_saddle_point(action, settings=settings)
    if saddle.diagnostics.converged or is_infinite(action.width):
        return saddle
    start: torch.Tensor | None = None
    for factor in _CONTINUATION_FACTORS:
        final = factor == _CONTINUATION_FACTORS[-1]
        with warnings.catch_warnings():
            if not final:
                warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
            saddle = solve_saddle_point(
                action.at_width(action.width * factor), start,
                settings=settings.updated(hessian_check=settings.hessian_check and final))
        if saddle.diagnostics.converged:
            start = saddle.point
    diagnostics = dataclasses.replace(
        saddle.diagnostics, method=f"continuation in N; {saddle.diagnostics.method}")
    return dataclasses.replace(saddle, diagnostics=diagnostics)


class DeepFittedTheory(PosteriorPredictions):
    """The stationary point of a deep effective action with its Gaussian posterior.

    Attributes: spec, widths, temperature, priors, action, point (the order parameters),
    diagnostics (None for a fixed point), posterior, log_evidence."""

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor, spec: DeepArchitectureSpec,
                 widths: Sequence[float] | float, temperature: float,
                 priors: Sequence[float] | float = 1.0, *,
                 solver_settings: SolverSettings | None = None,
                 fixed_point: Sequence[float] | torch.Tensor | None = None,
                 memory_limit: int | None = None):
        if not isinstance(spec, DeepArchitectureSpec):
            raise ValueError(f"spec must be a DeepArchitectureSpec, got {type(spec).__name__}.")
        self.spec = spec
        self.widths = check_layer_values("widths", widths, spec.depth)
        self.priors = check_layer_values("priors", priors, spec.depth + 1)
        self.temperature = check_positive("temperature", temperature)
        self.memory_limit = memory_limit
        x = torch.as_tensor(x_train, dtype=torch.float64)
        if spec.is_convolutional and x.ndim != 4:
            raise ValueError(f"the deep {spec.kind} needs images of shape (P, c, H, W), got "
                             f"{tuple(x.shape)}.")
        check_finite("x_train", x)
        y = check_targets("y_train", torch.as_tensor(y_train, dtype=torch.float64), x.shape[0])
        if y.ndim != 1:
            raise ValueError("the deep theory is implemented for one output; pass y of shape "
                             "(P,).")
        if spec.kind in ("cnn", "lcn") and len(set(self.widths)) > 1:
            raise ValueError(f"the deep {spec.kind} action (formulation A) assumes equal channel "
                             f"counts; got widths {self.widths}.")
        self.x_train, self.y_train = x, y
        self.n_train = x.shape[0]
        self.action, self._posterior_factory = self._build()
        settings = solver_settings or SolverSettings()
        if fixed_point is not None:
            self.point = self.action.structure.point_from(fixed_point)
            self.diagnostics: SolverDiagnostics | None = None
        else:
            saddle = _solve(self.action, settings)
            self.point, self.diagnostics = saddle.point, saddle.diagnostics
        self.posterior: GaussianPosterior = self._posterior_factory(self.point)
        gap = self.action.structure.prior_gap(self.point)
        prior_part = 0.0 if gap == 0 else -self.widths[0] / 2 * gap
        self.log_evidence = (prior_part - self.posterior.data_fit / 2
                             - self.n_train / 2 * math.log(2 * math.pi))

    # -- kernel models ----------------------------------------------------------------------

    def _build(self) -> tuple[EffectiveAction, Callable[[torch.Tensor], GaussianPosterior]]:
        spec, x, y = self.spec, self.x_train, self.y_train
        hidden_priors, readout_prior = self.priors[:-1], self.priors[-1]
        width = math.inf if any(is_infinite(w) for w in self.widths) else self.widths[0]
        if spec.kind in ("fc", "cnn-gap"):
            kernel, test_kernels = self._pooled_kernels()
            basis = SpectralBasis.from_kernel(kernel, y, 1.0)
            inner = SpectralAction.from_basis(basis, width, self.temperature)
            ratios = tuple(w / self.widths[0] for w in self.widths) if not is_infinite(
                self.widths[0]) else None
            widths = tuple(math.inf for _ in self.widths) if is_infinite(width) else self.widths
            action: EffectiveAction = DeepProductAction(inner, widths, ratios)

            def pooled(point: torch.Tensor) -> GaussianPosterior:
                total = torch.prod(point).reshape(1, 1)
                return SpectralPosterior(basis, total, self.temperature, test_kernels, 256)

            return action, pooled
        geometries = spec.geometries
        if spec.kind == "cnn":
            blocks = deep_local_blocks(x, geometries, spec.activation, hidden_priors,
                                       memory_limit=self.memory_limit)
            basis_cnn = LocalBlocksBasis(blocks, readout_prior)
            d = blocks.n_patches
            action = GramLinearAction(basis_cnn, y, width, self.temperature,
                                      RootPriorMatrixStructure(d, spec.depth))

            def conv_posterior(point: torch.Tensor) -> GaussianPosterior:
                return CholeskyPosterior(basis_cnn.combine(point), y, self.temperature,
                                         self._local_tests(point, basis_cnn.scale),
                                         self._batch(d * d))

            return action, conv_posterior
        # lcn
        stack = deep_local_diagonal_blocks(x, geometries, spec.activation, hidden_priors,
                                           memory_limit=self.memory_limit)
        basis_lcn = DiagonalBlocksBasis(stack, readout_prior)
        d = stack.shape[0]
        action = GramLinearAction(basis_lcn, y, width, self.temperature,
                                  RootPriorDiagonalStructure(d, spec.depth))

        def lcn_posterior(point: torch.Tensor) -> GaussianPosterior:
            return CholeskyPosterior(basis_lcn.combine(point), y, self.temperature,
                                     self._local_tests(point, basis_lcn.scale),
                                     self._batch(d))

        return action, lcn_posterior

    def _local_tests(self, point: torch.Tensor, scale: float) -> TestKernels:
        """Test side of the deep CNN (Q a d×d matrix over last-layer position pairs) and LCN (Q
        a d-vector over positions): k_R(x0, x^μ) = s Σ Q·K^L(x0, x^μ) and k_R(x0, x0) likewise,
        the sum running over Q's own indices (docs/math/deep.md §4)."""
        spec, x, priors = self.spec, self.x_train, self.priors[:-1]
        q = point.to(torch.float64)
        diagonal_only = q.ndim == 1

        def kernels(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cross = deep_local_cross_blocks(x0, x, spec.geometries, spec.activation, priors,
                                            diagonal_only=diagonal_only)
            diagonal = deep_local_test_diagonals(x0, spec.geometries, spec.activation, priors,
                                                 diagonal_only=diagonal_only)
            return (torch.tensordot(q, cross, dims=q.ndim) * scale,
                    torch.tensordot(q, diagonal, dims=q.ndim) * scale)
        return kernels

    def _batch(self, blocks: int) -> int:
        return max(1, min(1024, _TEST_BATCH_ENTRIES // max(1, blocks * self.n_train)))

    def _pooled_kernels(self) -> tuple[torch.Tensor, TestKernels]:
        """The fixed kernel of deep FC / deep CNN-GAP and its test-side (cross, diagonal)."""
        spec, x = self.spec, self.x_train
        if spec.kind == "fc":
            def fc_tests(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return (deep_fc_kernel(x0, x, spec.activation, self.priors),
                        deep_fc_kernel_diagonal(x0, spec.activation, self.priors))
            return deep_fc_kernel(x, None, spec.activation, self.priors), fc_tests
        hidden, readout = self.priors[:-1], self.priors[-1]
        blocks = deep_local_blocks(x, spec.geometries, spec.activation, hidden,
                                   memory_limit=self.memory_limit)
        d = blocks.n_patches
        ones = torch.ones(d, d, dtype=torch.float64)
        kernel = blocks.contract(ones) / (readout * d * d)
        del blocks

        def gap_tests(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cross = deep_local_cross_blocks(x0, x, spec.geometries, spec.activation, hidden)
            diagonal = deep_local_test_diagonals(x0, spec.geometries, spec.activation, hidden)
            return (cross.sum((0, 1)) / (readout * d * d),
                    diagonal.sum((0, 1)) / (readout * d * d))
        return kernel, gap_tests

    # -- what a user reads ------------------------------------------------------------------

    @property
    def total_scale(self) -> float | None:
        """U = Π_ℓ Q_ℓ (FC, GAP), else None."""
        return float(torch.prod(self.point)) if self.spec.kind in ("fc", "cnn-gap") else None

    def train_kernel(self) -> torch.Tensor:
        """K_R on the training set at the stationary point."""
        return self.action.train_kernel(self.point)

    @property
    def train_error(self) -> float:
        return float((self.posterior.train_residual**2).mean())

    @property
    def train_loss(self) -> float:
        """Posterior average of the instantaneous training MSE: bias² + T(1 − T (A⁻¹)_μμ)."""
        t = self.temperature
        variance = t * (1 - t * self.posterior.a_inverse_diagonal)
        return self.train_error + float(variance.mean())

    def summary(self) -> DeepTheorySummary:
        return DeepTheorySummary(
            kind=self.spec.kind, depth=self.spec.depth, widths=list(self.widths),
            temperature=self.temperature, priors=list(self.priors), n_train=self.n_train,
            order_parameters=self.point.tolist(), total_scale=self.total_scale,
            log_evidence=self.log_evidence, train_error=self.train_error,
            train_loss=self.train_loss,
            diagnostics={} if self.diagnostics is None else self.diagnostics.to_dict())


def fit_deep_theory(x_train: torch.Tensor, y_train: torch.Tensor, spec: DeepArchitectureSpec,
                    widths: Sequence[float] | float, temperature: float,
                    priors: Sequence[float] | float = 1.0, **options: Any) -> DeepFittedTheory:
    """Fit the deep effective theory (docs/math/deep.md §3–5). widths: N_1..N_L (a scalar is
    repeated; math.inf gives the deep NNGP); priors: λ_0..λ_L. Options: solver_settings,
    fixed_point (order parameters instead of solving), memory_limit."""
    return DeepFittedTheory(x_train, y_train, spec, widths, temperature, priors, **options)
