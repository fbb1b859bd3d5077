"""Functional API: fit the effective theory on a training set and predict (THEORY.md §3–6).

    m(x0) = k_R(x0)ᵀ A⁻¹ y,   v(x0) = K_R(x0, x0) − k_R(x0)ᵀ A⁻¹ k_R(x0),
    ε_g = (1/Pt) Σ_t [(y_t − m(x_t))² + v(x_t)]   (bias² + variance; no T added to v),
with A = T·1 + K_R(Q̄*). Cholesky solves only; the test set is processed in batches and no
test×test matrix is formed. The log evidence is −(N/2)[S(Q̄*) − S_prior(1)] − (P·D/2) ln 2π,
normalised so that at infinite width it is the Gaussian-process marginal likelihood.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import torch

from krenorm._validation import check_finite, check_positive
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.activations import get_activation
from krenorm.kernels.memory import DEFAULT_CHUNK_BYTES
from krenorm.theory.action import SpectralAction, _cholesky, spd_inverse
from krenorm.theory.mean_term import MeanTermKernels, solve_mean_term_saddle
from krenorm.theory.renormalized_kernels import RenormalizedKernels, renormalized_kernels
from krenorm.theory.solvers import (
    SaddlePoint,
    SaddlePointConvergenceWarning,
    SolverDiagnostics,
    solve_saddle_point,
)

#: Widths N·factor followed, warm-starting each, when a saddle point is not reached from
#: infinite width directly (both the Q̄ and the (Q̄, Q) saddles).
_CONTINUATION_FACTORS = (1000.0, 100.0, 10.0, 3.0, 1.0)


@dataclass(frozen=True)
class TheoryConfig:
    """Hyper-parameters of one theory fit (same meaning as for the sampled networks).

    fixed_q_bar: use this Q̄ instead of solving — the Gaussian process with kernel K_R(Q̄), i.e.
    an infinite-width network with retuned readout priors (λ1/Q̄ for FC, λ1/q̄_i per patch for an
    LCN; a diagonal Q̄ for a CNN without pooling).
    device: where kernels and P×P algebra run ('cpu', 'cuda', ...; float64 throughout); Q̄ and
    the solver stay on the CPU."""

    architecture: ArchitectureSpec
    width: float
    temperature: float
    lambda0: float = 1.0
    lambda1: float = 1.0
    infinite_width: bool = False
    solver: str = "auto"
    tolerance: float = 1e-9
    max_iterations: int = 500
    n_starts: int = 1
    seed: int = 0
    hessian_check: bool = True
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    memory_limit: int | None = None
    fixed_q_bar: tuple | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("width", "temperature", "lambda0", "lambda1", "tolerance"):
            check_positive(name, getattr(self, name))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["architecture"] = self.architecture.to_dict()
        return out


@dataclass(frozen=True)
class Prediction:
    """Posterior mean and variance of the network output (no label noise added)."""

    mean: torch.Tensor
    variance: torch.Tensor


@dataclass(frozen=True)
class TestLoss:
    """ε_g = bias² + variance, averaged over test points (and outputs)."""

    loss: float
    bias2: float
    variance: float
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TheorySummary:
    """The numbers a user reads (THEORY.md §6)."""

    architecture: str
    width: float
    temperature: float
    lambda0: float
    lambda1: float
    infinite_width: bool
    n_train: int
    alpha: float
    q_bar: list
    conjugate_q: float | None
    effective_priors: list
    off_diagonal_share: float | None
    log_evidence: float
    train_error: float
    train_loss: float
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _validate_training_set(spec: ArchitectureSpec, x: torch.Tensor, y: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if spec.is_convolutional and x.ndim != 4:
        raise ValueError(f"the {spec.kind} architecture needs images of shape (P, c, H, W), "
                         f"got {tuple(x.shape)}.")
    if x.ndim not in (2, 4):
        raise ValueError(f"inputs must be (P, D) vectors or (P, c, H, W) images, got "
                         f"{tuple(x.shape)}.")
    check_finite("x", x)
    check_finite("y", y)
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"targets must be ({x.shape[0]},) or ({x.shape[0]}, D), got "
                         f"{tuple(y.shape)}.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and spec.kind != "fc":
        raise ValueError("several outputs (kernel shape renormalization) are implemented for the "
                         "FC architecture only; fit one output at a time.")
    return x, y


class FittedTheory:
    """The saddle point Q̄* on a training set, with predictions on new inputs."""

    def __init__(self, config: TheoryConfig, x_train: torch.Tensor, y_train: torch.Tensor):
        spec = config.architecture
        self.config = config
        self.x_train, self.y_train = _validate_training_set(spec, x_train, y_train)
        if config.device is not None:
            self.x_train = self.x_train.to(config.device)
            self.y_train = self.y_train.to(config.device)
        self.n_train = self.x_train.shape[0]
        self.n_outputs = 1 if self.y_train.ndim == 1 else self.y_train.shape[1]
        self.conjugate_q: float | None = None
        self.diagnostics: SolverDiagnostics | dict | None = None
        activation = get_activation(spec.activation)
        self._uses_mean_term = spec.kind == "fc" and not activation.odd
        if self._uses_mean_term:
            if self.n_outputs > 1:
                raise ValueError("several outputs with a non-odd activation are not supported.")
            self._fit_mean_term()
        else:
            self.kernels = renormalized_kernels(spec, self.x_train, config.lambda0, config.lambda1,
                                                config.chunk_bytes, config.memory_limit)
            self._fit_linear()

    # -- fitting --------------------------------------------------------------------------------

    def _solve(self, width: float, start: torch.Tensor | None) -> SaddlePoint:
        config = self.config
        action = self.kernels.action(self.y_train, width, config.temperature)
        return solve_saddle_point(action, start=start, method=config.solver,
                                  tolerance=config.tolerance,
                                  max_iterations=config.max_iterations,
                                  n_starts=config.n_starts, seed=config.seed,
                                  hessian_check=config.hessian_check)

    def _fit_linear(self) -> None:
        config = self.config
        self.action = self.kernels.action(self.y_train, config.width, config.temperature)
        structure = self.action.structure
        action_value = None
        if config.fixed_q_bar is not None:
            self.q_bar = torch.as_tensor(config.fixed_q_bar, dtype=torch.float64).reshape(
                structure.identity().shape)
        elif config.infinite_width:
            self.q_bar = structure.identity()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
                saddle = self._solve(config.width, None)
            if not saddle.diagnostics.converged:
                saddle = self._continuation()
            self.q_bar = saddle.q_bar
            self.diagnostics = saddle.diagnostics
            action_value = saddle.diagnostics.action
        if action_value is None:
            action_value = self.action(self.q_bar)
        prior_at_infinity = structure.prior_value(structure.identity())
        self.log_evidence = (-config.width / 2 * (action_value - prior_at_infinity)
                             - self.n_train * self.n_outputs / 2 * math.log(2 * math.pi))
        if isinstance(self.action, SpectralAction):
            self._prepare_spectral()
        else:
            self._prepare_cholesky(self.kernels.train_kernel(self.q_bar))

    def _continuation(self) -> SaddlePoint:
        """Follow the solution from near infinite width (α/1000) down to the target width,
        warm-starting each solve; warns if the target is still not converged."""
        start = None
        saddle = None
        for factor in _CONTINUATION_FACTORS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore" if factor > 1 else "default",
                                      SaddlePointConvergenceWarning)
                saddle = self._solve(self.config.width * factor, start)
            start = saddle.q_bar
        return saddle  # type: ignore[return-value]

    def _mean_term_continuation(self) -> tuple[float, float, dict]:
        """(Q̄, Q) followed from near infinite width (N·1000) down to N, warm-starting each
        solve (the two-parameter counterpart of `_continuation`)."""
        config = self.config
        start = (1.0, 0.0)
        for factor in _CONTINUATION_FACTORS:
            action = self.kernels.action(self.y_train, config.width * factor, config.temperature)
            q_bar, q, diagnostics = solve_mean_term_saddle(action, config.tolerance, start=start)
            if diagnostics["converged"]:
                start = (q_bar, q)
        diagnostics["method"] = f"continuation in N; {diagnostics['method']}"
        return q_bar, q, diagnostics

    def _fit_mean_term(self) -> None:
        config = self.config
        self.kernels = MeanTermKernels(config.architecture.activation, self.x_train,
                                       config.lambda0, config.lambda1)
        action = self.kernels.action(self.y_train, config.width, config.temperature)
        if config.infinite_width:
            q_bar, q = 1.0, 0.0
        else:
            q_bar, q, diagnostics = solve_mean_term_saddle(action, config.tolerance)
            if not diagnostics["converged"]:
                q_bar, q, diagnostics = self._mean_term_continuation()
            if not diagnostics["converged"]:
                warnings.warn(f"mean-term saddle point not converged: {diagnostics}",
                              SaddlePointConvergenceWarning, stacklevel=3)
            self.diagnostics = diagnostics
        self.q_bar = torch.tensor([q_bar], dtype=torch.float64)
        self.conjugate_q = float(q)
        value, _ = action.evaluate(q_bar, q)
        self.log_evidence = float(-config.width / 2 * value
                             - self.n_train / 2 * math.log(2 * math.pi))
        self._prepare_cholesky(action.train_kernel(q_bar, q))

    def _prepare_cholesky(self, train_kernel: torch.Tensor) -> None:
        a = train_kernel.clone()
        a.diagonal().add_(self.config.temperature)
        self._factor = _cholesky(a, "A = T·1 + K_R(Q̄)")
        self._alpha = torch.cholesky_solve(self.y_train[:, None], self._factor)  # (P, 1)
        self._a_inverse_diagonal = torch.diagonal(spd_inverse(self._factor))[:, None]

    def _prepare_spectral(self) -> None:
        action = self.action
        inverses, w, _ = action.block_inverses(self.q_bar)
        q = action._as_matrix(self.q_bar).to(inverses)
        self._q_matrix = q
        self._alpha = action.eigenvectors @ w  # (P, D)
        self._spectral_variance_weights = torch.diagonal(q @ inverses @ q, dim1=-2, dim2=-1)
        self._a_inverse_diagonal = (action.eigenvectors**2) @ torch.diagonal(
            inverses, dim1=-2, dim2=-1)

    # -- predictions ----------------------------------------------------------------------------

    def _batch_kernels(self, x_batch: torch.Tensor):
        if self._uses_mean_term:
            return self.kernels.test_kernels(float(self.q_bar), self.conjugate_q, x_batch)
        return self.kernels.test_kernels(self.q_bar, x_batch)

    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> Prediction:
        """Posterior mean and variance of the output at x (batched over test points)."""
        x = torch.as_tensor(x, dtype=torch.float64).to(self.x_train.device)
        if x.shape[1:] != self.x_train.shape[1:]:
            expected = ", ".join(map(str, self.x_train.shape[1:]))
            raise ValueError(f"test inputs must have shape (Pt, {expected}), got {tuple(x.shape)}.")
        check_finite("x", x)
        if isinstance(getattr(self, "action", None), SpectralAction):
            return self._predict_spectral(x, batch_size)
        size = batch_size or (1024 if self._uses_mean_term else self.kernels.test_batch_size())
        means, variances = [], []
        for start in range(0, x.shape[0], size):
            k_r, k_00 = self._batch_kernels(x[start:start + size])
            means.append(k_r @ self._alpha[:, 0])
            solved = torch.linalg.solve_triangular(self._factor, k_r.T, upper=False)
            variances.append(k_00 - (solved**2).sum(0))
        return Prediction(torch.cat(means), torch.cat(variances).clamp_min(0))

    def _predict_spectral(self, x: torch.Tensor, batch_size: int | None) -> Prediction:
        kernels, action = self.kernels, self.action
        size = batch_size or kernels.test_batch_size()
        means, variances = [], []
        for start in range(0, x.shape[0], size):
            batch = x[start:start + size]
            cross = kernels.base_kernel(batch, self.x_train) / self.config.lambda1
            diagonal = kernels.base_diagonal(batch) / self.config.lambda1
            means.append(cross @ self._alpha @ self._q_matrix)
            projected = (cross @ action.eigenvectors) ** 2  # z_μ²
            variances.append(diagonal[:, None] * torch.diagonal(self._q_matrix)
                             - projected @ self._spectral_variance_weights)
        mean, variance = torch.cat(means), torch.cat(variances).clamp_min(0)
        if self.n_outputs == 1:
            mean, variance = mean[:, 0], variance[:, 0]
        return Prediction(mean, variance)

    def test_loss(self, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int | None = None) -> TestLoss:
        """ε_g = (1/Pt) Σ [(y − m)² + v], with its bias² and variance parts."""
        y = torch.as_tensor(y, dtype=torch.float64).to(self.x_train.device)
        check_finite("y", y)
        prediction = self.predict(x, batch_size)
        if y.shape != prediction.mean.shape:
            raise ValueError(f"test targets must have shape {tuple(prediction.mean.shape)}, got "
                             f"{tuple(y.shape)}.")
        bias2 = float(((y - prediction.mean) ** 2).mean())
        variance = float(prediction.variance.mean())
        return TestLoss(bias2 + variance, bias2, variance, int(y.shape[0]))

    # -- training-set numbers -------------------------------------------------------------------

    @property
    def train_residual(self) -> torch.Tensor:
        """y − m(x^μ) = T A⁻¹ y on the training set."""
        residual = self.config.temperature * self._alpha
        return residual[:, 0] if self.n_outputs == 1 and residual.ndim == 2 else residual

    @property
    def train_error(self) -> float:
        """Training MSE of the posterior-mean predictor."""
        return float((self.train_residual**2).mean())

    @property
    def train_loss(self) -> float:
        """Posterior average of the instantaneous training MSE: bias² + T(1 − T (A⁻¹)_μμ)."""
        temperature = self.config.temperature
        variance = temperature * (1 - temperature * self._a_inverse_diagonal)
        return self.train_error + float(variance.mean())

    @property
    def effective_priors(self) -> torch.Tensor:
        """λ1/Q̄ (FC, GAP), λ1/q̄_i (LCN), λ1/Q̄_ii (CNN diagonal; the off-diagonal part has no
        prior counterpart): the readout priors of the equivalent infinite-width network."""
        q = self.q_bar
        diagonal = torch.diagonal(q) if q.ndim == 2 else q
        return self.config.lambda1 / diagonal

    def summary(self) -> TheorySummary:
        config = self.config
        diagnostics = self.diagnostics
        if isinstance(diagnostics, SolverDiagnostics):
            diagnostics = diagnostics.to_dict()
        share = None
        if not self._uses_mean_term and isinstance(self.kernels, RenormalizedKernels):
            share = self.kernels.off_diagonal_share(self.q_bar)
        return TheorySummary(
            architecture=config.architecture.kind,
            width=config.width,
            temperature=config.temperature,
            lambda0=config.lambda0,
            lambda1=config.lambda1,
            infinite_width=config.infinite_width,
            n_train=self.n_train,
            alpha=self.n_train / config.width,
            q_bar=self.q_bar.tolist(),
            conjugate_q=self.conjugate_q,
            effective_priors=self.effective_priors.tolist(),
            off_diagonal_share=share,
            log_evidence=self.log_evidence,
            train_error=self.train_error,
            train_loss=self.train_loss,
            diagnostics=diagnostics or {},
        )


def fit_theory(x_train: torch.Tensor, y_train: torch.Tensor, architecture: ArchitectureSpec,
               width: float, temperature: float, lambda0: float = 1.0, lambda1: float = 1.0,
               infinite_width: bool = False, **solver_options) -> FittedTheory:
    """Fit the effective theory (THEORY.md §3) and return a `FittedTheory` for predictions."""
    config = TheoryConfig(architecture, width, temperature, lambda0, lambda1, infinite_width,
                          **solver_options)
    return FittedTheory(config, x_train, y_train)

