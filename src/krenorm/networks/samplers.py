"""Posterior samplers for replicated networks (THEORY.md §1), in the nn.Module/optimizer spirit.

Target: p(θ | data) ∝ exp(−U(θ)) with U = (1/2T) Σ_μ |f_θ(x^μ) − y^μ|² + (λ0/2)|W|² + (λ1/2)|a|².
Every sampler moves R replicas at once and never couples them (per-replica potentials, gradients,
accept/reject); only the burn-in step-size adaptation reads the mean acceptance.

- `LangevinSampler` (unadjusted): θ ← θ − ηT∇U + √(2ηT)ξ, i.e.
  θ ← θ − η∇[½Σ(f − y)²] − ηTλθ + √(2ηT)ξ with per-layer λ. Its discretisation error is
  monitored by the Metropolis acceptance the move *would* have had (computed for free from the next
  gradient); a low value means the step is too large for an accurate stationary law.
- `MALASampler`: the same proposal with a per-replica Metropolis–Hastings correction (exact).
- `CollapsedSampler`: the readout is Gaussian given the first layer (`GaussianReadout`), so it is
  integrated out exactly and only W moves, under
  U(W) = (λ0/2)|W|² − ln N(y; 0, T·1 + ΦΦᵀ/λ1), with MALA (default) or unadjusted Langevin on W.
  Observables given W are closed form (Rao–Blackwellised).

The step size η is the same object for all three: the effective step on U is ε = ηT, so
η·(λmax(JJᵀ) + T·λ) < 2 is the stability limit (J = ∂f/∂θ over the training set).
`default_step_size` implements η = c / (tr JJᵀ + T·max(λ0, λ1)) (tr ≥ λmax).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from krenorm._validation import check_finite, check_positive
from krenorm.networks.modules import PreparedInputs, ReplicatedNetwork
from krenorm.networks.readout_posterior import GaussianReadout

#: Mean acceptance below which a post-adaptation window raises (the chain has stopped moving).
ACCEPTANCE_COLLAPSE = 0.05
#: Mean acceptance below which a warning is issued (MALA's optimum is ≈ 0.57).
ACCEPTANCE_WARNING = 0.2
#: Steps per acceptance-monitoring window.
ACCEPTANCE_WINDOW = 100
#: A layer whose mean square exceeds this multiple of its prior variance 1/λ has diverged.
OVERFLOW_FACTOR = 1.0e4
#: Target mean acceptance of the burn-in adaptation (Roberts & Rosenthal's MALA optimum ≈ 0.574).
TARGET_ACCEPTANCE = 0.6
#: Target for the unadjusted sampler: the acceptance its moves would have under a Metropolis
#: correction. High, because nothing corrects its O(η) discretisation bias afterwards: on the exact
#: linear-network posterior of the tests, 0.9 left a 3–6 % bias in E f and E|a|², 0.98 about 1 %.
TARGET_UNADJUSTED_ACCEPTANCE = 0.98
#: c of the default step-size rule, per sampler: small for the unadjusted sampler (its stationary
#: variance in the stiffest direction is biased by ≈ c/2), larger where Metropolis corrects it and
#: burn-in adapts it.
STEP_SIZE_CONSTANTS = {"langevin": 0.1, "mala": 0.5, "collapsed": 0.5}


@dataclass(frozen=True)
class StepStatistics:
    """What one step reports: the potential U (R,) at the state after the step, and the
    acceptance probability (R,) of the move (for the unadjusted sampler: the acceptance a
    Metropolis correction would have given the previous move; None on its first step)."""

    step: int
    potential: torch.Tensor
    acceptance: torch.Tensor | None

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "potential": self.potential.tolist(),
            "acceptance": None if self.acceptance is None else self.acceptance.tolist(),
        }


def _squared_norms(tensor: torch.Tensor) -> torch.Tensor:
    """|t_r|² per replica (leading axis) without a squared temporary of the full tensor."""
    return torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], -1), dim=1) ** 2


def _per_replica(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (R,) mask shaped to broadcast against a tensor with a leading replica axis."""
    return mask.reshape((-1,) + (1,) * (like.ndim - 1))


def as_targets(y: torch.Tensor, n_outputs: int, n_samples: int) -> torch.Tensor:
    """Targets (P,) or (P, D) as (P, D), checked against the network's outputs."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
    check_finite("targets", y)
    targets = y[:, None] if y.ndim == 1 else y
    if targets.ndim != 2 or targets.shape != (n_samples, n_outputs):
        raise ValueError(
            f"targets must be ({n_samples},) or ({n_samples}, {n_outputs}) to match the inputs "
            f"and the network's outputs, got {tuple(y.shape)}."
        )
    return targets


class DualAveraging:
    """Nesterov dual averaging of ln η towards a target acceptance (Hoffman & Gelman 2014, §3.2),
    used only during burn-in; `final_step_size` is the averaged iterate."""

    def __init__(
        self, initial_step_size: float, target: float = TARGET_ACCEPTANCE,
        gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75,
    ) -> None:
        self.initial_step_size = initial_step_size
        self.mu = math.log(10 * initial_step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.iteration = 0
        self.error_average = 0.0
        self.log_step_average = math.log(initial_step_size)

    def update(self, acceptance: float) -> float:
        """Feed one mean acceptance; returns the next step size."""
        self.iteration += 1
        t = self.iteration
        weight = 1.0 / (t + self.t0)
        self.error_average = (1 - weight) * self.error_average + weight * (self.target - acceptance)
        log_step = self.mu - math.sqrt(t) / self.gamma * self.error_average
        decay = t ** (-self.kappa)
        self.log_step_average = decay * log_step + (1 - decay) * self.log_step_average
        return math.exp(log_step)

    @property
    def final_step_size(self) -> float:
        return math.exp(self.log_step_average)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class CautiousAdaptation:
    """Step-size adaptation for the unadjusted sampler, which cannot reject an overlong step
    (dual averaging's exploratory jumps made it diverge). With r = (α − target)/(1 − target),
    ln η grows by 0.02·min(r, 1) when r > 0 and shrinks by 0.1·max(r, −5) when r < 0: at most 2 %
    up, up to 40 % down per step. `final_step_size` is the geometric mean of the second half of
    the iterates."""

    def __init__(self, initial_step_size: float, target: float) -> None:
        self.initial_step_size = initial_step_size
        self.target = target
        self.log_step = math.log(initial_step_size)
        self.iteration = 0
        self.history: list[float] = []

    def update(self, acceptance: float) -> float:
        """Feed one mean (would-be) acceptance; returns the next step size."""
        ratio = (acceptance - self.target) / (1 - self.target)
        self.log_step += 0.02 * min(ratio, 1.0) if ratio > 0 else 0.1 * max(ratio, -5.0)
        self.iteration += 1
        self.history.append(self.log_step)
        return math.exp(self.log_step)

    @property
    def final_step_size(self) -> float:
        tail = self.history[len(self.history) // 2 :]
        return math.exp(sum(tail) / len(tail)) if tail else self.initial_step_size

    def state_dict(self) -> dict:
        return {**vars(self), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update({**state, "history": list(state["history"])})


class PosteriorSampler:
    """Shared machinery: per-replica potential and gradient, Langevin proposal, optional
    Metropolis correction, divergence checks, acceptance monitoring, burn-in adaptation and
    checkpointable state. Subclasses define which parameters move and the potential U."""

    name = ""
    metropolis = False

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        step_size: float,
        generator: torch.Generator,
    ) -> None:
        if not isinstance(model, ReplicatedNetwork):
            raise ValueError(f"model must be a ReplicatedNetwork, got {type(model).__name__}.")
        if not isinstance(generator, torch.Generator):
            raise ValueError("pass an explicit torch.Generator (see make_generator).")
        self.model = model
        self.inputs = x_train if isinstance(x_train, PreparedInputs) else model.prepare(x_train)
        self.targets = as_targets(y_train, model.n_outputs, self.inputs.n_samples).to(
            model.first_layer
        )
        self.temperature = check_positive("temperature", temperature)
        self.lambda0 = check_positive("lambda0", lambda0)
        self.lambda1 = check_positive("lambda1", lambda1)
        self.step_size = check_positive("step_size", step_size)
        self.generator = generator
        self.n_steps_taken = 0
        self.adaptation: DualAveraging | CautiousAdaptation | None = None
        self._cache: dict[str, object] = {}
        self._window_acceptance = 0.0
        self._window_steps = 0
        self._warned = False
        replicas = model.n_replicas
        self.acceptance_sum = torch.zeros(replicas, dtype=torch.float64)
        self.acceptance_steps = 0

    # --- what subclasses define ---------------------------------------------------------------

    def moved_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def prior_precisions(self) -> list[float]:
        raise NotImplementedError

    def potential(self) -> torch.Tensor:
        """U per replica (R,) at the model's current parameters, differentiable."""
        raise NotImplementedError

    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (R, Pt, D) and variance (R, Pt) of the outputs at the current state: the outputs
        themselves (variance 0) for samplers of all parameters, closed form given W when
        the readout is integrated out."""
        raise NotImplementedError

    def readout_block_second_moments(self) -> torch.Tensor:
        """(1/D) Σ_{k,d} a_{k,i,d} a_{k,j,d} per replica (R, pos, pos), or its conditional
        expectation given W when the readout is integrated out."""
        raise NotImplementedError

    # --- observables shared by all samplers ---------------------------------------------------

    @torch.no_grad()
    def expected_squared_error(
        self, inputs: PreparedInputs, targets: torch.Tensor
    ) -> torch.Tensor:
        """E[(y − f)²] over the current state's predictive (R,): averaged over points, summed
        over outputs (the instantaneous MSE of THEORY.md §4, Rao–Blackwellised where possible)."""
        mean, variance = self.predictive(inputs)
        targets = as_targets(targets, self.model.n_outputs, inputs.n_samples).to(mean)
        return (((targets - mean) ** 2).sum(-1) + mean.shape[-1] * variance).mean(-1)

    # --- dynamics -----------------------------------------------------------------------------

    @property
    def effective_step(self) -> float:
        """ε = ηT, the step on the potential U."""
        return self.step_size * self.temperature

    def _potential_and_gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        parameters = self.moved_parameters()
        with torch.enable_grad():
            value = self.potential()
            # Summing over replicas keeps gradients per replica: replicas share no parameters.
            finite_sum = torch.where(torch.isfinite(value), value, torch.zeros_like(value)).sum()
            gradients = torch.autograd.grad(finite_sum, parameters)
        return value.detach(), [g.detach() for g in gradients]

    def _noise_like(self, tensor: torch.Tensor) -> torch.Tensor:
        draw = torch.randn(
            tensor.shape, generator=self.generator, dtype=tensor.dtype,
            device=self.generator.device,
        )
        return draw.to(tensor.device)

    def _uniform(self, n: int, like: torch.Tensor) -> torch.Tensor:
        draw = torch.rand(
            n, generator=self.generator, dtype=like.dtype, device=self.generator.device
        )
        return draw.to(like.device)

    def _log_acceptance(
        self,
        old_potential: torch.Tensor,
        new_potential: torch.Tensor,
        old_gradients: list[torch.Tensor],
        new_gradients: list[torch.Tensor],
        noises: list[torch.Tensor],
        eps: float,
    ) -> torch.Tensor:
        """ln α = −U' + U + ln q(θ|θ') − ln q(θ'|θ), with θ' = θ − ε∇U + √(2ε)ξ, so that
        ln q(θ'|θ) = −|ξ|²/2 and ln q(θ|θ') = −|θ − θ' + ε∇U(θ')|²/(4ε) (per replica)."""
        forward = torch.zeros_like(old_potential)
        backward = torch.zeros_like(old_potential)
        for old_gradient, new_gradient, noise in zip(
            old_gradients, new_gradients, noises, strict=True
        ):
            forward = forward - 0.5 * _squared_norms(noise)
            reverse = torch.add(old_gradient, new_gradient).mul_(eps)
            reverse.sub_(noise, alpha=math.sqrt(2 * eps))
            backward = backward - _squared_norms(reverse) / (4 * eps)
        log_ratio = old_potential - new_potential + backward - forward
        rejected = torch.full_like(log_ratio, -math.inf)
        return torch.where(torch.isfinite(log_ratio), log_ratio, rejected)

    def _check_state(self, potential: torch.Tensor) -> None:
        """Raise FloatingPointError on NaN/inf or runaway parameters, naming the step size."""
        advice = (
            f"at step {self.n_steps_taken} with step_size η = {self.step_size:.3g} "
            f"(ε = ηT = {self.effective_step:.3g}); reduce step_size, e.g. to "
            f"{self.step_size / 10:.3g}."
        )
        if not bool(torch.isfinite(potential).all()):
            bad = int((~torch.isfinite(potential)).sum())
            raise FloatingPointError(
                f"{self.name} sampler diverged: non-finite potential (NaN/overflow) in {bad} "
                f"replica(s) {advice}"
            )
        for parameter, precision in zip(
            self.moved_parameters(), self.prior_precisions(), strict=True
        ):
            mean_square = float(_squared_norms(parameter.detach().reshape(1, -1))[0])
            mean_square /= parameter.numel()
            if mean_square > OVERFLOW_FACTOR / precision:
                raise FloatingPointError(
                    f"{self.name} sampler diverged: a weight layer's mean square {mean_square:.3g} "
                    f"is over {OVERFLOW_FACTOR:.0e} times its prior variance {1 / precision:.3g} "
                    f"{advice}"
                )

    @property
    def target_acceptance(self) -> float:
        """Acceptance the burn-in adaptation aims at: TARGET_ACCEPTANCE with a Metropolis
        correction, TARGET_UNADJUSTED_ACCEPTANCE without."""
        return TARGET_ACCEPTANCE if self.metropolis else TARGET_UNADJUSTED_ACCEPTANCE

    def _new_adaptation(self) -> DualAveraging | CautiousAdaptation:
        if self.metropolis:
            return DualAveraging(self.step_size, self.target_acceptance)
        return CautiousAdaptation(self.step_size, self.target_acceptance)

    def start_adaptation(self) -> None:
        """Adapt η towards `target_acceptance` on subsequent `step(adapt=True)`: dual averaging
        with a Metropolis correction, `CautiousAdaptation` without."""
        if self.adaptation is None:
            self.adaptation = self._new_adaptation()

    def finish_adaptation(self) -> None:
        """Fix η at the averaged iterate; steps after this are a time-homogeneous chain."""
        if self.adaptation is not None and self.adaptation.iteration > 0:
            self.step_size = self.adaptation.final_step_size
        self.adaptation = None
        self._window_acceptance, self._window_steps = 0.0, 0

    def step(self, adapt: bool = False) -> StepStatistics:
        """One Langevin move of every replica (Metropolis-corrected when `metropolis`).

        adapt=True marks an adaptation (burn-in) step: η is tuned by dual averaging towards
        `target_acceptance` (for the unadjusted sampler, the acceptance its moves would have had),
        and the acceptance is neither accumulated nor monitored.
        """
        stats = self._metropolis_step() if self.metropolis else self._unadjusted_step()
        self.n_steps_taken += 1
        if stats.acceptance is not None:
            mean_acceptance = float(stats.acceptance.mean())
            if adapt:
                self._adapt(mean_acceptance)
            else:
                self.acceptance_sum += stats.acceptance.double().cpu()
                self.acceptance_steps += 1
                self._monitor_acceptance(mean_acceptance)
        return stats

    def _adapt(self, mean_acceptance: float) -> None:
        self.start_adaptation()
        initial = self.adaptation.initial_step_size
        self.step_size = self.adaptation.update(mean_acceptance)
        if self.step_size < 1e-8 * initial:
            raise RuntimeError(
                f"{self.name}: step-size adaptation collapsed to η = {self.step_size:.3g} (from "
                f"{initial:.3g}) with acceptance near 0; the chain is stuck or diverged (check "
                "T > 0, the data scale, or give a smaller initial step_size)."
            )

    def _monitor_acceptance(self, mean_acceptance: float) -> None:
        self._window_acceptance += mean_acceptance
        self._window_steps += 1
        if self._window_steps < ACCEPTANCE_WINDOW:
            return
        rate = self._window_acceptance / self._window_steps
        self._window_acceptance, self._window_steps = 0.0, 0
        kind = (
            "acceptance" if self.metropolis
            else "Metropolis acceptance the Langevin moves would have"
        )
        if self.metropolis and rate < ACCEPTANCE_COLLAPSE:
            raise RuntimeError(
                f"{self.name}: {kind} collapsed to {rate:.3f} over the last {ACCEPTANCE_WINDOW} "
                f"steps with step_size η = {self.step_size:.3g}; reduce step_size (e.g. to "
                f"{self.step_size / 10:.3g}) or let burn-in adapt it."
            )
        if rate < ACCEPTANCE_WARNING and not self._warned:
            self._warned = True
            consequence = (
                "the chain mixes slowly" if self.metropolis
                else "the discretisation biases the stationary distribution"
            )
            warnings.warn(
                f"{self.name}: {kind} = {rate:.3f} over {ACCEPTANCE_WINDOW} steps with step_size "
                f"η = {self.step_size:.3g}; {consequence}. Reduce step_size.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _parameter_versions(self) -> tuple[int, ...]:
        return tuple(parameter._version for parameter in self.moved_parameters())

    def _cached_potential_and_gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Recomputed when the parameters were changed outside `step` (in-place version counter).
        if "potential" not in self._cache or self._cache["versions"] != self._parameter_versions():
            self._cache["potential"], self._cache["gradients"] = self._potential_and_gradient()
            self._cache["versions"] = self._parameter_versions()
        return self._cache["potential"], self._cache["gradients"]

    def _unadjusted_step(self) -> StepStatistics:
        potential, gradients = self._potential_and_gradient()
        self._check_state(potential)
        acceptance = None
        previous = self._cache.get("previous_move")
        if previous is not None:
            log_ratio = self._log_acceptance(
                previous["potential"], potential, previous["gradients"], gradients,
                previous["noises"], previous["eps"],
            )
            acceptance = log_ratio.clamp(max=0.0).exp()
        eps = self.effective_step
        noises = []
        with torch.no_grad():
            for parameter, gradient in zip(self.moved_parameters(), gradients, strict=True):
                noise = self._noise_like(parameter)
                parameter.add_(gradient, alpha=-eps).add_(noise, alpha=math.sqrt(2 * eps))
                noises.append(noise)
        self._cache["previous_move"] = {
            "potential": potential, "gradients": gradients, "noises": noises, "eps": eps,
        }
        return StepStatistics(self.n_steps_taken, potential, acceptance)

    def _metropolis_step(self) -> StepStatistics:
        potential, gradients = self._cached_potential_and_gradient()
        self._check_state(potential)
        eps = self.effective_step
        parameters = self.moved_parameters()
        old_values = [p.detach().clone() for p in parameters]
        noises = []
        with torch.no_grad():
            for parameter, gradient in zip(parameters, gradients, strict=True):
                noise = self._noise_like(parameter)
                parameter.add_(gradient, alpha=-eps).add_(noise, alpha=math.sqrt(2 * eps))
                noises.append(noise)
        new_potential, new_gradients = self._potential_and_gradient()
        log_ratio = self._log_acceptance(
            potential, new_potential, gradients, new_gradients, noises, eps
        )
        accept = torch.log(self._uniform(log_ratio.shape[0], log_ratio)) < log_ratio
        with torch.no_grad():
            for parameter, old in zip(parameters, old_values, strict=True):
                parameter.copy_(torch.where(_per_replica(accept, old), parameter, old))
        self._cache["potential"] = torch.where(accept, new_potential, potential)
        self._cache["gradients"] = [
            torch.where(_per_replica(accept, new), new, old)
            for new, old in zip(new_gradients, gradients, strict=True)
        ]
        self._cache["versions"] = self._parameter_versions()
        return StepStatistics(
            self.n_steps_taken, self._cache["potential"], log_ratio.clamp(max=0.0).exp()
        )

    # --- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed for a bit-identical continuation: parameters, η, counters,
        adaptation, acceptance monitor, cached potential/gradients and the generator state."""
        return {
            "name": self.name,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "step_size": self.step_size,
            "n_steps_taken": self.n_steps_taken,
            "adaptation": None if self.adaptation is None else self.adaptation.state_dict(),
            "acceptance_sum": self.acceptance_sum.clone(),
            "acceptance_steps": self.acceptance_steps,
            "window": (self._window_acceptance, self._window_steps, self._warned),
            "cache": dict(self._cache),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"state is from a {state.get('name')!r} sampler, this is {self.name!r}."
            )
        self.model.load_state_dict(state["model"])
        self.step_size = float(state["step_size"])
        self.n_steps_taken = int(state["n_steps_taken"])
        self.adaptation = None
        if state["adaptation"] is not None:
            self.adaptation = self._new_adaptation()
            self.adaptation.load_state_dict(state["adaptation"])
        self.acceptance_sum = state["acceptance_sum"].clone()
        self.acceptance_steps = int(state["acceptance_steps"])
        self._window_acceptance, self._window_steps, self._warned = state["window"]
        self._cache = dict(state["cache"])
        if "potential" in self._cache:  # the saved cache belongs to the loaded parameters
            self._cache["versions"] = self._parameter_versions()
        self.generator.set_state(state["generator"])

    @property
    def mean_acceptance(self) -> torch.Tensor | None:
        """Per-replica mean acceptance (R,) since adaptation ended, or None before any step."""
        if self.acceptance_steps == 0:
            return None
        return self.acceptance_sum / self.acceptance_steps


class LangevinSampler(PosteriorSampler):
    """Unadjusted Langevin on all parameters: θ ← θ − η∇[½Σ(f − y)²] − ηTλθ + √(2ηT)ξ."""

    name = "langevin"

    def moved_parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.first_layer, self.model.readout]

    def prior_precisions(self) -> list[float]:
        return [self.lambda0, self.lambda1]

    def potential(self) -> torch.Tensor:
        residual = self.model(self.inputs) - self.targets
        data_term = (residual**2).sum((1, 2)) / (2 * self.temperature)
        prior_term = 0.5 * (
            self.lambda0 * self.model.first_layer.pow(2).flatten(1).sum(1)
            + self.lambda1 * self.model.readout.pow(2).flatten(1).sum(1)
        )
        return data_term + prior_term

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(inputs)
        return outputs, torch.zeros(outputs.shape[:2], dtype=outputs.dtype, device=outputs.device)

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        model = self.model
        readout = model.readout.reshape(
            model.n_replicas, model.width, model.readout_positions, model.n_outputs
        )
        return torch.einsum("rkid,rkjd->rij", readout, readout) / model.n_outputs


class MALASampler(LangevinSampler):
    """Metropolis-adjusted Langevin on all parameters, accept/reject per replica."""

    name = "mala"
    metropolis = True


class CollapsedSampler(PosteriorSampler):
    """Readout integrated out exactly; W moves under U(W) = (λ0/2)|W|² − ln N(y; 0, T + ΦΦᵀ/λ1)
    with MALA (`metropolis=True`, default) or unadjusted Langevin. Observables are conditional
    expectations given W (Rao–Blackwellised); `sample_readout` draws a exactly given W."""

    name = "collapsed"

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        step_size: float,
        generator: torch.Generator,
        metropolis: bool = True,
    ) -> None:
        super().__init__(
            model, x_train, y_train, temperature, lambda0, lambda1, step_size, generator
        )
        self.metropolis = bool(metropolis)
        self._conditional: tuple[tuple[int, int], GaussianReadout] | None = None

    def moved_parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.first_layer]

    def prior_precisions(self) -> list[float]:
        return [self.lambda0]

    def readout_posterior(self) -> GaussianReadout:
        """The closed-form readout posterior at the current W (differentiable in W)."""
        features = self.model.hidden_features(self.inputs)
        return GaussianReadout(features, self.targets, self.temperature, self.lambda1)

    def potential(self) -> torch.Tensor:
        prior_term = 0.5 * self.lambda0 * self.model.first_layer.pow(2).flatten(1).sum(1)
        return prior_term - self.readout_posterior().log_evidence()

    @torch.no_grad()
    def conditional_readout(self) -> GaussianReadout:
        """`readout_posterior()` without gradients, factorised once per state of W (several
        observables are read from the same state)."""
        key = (self.n_steps_taken, self.model.first_layer._version)
        if self._conditional is None or self._conditional[0] != key:
            self._conditional = (key, self.readout_posterior())
        return self._conditional[1]

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conditional_readout().predictive(self.model.hidden_features(inputs))

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        return self.conditional_readout().readout_block_second_moments(
            self.model.width, self.model.readout_positions
        )

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._conditional = None

    @torch.no_grad()
    def sample_readout(self) -> torch.Tensor:
        """Draw a ~ p(a | W, data) for every replica and write it into `model.readout`, so the
        model holds an exact joint posterior sample; returns it as (R, F, D)."""
        draw = self.conditional_readout().sample_readout(self.generator)
        self.model.readout.copy_(draw.reshape(self.model.readout.shape))
        return draw


SAMPLERS: dict[str, type[PosteriorSampler]] = {
    "langevin": LangevinSampler,
    "mala": MALASampler,
    "collapsed": CollapsedSampler,
}


def jacobian_trace(
    model: ReplicatedNetwork,
    inputs: PreparedInputs,
    parameters: list[torch.nn.Parameter],
    max_points: int = 32,
) -> float:
    """tr(JJᵀ) = Σ_μ Σ_d |∂f_d(x^μ)/∂θ|², replica-averaged, estimated from ≤ max_points evenly
    spaced training points and scaled to all P (an upper bound on λmax(JJᵀ))."""
    n_samples = inputs.n_samples
    index = torch.linspace(0, n_samples - 1, min(max_points, n_samples)).round().long().unique()
    total = 0.0
    with torch.enable_grad():
        for mu in index.tolist():
            outputs = model(PreparedInputs(inputs.values[mu : mu + 1], inputs.kind))  # (R, 1, D)
            for d in range(outputs.shape[-1]):
                grads = torch.autograd.grad(outputs[:, 0, d].sum(), parameters, retain_graph=True)
                total += sum(float(g.pow(2).sum()) for g in grads) / model.n_replicas
    return total * n_samples / index.numel()


def default_step_size(
    sampler: str,
    model: ReplicatedNetwork,
    inputs: PreparedInputs,
    temperature: float,
    lambda0: float,
    lambda1: float,
) -> float:
    """η = c / (tr JJᵀ + T·max(λ0, λ1)), with J the Jacobian of the training outputs in the
    parameters the sampler moves, at the initial (prior) state.

    ε·h_max = η(λmax(JJᵀ) + Tλ) ≤ c bounds the step in the stiffest direction of U;
    c = 0.1 for the unadjusted sampler (its bias there is ≈ c/2), 0.5 as the starting point of
    MALA/collapsed burn-in adaptation (STEP_SIZE_CONSTANTS).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    parameters = [model.first_layer] if sampler == "collapsed" else [
        model.first_layer, model.readout,
    ]
    stiffness = jacobian_trace(model, inputs, parameters)
    stiffness += check_positive("temperature", temperature) * max(lambda0, lambda1)
    return STEP_SIZE_CONSTANTS[sampler] / stiffness
