"""Named posterior samplers: a target density (`posterior_density`) moved by a transition kernel
(`transitions`), with per-replica acceptance monitoring (docs/math/theory.md §1).

    langevin       full posterior (W, a), unadjusted Langevin
    mala           full posterior (W, a), Metropolis-adjusted Langevin
    collapsed      readout integrated out, MALA on W (`metropolis=False`: unadjusted Langevin)
    hmc            full posterior (W, a), Metropolis-adjusted HMC, mass = prior precisions
    collapsed-hmc  readout integrated out, HMC on W
    split-hmc      full posterior (W, a), prior-split HMC (Gaussian part rotated exactly)
    collapsed-split-hmc  readout integrated out, prior-split HMC on W

A sampler is built as `SAMPLERS[name](model, x_train, y_train, T, λ0, λ1, step_size, generator)`
and moved by `step()`. Burn-in step-size adaptation is a separate object (`adaptation`) driven by
the run (`posterior.PosteriorRun`), like a learning-rate scheduler next to an optimizer.

Step sizes. For the Langevin kernels the step size η is the same object for all: the step on U
is ε = ηT, so η·(λmax(JJᵀ) + T·λ) < 2 is the stability limit (J = ∂f/∂θ over the training set).
For HMC it is the leapfrog step h of the dynamics with mass M = λ (per layer), whose frequencies
are ω² = eig(1 + Λ^{-1/2}JᵀJΛ^{-1/2}/T), stable for h·ω_max < 2. `default_step_size` sets
η = c/(tr JJᵀ + T·max(λ0, λ1)) and h = c/√(1 + tr(JΛ⁻¹Jᵀ)/T) (traces bound the largest
eigenvalues). Prior-split HMC solves the "1 +" part exactly, so its h = c/√(tr(JΛ⁻¹Jᵀ)/T)
(capped by the kernel at a quarter period per trajectory).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from krenorm._validation import check_positive
from krenorm.networks.diagnostics import STUCK_ACCEPTANCE
from krenorm.networks.modules import PreparedInputs, ReplicatedNetwork
from krenorm.networks.posterior_density import (
    CollapsedPosterior,
    FullPosterior,
    PosteriorDensity,
)
from krenorm.networks.readout_posterior import GaussianReadout
from krenorm.networks.transitions import (
    DEFAULT_LEAPFROG_STEPS,
    HMCKernel,
    LangevinKernel,
    MALAKernel,
    SplitHMCKernel,
    StepStatistics,
    TransitionKernel,
)

#: Replica-mean acceptance below which a post-adaptation window raises (the chains have stopped).
ACCEPTANCE_COLLAPSE = 0.05
#: Replica-mean window acceptance below which a warning is issued (MALA's optimum ≈ 0.57).
ACCEPTANCE_WARNING = 0.2
#: Steps per acceptance-monitoring window.
ACCEPTANCE_WINDOW = 100
#: c of the default step-size rule, per sampler: small for the unadjusted sampler (its stationary
#: variance in the stiffest direction is biased by ≈ c/2), larger where Metropolis corrects it and
#: burn-in adapts it.
STEP_SIZE_CONSTANTS = {"langevin": 0.1, "mala": 0.5, "collapsed": 0.5, "hmc": 0.5,
                       "collapsed-hmc": 0.5, "split-hmc": 0.5, "collapsed-split-hmc": 0.5}


class AcceptanceMonitor:
    """Per-replica acceptance since the last `reset`, checked every ACCEPTANCE_WINDOW steps. Over
    the window, a replica-mean acceptance below ACCEPTANCE_COLLAPSE raises (Metropolis kernels:
    the chains have stopped) and one below ACCEPTANCE_WARNING warns once; a replica whose mean
    since the reset is below STUCK_ACCEPTANCE gets one RuntimeWarning naming it (the summary
    then excludes it, `diagnostics`)."""

    def __init__(self, n_replicas: int, *, name: str, metropolis: bool) -> None:
        self.name = name
        self.metropolis = metropolis
        self.total = torch.zeros(n_replicas, dtype=torch.float64)
        self.steps = 0
        self.window_total = torch.zeros(n_replicas, dtype=torch.float64)
        self.window_steps = 0
        self.warned = False
        self.warned_stuck = False

    def reset(self) -> None:
        """Start the averages afresh (after adaptation, after burn-in); the one-warning latch
        stays."""
        self.total.zero_()
        self.steps = 0
        self.window_total.zero_()
        self.window_steps = 0

    @property
    def mean(self) -> torch.Tensor | None:
        """Per-replica mean acceptance (R,) since the last reset, or None before any step."""
        return None if self.steps == 0 else self.total / self.steps

    def update(self, acceptance: torch.Tensor, step_size: torch.Tensor) -> None:
        """Add one step's acceptance (R,); `step_size` (R,) is quoted in messages."""
        acceptance = acceptance.detach().to("cpu", torch.float64)
        self.total += acceptance
        self.steps += 1
        self.window_total += acceptance
        self.window_steps += 1
        if self.window_steps < ACCEPTANCE_WINDOW:
            return
        rates = self.window_total / self.window_steps
        self.window_total.zero_()
        self.window_steps = 0
        kind = ("acceptance" if self.metropolis
                else "Metropolis acceptance the Langevin moves would have")
        mean_rate = float(rates.mean())
        if self.metropolis and mean_rate < ACCEPTANCE_COLLAPSE:
            size = float(step_size.median())
            raise RuntimeError(
                f"{self.name}: {kind} collapsed to {mean_rate:.3f} (replica mean) over the last "
                f"{ACCEPTANCE_WINDOW} steps with median step size {size:.3g}; reduce step_size "
                f"(e.g. to {size / 10:.3g}) or let burn-in adapt it."
            )
        if mean_rate < ACCEPTANCE_WARNING and not self.warned:
            self.warned = True
            consequence = ("the chains mix slowly" if self.metropolis
                           else "the discretisation biases the stationary distribution")
            warnings.warn(
                f"{self.name}: {kind} = {mean_rate:.3f} (replica mean) over "
                f"{ACCEPTANCE_WINDOW} steps with median step size "
                f"{float(step_size.median()):.3g}; {consequence}. Reduce step_size.",
                RuntimeWarning,
                stacklevel=4,
            )
        if not self.metropolis or self.warned_stuck:
            return
        # Per replica, the mean since the last reset: one window of one replica is too noisy.
        rates = self.total / self.steps
        stuck = torch.nonzero(rates < STUCK_ACCEPTANCE).flatten().tolist()
        if stuck:
            self.warned_stuck = True
            listed = ", ".join(f"{index} ({float(rates[index]):.3f}, step "
                               f"{float(step_size[index]):.3g})" for index in stuck[:10])
            warnings.warn(
                f"{self.name}: acceptance below {STUCK_ACCEPTANCE} over the last {self.steps} "
                f"steps in replica(s) {listed}{' …' if len(stuck) > 10 else ''}: stuck; the "
                "summary excludes stuck replicas from its averages and lists them.",
                RuntimeWarning,
                stacklevel=4,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.clone(), "steps": self.steps,
                "window_total": self.window_total.clone(), "window_steps": self.window_steps,
                "warned": self.warned, "warned_stuck": self.warned_stuck}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total = state["total"].clone()
        self.steps = int(state["steps"])
        self.window_total = state["window_total"].clone()
        self.window_steps = int(state["window_steps"])
        self.warned = bool(state["warned"])
        self.warned_stuck = bool(state["warned_stuck"])


class PosteriorSampler:
    """A posterior density moved by a transition kernel, R replicas at once. Subclasses name the
    pair; the kernel's step size is per replica (a number is broadcast)."""

    name: ClassVar[str] = ""
    density_class: ClassVar[type[PosteriorDensity]] = FullPosterior
    kernel_class: ClassVar[type[TransitionKernel]] = MALAKernel

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        step_size: float | torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        self.density = self.density_class(model, x_train, y_train, temperature=temperature,
                                          lambda0=lambda0, lambda1=lambda1)
        self.kernel = self._make_kernel(step_size, generator)
        self.monitor = AcceptanceMonitor(model.n_replicas, name=self.name,
                                         metropolis=self.kernel.metropolis)

    def _make_kernel(self, step_size: float | torch.Tensor,
                     generator: torch.Generator) -> TransitionKernel:
        return self.kernel_class(self.density, step_size, generator)

    # --- views --------------------------------------------------------------------------------

    @property
    def model(self) -> ReplicatedNetwork:
        return self.density.model

    @property
    def inputs(self) -> PreparedInputs:
        return self.density.inputs

    @property
    def targets(self) -> torch.Tensor:
        return self.density.targets

    @property
    def temperature(self) -> float:
        return self.density.temperature

    @property
    def lambda0(self) -> float:
        return self.density.lambda0

    @property
    def lambda1(self) -> float:
        return self.density.lambda1

    @property
    def generator(self) -> torch.Generator:
        return self.kernel.generator

    @property
    def metropolis(self) -> bool:
        return self.kernel.metropolis

    @property
    def step_size(self) -> torch.Tensor:
        """The kernel's per-replica step size (R,)."""
        return self.kernel.step_size

    @property
    def n_steps_taken(self) -> int:
        return self.kernel.n_steps_taken

    @property
    def mean_acceptance(self) -> torch.Tensor | None:
        """Per-replica mean acceptance (R,) since the monitor's last reset, or None."""
        return self.monitor.mean

    # --- moves and observables ----------------------------------------------------------------

    def step(self, *, monitor: bool = True) -> StepStatistics:
        """One kernel step of every replica; its acceptance is monitored unless `monitor` is
        False (burn-in adaptation steps, whose acceptance says nothing about the final chain)."""
        stats = self.kernel.step()
        if monitor and stats.acceptance is not None:
            self.monitor.update(stats.acceptance, self.kernel.step_size)
        return stats

    def potential(self) -> torch.Tensor:
        """U per replica (R,) at the current parameters."""
        return self.density.potential()

    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density.predictive(inputs)

    def expected_squared_error(self, inputs: PreparedInputs,
                               targets: torch.Tensor) -> torch.Tensor:
        return self.density.expected_squared_error(inputs, targets)

    def readout_block_second_moments(self) -> torch.Tensor:
        return self.density.readout_block_second_moments()

    # --- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Parameters, kernel state (step sizes, cached gradients, generator) and monitor."""
        return {
            "name": self.name,
            "model": {key: value.detach().clone() for key, value in
                      self.model.state_dict().items()},
            "kernel": self.kernel.state_dict(),
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state is from a {state.get('name')!r} sampler, this is "
                             f"{self.name!r}.")
        self.model.load_state_dict(state["model"])
        self.kernel.load_state_dict(state["kernel"])
        self.monitor.load_state_dict(state["monitor"])


class LangevinSampler(PosteriorSampler):
    """Unadjusted Langevin on all parameters: θ ← θ − η∇[½Σ(f − y)²] − ηTλθ + √(2ηT)ξ."""

    name = "langevin"
    kernel_class = LangevinKernel


class MALASampler(PosteriorSampler):
    """Metropolis-adjusted Langevin on all parameters, accept/reject per replica."""

    name = "mala"
    kernel_class = MALAKernel


class HMCSampler(PosteriorSampler):
    """Metropolis-adjusted HMC on all parameters, mass = prior precisions (λ0 on W, λ1 on a)."""

    name = "hmc"
    kernel_class = HMCKernel

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        step_size: float | torch.Tensor,
        generator: torch.Generator,
        *,
        leapfrog_steps: int = DEFAULT_LEAPFROG_STEPS,
    ) -> None:
        self.leapfrog_steps = leapfrog_steps
        super().__init__(model, x_train, y_train, temperature, lambda0, lambda1, step_size,
                         generator)

    def _make_kernel(self, step_size: float | torch.Tensor,
                     generator: torch.Generator) -> TransitionKernel:
        return HMCKernel(self.density, step_size, generator, leapfrog_steps=self.leapfrog_steps)


class _CollapsedMixin:
    """Readout integrated out: `sample_readout` draws a exactly given W."""

    density: PosteriorDensity
    kernel: TransitionKernel

    @property
    def collapsed_density(self) -> CollapsedPosterior:
        if not isinstance(self.density, CollapsedPosterior):
            raise TypeError("not a collapsed density")
        return self.density

    def readout_posterior(self) -> GaussianReadout:
        """The closed-form readout posterior at the current W (differentiable in W)."""
        return self.collapsed_density.readout_posterior()

    def conditional_readout(self) -> GaussianReadout:
        return self.collapsed_density.conditional_readout()

    def sample_readout(self) -> torch.Tensor:
        """Draw a ~ p(a | W, data) for every replica (from the kernel's generator) and write it
        into `model.readout`, so the model holds an exact joint posterior sample; (R, F, D)."""
        return self.collapsed_density.sample_readout(self.kernel.generator)


class CollapsedSampler(_CollapsedMixin, PosteriorSampler):
    """Readout integrated out exactly; W moves under U(W) = (λ0/2)|W|² − ln N(y; 0, T + ΦΦᵀ/λ1)
    with MALA (`metropolis=True`, default) or unadjusted Langevin. Observables are conditional
    expectations given W (Rao–Blackwellised)."""

    name = "collapsed"
    density_class = CollapsedPosterior

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        step_size: float | torch.Tensor,
        generator: torch.Generator,
        metropolis: bool = True,
    ) -> None:
        self._metropolis = bool(metropolis)
        super().__init__(model, x_train, y_train, temperature, lambda0, lambda1, step_size,
                         generator)

    def _make_kernel(self, step_size: float | torch.Tensor,
                     generator: torch.Generator) -> TransitionKernel:
        kernel = MALAKernel if self._metropolis else LangevinKernel
        return kernel(self.density, step_size, generator)


class CollapsedHMCSampler(_CollapsedMixin, HMCSampler):
    """Readout integrated out exactly; HMC on W with mass λ0."""

    name = "collapsed-hmc"
    density_class = CollapsedPosterior


class SplitHMCSampler(HMCSampler):
    """Metropolis-adjusted prior-split HMC on all parameters (`transitions.SplitHMCKernel`)."""

    name = "split-hmc"
    kernel_class = SplitHMCKernel

    def _make_kernel(self, step_size: float | torch.Tensor,
                     generator: torch.Generator) -> TransitionKernel:
        return SplitHMCKernel(self.density, step_size, generator,
                              leapfrog_steps=self.leapfrog_steps)


class CollapsedSplitHMCSampler(_CollapsedMixin, SplitHMCSampler):
    """Readout integrated out exactly; prior-split HMC on W (mass λ0, the Gaussian part of
    U(W) = (λ0/2)|W|² − ln N(y; 0, T + ΦΦᵀ/λ1) rotated exactly, the log evidence as kicks).
    Observables are conditional expectations given W (Rao–Blackwellised)."""

    name = "collapsed-split-hmc"
    density_class = CollapsedPosterior


#: Samplers by name (the names of `SamplerSettings.sampler`).
SAMPLERS: dict[str, type[PosteriorSampler]] = {
    "langevin": LangevinSampler,
    "mala": MALASampler,
    "collapsed": CollapsedSampler,
    "hmc": HMCSampler,
    "collapsed-hmc": CollapsedHMCSampler,
    "split-hmc": SplitHMCSampler,
    "collapsed-split-hmc": CollapsedSplitHMCSampler,
}


def jacobian_trace(
    model: ReplicatedNetwork,
    inputs: PreparedInputs,
    parameters: list[torch.nn.Parameter],
    max_points: int = 32,
    *,
    weights: list[float] | None = None,
) -> float:
    """Σ_l w_l tr(J_l J_lᵀ) = Σ_μ Σ_d Σ_l w_l |∂f_d(x^μ)/∂θ_l|², replica-averaged, estimated from
    ≤ max_points evenly spaced training points and scaled to all P (w_l = 1 by default; an upper
    bound on λmax of the weighted JJᵀ)."""
    weights = [1.0] * len(parameters) if weights is None else weights
    n_samples = inputs.n_samples
    index = torch.linspace(0, n_samples - 1, min(max_points, n_samples)).round().long().unique()
    total = 0.0
    with torch.enable_grad():
        for mu in index.tolist():
            outputs = model(PreparedInputs(inputs.values[mu : mu + 1], inputs.kind))  # (R, 1, D)
            for d in range(outputs.shape[-1]):
                grads = torch.autograd.grad(outputs[:, 0, d].sum(), parameters, retain_graph=True)
                total += sum(weight * float(g.pow(2).sum())
                             for weight, g in zip(weights, grads, strict=True)) / model.n_replicas
    return total * n_samples / index.numel()


def default_step_size(
    sampler: str,
    model: ReplicatedNetwork,
    inputs: PreparedInputs,
    temperature: float,
    lambda0: float,
    lambda1: float,
) -> float:
    """The starting step size of `sampler` at the initial (prior) state, J the Jacobian of the
    training outputs in the parameters the sampler moves.

    Langevin kernels: η = c / (tr JJᵀ + T·max(λ0, λ1)), so that ε·h_max = η(λmax(JJᵀ) + Tλ) ≤ c
    bounds the step in the stiffest direction of U; c = 0.1 for the unadjusted sampler (its bias
    there is ≈ c/2), 0.5 as the start of MALA/collapsed burn-in adaptation.
    HMC: h = c / ω_max with ω_max² ≤ 1 + Σ_l tr(J_l J_lᵀ)/(λ_l T), the largest frequency of the
    leapfrog dynamics with mass λ_l per layer; c = 0.5 (stable below 2). Prior-split HMC:
    the same without the 1 (the prior's frequency is integrated exactly); its kernel caps h.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    temperature = check_positive("temperature", temperature)
    collapsed = issubclass(SAMPLERS[sampler], _CollapsedMixin)
    parameters = [model.first_layer] if collapsed else [model.first_layer, model.readout]
    precisions = [lambda0] if collapsed else [lambda0, lambda1]
    constant = STEP_SIZE_CONSTANTS[sampler]
    if issubclass(SAMPLERS[sampler].kernel_class, HMCKernel):
        weighted = jacobian_trace(model, inputs, parameters,
                                  weights=[1.0 / precision for precision in precisions])
        prior_frequency = 0.0 if issubclass(SAMPLERS[sampler].kernel_class,
                                            SplitHMCKernel) else 1.0
        return constant / math.sqrt(prior_frequency + weighted / temperature + 1e-12)
    stiffness = jacobian_trace(model, inputs, parameters) + temperature * max(lambda0, lambda1)
    return constant / stiffness
