"""Functional API: fit the effective theory on a training set and predict (docs/math/theory.md
§3–6).

A fit composes four pieces, each behind one interface: the architecture's kernel model
(`RenormalizedKernels`) → its effective action (`EffectiveAction`) → the stationary point
(solved, with continuation in α and T when needed, or fixed by the user) → the Gaussian-process
posterior at that point (`GaussianPosterior`):

    m(x0) = k_R(x0)ᵀ A⁻¹ y,   v(x0) = K_R(x0, x0) − k_R(x0)ᵀ A⁻¹ k_R(x0),
    ε_g = (1/Pt) Σ_t [(y_t − m(x_t))² + v(x_t)]   (bias² + variance; no T added to v),

with A = T·1 + K_R at the stationary point. The log evidence is

    ln Z = −(N/2)[S₀(point) − S₀(1)] − ½[ln det A + yᵀA⁻¹y] − (P·D/2) ln 2π,

i.e. −(N/2)[S(point) − S₀(1)] − (P·D/2) ln 2π, normalised so that at infinite width (N = ∞,
where the point is the identity and the first term is exactly 0) it is the Gaussian-process
marginal likelihood.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from krenorm._validation import check_finite, check_positive, check_targets
from krenorm.architectures import ArchitectureSpec
from krenorm.memory import DEFAULT_CHUNK_BYTES
from krenorm.theory.blocks import BlockSettings
from krenorm.theory.continuation import ContinuationSettings, solve_with_continuation
from krenorm.theory.diagnostics import SolverDiagnostics, SolverSettings
from krenorm.theory.posterior import GaussianPosterior, Prediction
from krenorm.theory.renormalized_kernels import renormalized_kernels
from krenorm.theory.solvers import ProgressCallback
from krenorm.width import alpha, check_width, is_infinite, width_to_json

__all__ = [
    "FittedTheory",
    "Prediction",
    "TestLoss",
    "TheoryConfig",
    "TheorySummary",
    "fit_theory",
]


@dataclass(frozen=True, init=False)
class TheoryConfig:
    """Hyper-parameters of one theory fit (same meaning as for the sampled networks).

    width: N, a positive float; ``math.inf`` is the infinite-width (NNGP) limit.
    solver_settings: how the stationary point is searched (`SolverSettings`); the flat keywords
    solver (the method), tolerance, max_iterations, n_starts, seed and hessian_check override
    its fields.
    fixed_q_bar: use this order parameter instead of solving — the Gaussian process with kernel
    K_R(Q̄), i.e. an infinite-width network with retuned readout priors (λ1/Q̄ for FC, λ1/q̄_i
    per patch for an LCN; a diagonal Q̄ for a CNN without pooling).
    device: where kernels and P×P algebra run ('cpu', 'cuda', ...; float64 throughout); the
    order parameters and the solver stay on the CPU.
    blocks: how CNN/LCN local blocks are held (`BlockSettings`: auto/stored/streamed, float64 or
    float32 storage; None = auto: streamed when stored blocks would not fit memory_limit).
    continuation: how the stationary point is followed in α (and T) when a direct solve fails
    (`krenorm.theory.continuation.ContinuationSettings`; docs/math/theory.md §3.7).
    infinite_width (deprecated): True means width = math.inf.
    """

    architecture: ArchitectureSpec
    width: float
    temperature: float
    lambda0: float = 1.0
    lambda1: float = 1.0
    solver_settings: SolverSettings = field(default_factory=SolverSettings)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    memory_limit: int | None = None
    fixed_q_bar: tuple[float, ...] | None = None
    device: str | None = None
    blocks: BlockSettings | None = None
    continuation: ContinuationSettings = field(default_factory=ContinuationSettings)

    def __init__(
        self,
        architecture: ArchitectureSpec,
        width: float,
        temperature: float,
        lambda0: float = 1.0,
        lambda1: float = 1.0,
        *,
        solver_settings: SolverSettings | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        memory_limit: int | None = None,
        fixed_q_bar: Sequence[float] | torch.Tensor | None = None,
        device: str | None = None,
        blocks: BlockSettings | None = None,
        infinite_width: bool | None = None,
        solver: str | None = None,
        tolerance: float | None = None,
        max_iterations: int | None = None,
        n_starts: int | None = None,
        seed: int | None = None,
        hessian_check: bool | None = None,
        continuation: ContinuationSettings | None = None,
    ) -> None:
        if not isinstance(architecture, ArchitectureSpec):
            raise ValueError(f"architecture must be an ArchitectureSpec, got "
                             f"{type(architecture).__name__}.")
        if infinite_width is not None:
            warnings.warn("infinite_width is deprecated; pass width=math.inf for the "
                          "infinite-width limit.", DeprecationWarning, stacklevel=2)
        width = math.inf if infinite_width else check_width(width)
        settings = SolverSettings() if solver_settings is None else solver_settings
        if not isinstance(settings, SolverSettings):
            raise ValueError(f"solver_settings must be a SolverSettings, got "
                             f"{type(settings).__name__}.")
        settings = settings.updated(method=solver, tolerance=tolerance,
                                    max_iterations=max_iterations, n_starts=n_starts, seed=seed,
                                    hessian_check=hessian_check)
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}.")
        if blocks is not None and not isinstance(blocks, BlockSettings):
            raise ValueError(f"blocks must be a BlockSettings or None, got "
                             f"{type(blocks).__name__}.")
        fixed = None if fixed_q_bar is None else tuple(
            float(value) for value in torch.as_tensor(fixed_q_bar, dtype=torch.float64).reshape(-1))
        values = {
            "architecture": architecture,
            "width": width,
            "temperature": check_positive("temperature", temperature),
            "lambda0": check_positive("lambda0", lambda0),
            "lambda1": check_positive("lambda1", lambda1),
            "solver_settings": settings,
            "chunk_bytes": chunk_bytes,
            "memory_limit": memory_limit,
            "fixed_q_bar": fixed,
            "device": device,
            "blocks": blocks,
            "continuation": ContinuationSettings() if continuation is None else continuation,
        }
        if not isinstance(values["continuation"], ContinuationSettings):
            raise ValueError(f"continuation must be a ContinuationSettings, got "
                             f"{type(continuation).__name__}.")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the architecture's flat dict, width via `width_to_json` ("inf")."""
        return {
            "architecture": self.architecture.to_dict(),
            "width": width_to_json(self.width),
            "temperature": self.temperature,
            "lambda0": self.lambda0,
            "lambda1": self.lambda1,
            "solver_settings": self.solver_settings.to_dict(),
            "chunk_bytes": self.chunk_bytes,
            "memory_limit": self.memory_limit,
            "fixed_q_bar": None if self.fixed_q_bar is None else list(self.fixed_q_bar),
            "device": self.device,
            "blocks": None if self.blocks is None else self.blocks.to_dict(),
        }


@dataclass(frozen=True)
class TestLoss:
    """ε_g = bias² + variance, averaged over test points (and outputs)."""

    loss: float
    bias2: float
    variance: float
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TheorySummary:
    """The numbers a user reads (docs/math/theory.md §6). width is math.inf and alpha 0 at
    infinite width."""

    architecture: str
    width: float
    temperature: float
    lambda0: float
    lambda1: float
    n_train: int
    alpha: float
    q_bar: list[Any]
    conjugate_q: float | None
    effective_priors: list[Any]
    off_diagonal_share: float | None
    log_evidence: float
    train_error: float
    train_loss: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def infinite_width(self) -> bool:
        """Deprecated: ``math.isinf(summary.width)``."""
        warnings.warn("TheorySummary.infinite_width is deprecated; test math.isinf(width).",
                      DeprecationWarning, stacklevel=2)
        return is_infinite(self.width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (width as "inf" at infinite width)."""
        out = asdict(self)
        out["width"] = width_to_json(self.width)
        return out


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
    y = check_targets("y", y, x.shape[0])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and spec.kind != "fc":
        raise ValueError("several outputs (kernel shape renormalization) are implemented for the "
                         "FC architecture only; fit one output at a time.")
    return x, y


class PosteriorPredictions:
    """Predictions and test loss of a fitted theory through its Gaussian posterior; shared by the
    one-layer `FittedTheory` and the deep `DeepFittedTheory` (docs/math/theory.md §6)."""

    posterior: GaussianPosterior
    x_train: torch.Tensor

    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> Prediction:
        """Posterior mean and variance of the output at x (batched over test points)."""
        x = torch.as_tensor(x, dtype=torch.float64).to(self.x_train.device)
        if x.shape[1:] != self.x_train.shape[1:]:
            expected = ", ".join(map(str, self.x_train.shape[1:]))
            raise ValueError(f"test inputs must have shape (Pt, {expected}), got {tuple(x.shape)}.")
        check_finite("x", x)
        return self.posterior.predict(x, batch_size)

    def test_loss(self, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int | None = None) -> TestLoss:
        """ε_g = (1/Pt) Σ [(y − m)² + v], with its bias² and variance parts."""
        x = torch.as_tensor(x, dtype=torch.float64)
        y = check_targets("y", torch.as_tensor(y, dtype=torch.float64), x.shape[0])
        prediction = self.predict(x, batch_size)
        y = y.to(prediction.mean.device)
        if y.shape != prediction.mean.shape:
            raise ValueError(f"test targets must have shape {tuple(prediction.mean.shape)}, got "
                             f"{tuple(y.shape)}.")
        bias2 = float(((y - prediction.mean) ** 2).mean())
        variance = float(prediction.variance.mean())
        return TestLoss(bias2 + variance, bias2, variance, int(y.shape[0]))


class FittedTheory(PosteriorPredictions):
    """The stationary point of the effective action on a training set, with the posterior.

    Attributes: kernels (the architecture's kernel model), action, point (the order parameters;
    `q_bar` and `conjugate_q` read it), diagnostics (`SolverDiagnostics`, None for a fixed
    order parameter), posterior, log_evidence."""

    def __init__(self, config: TheoryConfig, x_train: torch.Tensor, y_train: torch.Tensor, *,
                 progress: ProgressCallback | None = None):
        spec = config.architecture
        self.config = config
        self._progress = progress
        self.x_train, self.y_train = _validate_training_set(spec, x_train, y_train)
        if config.device is not None:
            self.x_train = self.x_train.to(config.device)
            self.y_train = self.y_train.to(config.device)
        self.n_train = self.x_train.shape[0]
        self.n_outputs = 1 if self.y_train.ndim == 1 else self.y_train.shape[1]
        self.kernels = renormalized_kernels(spec, self.x_train, config.lambda0, config.lambda1,
                                            config.chunk_bytes, config.memory_limit,
                                            blocks=config.blocks)
        self.action = self.kernels.action(self.y_train, config.width, config.temperature)
        self.structure = self.action.structure
        self.point, self.diagnostics = self._order_parameters()
        self.posterior = self.kernels.posterior(self.point, self.y_train, config.temperature)
        self.log_evidence = self._log_evidence()

    # -- fitting --------------------------------------------------------------------------------

    def _order_parameters(self) -> tuple[torch.Tensor, SolverDiagnostics | None]:
        """The fixed point when one is given, else the solved stationary point (at N = ∞ the
        solver finds the identity at once: the data term vanishes)."""
        if self.config.fixed_q_bar is not None:
            return self.structure.point_from(self.config.fixed_q_bar), None
        saddle = solve_with_continuation(self.action, self.n_train,
                                         solver=self.config.solver_settings,
                                         settings=self.config.continuation,
                                         progress=self._progress)
        return saddle.point, saddle.diagnostics

    def _log_evidence(self) -> float:
        """ln Z of the module docstring. The prior part −(N/2)[S₀(point) − S₀(1)] is exactly 0
        at the identity (its N = ∞ limit) and −∞ at any other point when N = ∞."""
        gap = self.structure.prior_gap(self.point)
        prior_part = 0.0 if gap == 0 else -self.config.width / 2 * gap
        return (prior_part - self.posterior.data_fit / 2
                - self.n_train * self.n_outputs / 2 * math.log(2 * math.pi))

    # -- order parameters -----------------------------------------------------------------------

    @property
    def q_bar(self) -> torch.Tensor:
        """Q̄: shape (1,) for FC/CNN-GAP (and the Q̄ of a (Q̄, Q) pair), (Np,) for an LCN,
        (Np, Np) for a CNN, (D, D) for FC with D outputs."""
        return self.structure.q_bar(self.point)

    @property
    def conjugate_q(self) -> float | None:
        """Q of the (Q̄, Q) pair of a non-odd activation, else None."""
        return self.structure.conjugate(self.point)

    @property
    def effective_priors(self) -> torch.Tensor:
        """λ1/Q̄ (FC, GAP), λ1/q̄_i (LCN), λ1/Q̄_ii (CNN diagonal; the off-diagonal part has no
        prior counterpart): the readout priors of the equivalent infinite-width network."""
        return self.config.lambda1 / self.structure.readout_scales(self.point)

    # -- predictions ----------------------------------------------------------------------------


    # -- training-set numbers -------------------------------------------------------------------

    @property
    def train_residual(self) -> torch.Tensor:
        """y − m(x^μ) = T A⁻¹ y on the training set."""
        return self.posterior.train_residual

    @property
    def train_error(self) -> float:
        """Training MSE of the posterior-mean predictor."""
        return float((self.train_residual**2).mean())

    @property
    def train_loss(self) -> float:
        """Posterior average of the instantaneous training MSE: bias² + T(1 − T (A⁻¹)_μμ)."""
        temperature = self.config.temperature
        variance = temperature * (1 - temperature * self.posterior.a_inverse_diagonal)
        return self.train_error + float(variance.mean())

    def summary(self) -> TheorySummary:
        config = self.config
        return TheorySummary(
            architecture=config.architecture.kind,
            width=config.width,
            temperature=config.temperature,
            lambda0=config.lambda0,
            lambda1=config.lambda1,
            n_train=self.n_train,
            alpha=alpha(self.n_train, config.width),
            q_bar=self.q_bar.tolist(),
            conjugate_q=self.conjugate_q,
            effective_priors=self.effective_priors.tolist(),
            off_diagonal_share=self.kernels.off_diagonal_share(self.point),
            log_evidence=self.log_evidence,
            train_error=self.train_error,
            train_loss=self.train_loss,
            diagnostics=self._diagnostics_dict(),
        )

    def _diagnostics_dict(self) -> dict[str, Any]:
        """The solver's diagnostics, with how the local blocks were held (stored or streamed,
        and why) where the model has blocks."""
        out = {} if self.diagnostics is None else self.diagnostics.to_dict()
        plan = getattr(self.kernels, "block_plan", None)
        if plan is not None:
            out["blocks"] = plan.to_dict()
        return out


def fit_theory(x_train: torch.Tensor, y_train: torch.Tensor, architecture: ArchitectureSpec,
               width: float, temperature: float, lambda0: float = 1.0, lambda1: float = 1.0,
               *, progress: ProgressCallback | None = None, **options: Any) -> FittedTheory:
    """Fit the effective theory (docs/math/theory.md §3) and return a `FittedTheory`.

    width = math.inf gives the infinite-width (NNGP) limit. `options` are the keyword-only
    options of `TheoryConfig`: solver_settings, the flat solver keywords (solver, tolerance,
    max_iterations, n_starts, seed, hessian_check), chunk_bytes, memory_limit, fixed_q_bar,
    device, blocks (and the deprecated infinite_width). `progress` is called with a
    `SolverProgress` after every evaluation of S (see `krenorm.theory.progress` for a rich
    display)."""
    config = TheoryConfig(architecture, width, temperature, lambda0, lambda1, **options)
    return FittedTheory(config, x_train, y_train, progress=progress)
