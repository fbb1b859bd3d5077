"""Transition kernels: how the sampled parameters of R replicas move under a `PosteriorDensity`
(docs/math/theory.md §1), in the spirit of a torch optimizer (they update parameters in place).

- `LangevinKernel` (unadjusted): θ ← θ − ε∇U + √(2ε)ξ with ε = ηT per replica, i.e.
  θ ← θ − η∇[½Σ(f − y)²] − ηTλθ + √(2ηT)ξ on the full posterior. It never rejects; from the
  next gradient it computes, for free, the Metropolis acceptance its move *would* have had (a
  measure of its discretisation error).
- `MALAKernel`: the same proposal with a Metropolis–Hastings test per replica (exact for any η).
- `HMCKernel`: Metropolis-adjusted Hamiltonian Monte Carlo with L leapfrog steps of length h
  per replica and a diagonal mass matrix equal to the prior precisions (M = λ0 on W, λ1 on a):
  the prior part of U then oscillates with period 2π in every direction, so h is set by the
  data alone. h is jittered by ±`jitter` per trajectory against periodic orbits.
- `SplitHMCKernel`: the same Hamiltonian, integrated by splitting it into the Gaussian part
  (prior + kinetic energy, a rotation solved exactly) and the likelihood part (kicks), so the
  energy error, and with it the acceptance, depends on the data curvature only and not on the
  number of parameters (docs/networks.md "Prior-split HMC").

Every kernel keeps one step size per replica (`step_size`, shape (R,)): replicas are independent
chains, so each may be tuned to its own acceptance (`adaptation`). Nothing couples replicas:
potentials, gradients and accept/reject are per replica. State is typed (`KernelState`) and
round-trips through `state_dict`/`load_state_dict` bit-identically, generator state included.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from krenorm.networks.posterior_density import PosteriorDensity

#: A layer whose mean square exceeds this multiple of its prior variance 1/λ has diverged.
OVERFLOW_FACTOR = 1.0e4
#: Target acceptance of burn-in adaptation for MALA (Roberts & Rosenthal's optimum ≈ 0.574).
MALA_TARGET_ACCEPTANCE = 0.6
#: Target for HMC (Beskos et al.'s optimum ≈ 0.651).
HMC_TARGET_ACCEPTANCE = 0.65
#: Target for the unadjusted kernel: the acceptance its moves would have under a Metropolis
#: correction. High, because nothing corrects its O(η) discretisation bias afterwards: on the exact
#: linear-network posterior of the tests, 0.9 left a 3–6 % bias in E f and E|a|², 0.98 about 1 %.
UNADJUSTED_TARGET_ACCEPTANCE = 0.98
#: Default number of leapfrog steps per HMC trajectory.
DEFAULT_LEAPFROG_STEPS = 10
#: Default relative jitter of the HMC step per trajectory (h·U(1 − j, 1 + j)).
DEFAULT_HMC_JITTER = 0.1


@dataclass(frozen=True)
class StepStatistics:
    """What one step reports: the potential U (R,) at the state after the step (for the
    unadjusted kernel: at the state the step started from), and the acceptance probability (R,)
    of the move (for the unadjusted kernel: the acceptance a Metropolis correction would have
    given the previous move; None on its first step)."""

    step: int
    potential: torch.Tensor
    acceptance: torch.Tensor | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "potential": self.potential.tolist(),
            "acceptance": None if self.acceptance is None else self.acceptance.tolist(),
        }


@dataclass
class GradientCache:
    """U (R,) and ∇U at the current state; valid while the parameters' in-place version counters
    equal `versions` (a change made outside the kernel invalidates it)."""

    potential: torch.Tensor
    gradients: list[torch.Tensor]
    versions: tuple[int, ...]


@dataclass
class PreviousMove:
    """The unadjusted kernel's last move, kept to compute its would-be acceptance at the next
    step: U and ∇U where it started, its noise ξ and its per-replica step ε = ηT."""

    potential: torch.Tensor
    gradients: list[torch.Tensor]
    noises: list[torch.Tensor]
    effective_step: torch.Tensor


@dataclass
class KernelState:
    """Everything a kernel carries between steps besides the parameters and the generator."""

    step_size: torch.Tensor
    n_steps: int = 0
    cache: GradientCache | None = None
    previous_move: PreviousMove | None = None

    def state_dict(self, *, cache_valid: bool) -> dict[str, Any]:
        """Plain containers of tensors and numbers (loadable with torch.load(weights_only=True)).
        The version counters are not saved (they belong to this process's tensors), so the
        cache is saved only when `cache_valid`, i.e. when it belongs to the current parameters."""
        cache = None if self.cache is None or not cache_valid else {
            "potential": self.cache.potential.clone(),
            "gradients": [gradient.clone() for gradient in self.cache.gradients],
        }
        previous = None if self.previous_move is None else {
            "potential": self.previous_move.potential.clone(),
            "gradients": [gradient.clone() for gradient in self.previous_move.gradients],
            "noises": [noise.clone() for noise in self.previous_move.noises],
            "effective_step": self.previous_move.effective_step.clone(),
        }
        return {"step_size": self.step_size.clone(), "n_steps": self.n_steps, "cache": cache,
                "previous_move": previous}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], versions: tuple[int, ...],
                        device: torch.device) -> KernelState:
        """Inverse of `state_dict`; a saved cache is attached to the current `versions` (the
        caller has just loaded the parameters it belongs to) and moved to their `device`; step
        sizes stay on the CPU."""
        cache = state["cache"]
        previous = state["previous_move"]

        def moved(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [tensor.to(device, copy=True) for tensor in tensors]

        return cls(
            step_size=state["step_size"].to("cpu", torch.float64, copy=True),
            n_steps=int(state["n_steps"]),
            cache=None if cache is None else GradientCache(
                cache["potential"].to(device, copy=True), moved(cache["gradients"]), versions
            ),
            previous_move=None if previous is None else PreviousMove(
                previous["potential"].to(device, copy=True), moved(previous["gradients"]),
                moved(previous["noises"]), previous["effective_step"].to("cpu", copy=True),
            ),
        )


def squared_norms(tensor: torch.Tensor) -> torch.Tensor:
    """|t_r|² per replica (leading axis) without a squared temporary of the full tensor."""
    return torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], -1), dim=1) ** 2


def per_replica(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (R,) tensor shaped (and cast) to broadcast against a tensor with a leading replica axis;
    masks keep their dtype."""
    shaped = values.reshape((-1,) + (1,) * (like.ndim - 1))
    if values.dtype == torch.bool:
        return shaped.to(like.device)
    return shaped.to(device=like.device, dtype=like.dtype)


def check_step_sizes(step_size: float | torch.Tensor, n_replicas: int) -> torch.Tensor:
    """A positive finite step size, scalar or one per replica, as a float64 CPU tensor (R,)."""
    values = torch.as_tensor(step_size, dtype=torch.float64).detach().cpu()
    if values.ndim == 0:
        values = values.expand(n_replicas).clone()
    if values.shape != (n_replicas,):
        raise ValueError(f"step_size must be a number or one per replica ({n_replicas},), got "
                         f"shape {tuple(values.shape)}.")
    if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise ValueError(f"step_size must be positive and finite, got {values.tolist()}.")
    return values


def _format_replicas(indices: list[int]) -> str:
    shown = ", ".join(str(index) for index in indices[:10])
    return shown + (f", … ({len(indices)} in all)" if len(indices) > 10 else "")


class TransitionKernel(ABC):
    """Moves the sampled parameters of `density` in place, one step for all R replicas.

    `step_size` (R,) float64 is per replica; its meaning is the kernel's (η with ε = ηT for the
    Langevin kernels, the leapfrog step h for HMC). `target_acceptance` is what burn-in
    adaptation aims at.
    """

    name: ClassVar[str] = ""
    metropolis: ClassVar[bool] = True
    target_acceptance: ClassVar[float] = MALA_TARGET_ACCEPTANCE

    def __init__(
        self,
        density: PosteriorDensity,
        step_size: float | torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        if not isinstance(density, PosteriorDensity):
            raise ValueError(f"density must be a PosteriorDensity, got {type(density).__name__}.")
        if not isinstance(generator, torch.Generator):
            raise ValueError("pass an explicit torch.Generator (see make_generator).")
        self.density = density
        self.generator = generator
        self.state = KernelState(step_size=check_step_sizes(step_size, density.n_replicas))

    # --- step size ----------------------------------------------------------------------------

    @property
    def step_size(self) -> torch.Tensor:
        """Per-replica step size (R,), float64 on the CPU."""
        return self.state.step_size

    @step_size.setter
    def step_size(self, value: float | torch.Tensor) -> None:
        self.state.step_size = check_step_sizes(value, self.density.n_replicas)

    @property
    def n_steps_taken(self) -> int:
        return self.state.n_steps

    def step_units(self) -> str:
        """How `step_size` enters the move, for messages."""
        return "η (ε = ηT)"

    @property
    def max_step_size(self) -> float | None:
        """Upper bound of default and adapted step sizes, or None (none)."""
        return None

    # --- shared helpers -----------------------------------------------------------------------

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.density.parameters()

    def _versions(self) -> tuple[int, ...]:
        return tuple(parameter._version for parameter in self.parameters())

    def potential_and_gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """U and ∇U at the current state, from the cache when the parameters have not been
        changed since it was filled (recomputed otherwise)."""
        cache = self.state.cache
        if cache is None or cache.versions != self._versions():
            potential, gradients = self.density.potential_and_gradient()
            cache = GradientCache(potential, gradients, self._versions())
            self.state.cache = cache
        return cache.potential, cache.gradients

    def current_potential(self) -> torch.Tensor:
        """U (R,) at the current state, through the cache (which the next step then reads)."""
        return self.potential_and_gradient()[0]

    def _noise_like(self, tensor: torch.Tensor) -> torch.Tensor:
        # Drawn on the generator's device so any (generator, parameter device) pair works.
        draw = torch.randn(tensor.shape, generator=self.generator, dtype=tensor.dtype,
                           device=self.generator.device)
        return draw.to(tensor.device)

    def _uniform(self, like: torch.Tensor) -> torch.Tensor:
        draw = torch.rand(like.shape[0], generator=self.generator, dtype=like.dtype,
                          device=self.generator.device)
        return draw.to(like.device)

    def _check_state(self, potential: torch.Tensor) -> None:
        """Raise FloatingPointError on NaN/inf or runaway parameters, naming the step size."""
        finite = torch.isfinite(potential)
        bad = [] if bool(finite.all()) else torch.nonzero(~finite.cpu()).flatten().tolist()
        sizes = self.step_size[bad] if bad else self.step_size
        worst = float(sizes.max())
        advice = (f"at step {self.n_steps_taken} with step size {self.step_units()} up to "
                  f"{worst:.3g}; reduce step_size, e.g. to {worst / 10:.3g}.")
        if bad:
            raise FloatingPointError(
                f"{self.name} kernel diverged: non-finite potential (NaN/overflow) in replica(s) "
                f"{_format_replicas(bad)} {advice}"
            )
        for parameter, precision in zip(self.parameters(), self.density.prior_precisions(),
                                        strict=True):
            mean_square = float(squared_norms(parameter.detach().reshape(1, -1))[0])
            mean_square /= parameter.numel()
            if mean_square > OVERFLOW_FACTOR / precision:
                raise FloatingPointError(
                    f"{self.name} kernel diverged: a weight layer's mean square "
                    f"{mean_square:.3g} is over {OVERFLOW_FACTOR:.0e} times its prior variance "
                    f"{1 / precision:.3g} {advice}"
                )

    def _accept(
        self,
        accept: torch.Tensor,
        old_values: list[torch.Tensor],
        old_potential: torch.Tensor,
        old_gradients: list[torch.Tensor],
        new_potential: torch.Tensor,
        new_gradients: list[torch.Tensor],
    ) -> torch.Tensor:
        """Keep the proposal where `accept` (R,), restore the old state elsewhere; cache U, ∇U
        of the resulting state and return its potential."""
        with torch.no_grad():
            for parameter, old in zip(self.parameters(), old_values, strict=True):
                parameter.copy_(torch.where(per_replica(accept, old), parameter, old))
        potential = torch.where(accept, new_potential, old_potential)
        gradients = [
            torch.where(per_replica(accept, new), new, old)
            for new, old in zip(new_gradients, old_gradients, strict=True)
        ]
        self.state.cache = GradientCache(potential, gradients, self._versions())
        return potential

    # --- the move -----------------------------------------------------------------------------

    @abstractmethod
    def step(self) -> StepStatistics:
        """Move every replica once."""

    # --- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Kernel state and generator state, for a bit-identical continuation (the parameters
        are the model's and are saved with it)."""
        cache = self.state.cache
        valid = cache is not None and cache.versions == self._versions()
        return {"name": self.name, "state": self.state.state_dict(cache_valid=valid),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; load the model's parameters first (the saved gradient cache
        belongs to them)."""
        if state.get("name") != self.name:
            raise ValueError(f"state is from a {state.get('name')!r} kernel, this is "
                             f"{self.name!r}.")
        device = self.parameters()[0].device
        self.state = KernelState.from_state_dict(state["state"], self._versions(), device)
        check_step_sizes(self.state.step_size, self.density.n_replicas)
        self.generator.set_state(state["generator"])


def _langevin_log_acceptance(
    old_potential: torch.Tensor,
    new_potential: torch.Tensor,
    old_gradients: list[torch.Tensor],
    new_gradients: list[torch.Tensor],
    noises: list[torch.Tensor],
    effective_step: torch.Tensor,
) -> torch.Tensor:
    """ln α = −U' + U + ln q(θ|θ') − ln q(θ'|θ) per replica, for θ' = θ − ε∇U + √(2ε)ξ:
    ln q(θ'|θ) = −|ξ|²/2 and ln q(θ|θ') = −|θ − θ' + ε∇U(θ')|²/(4ε) = −|ε(∇U + ∇U') −
    √(2ε)ξ|²/(4ε). Non-finite ratios (a failed proposal) become −∞ (rejected)."""
    eps = effective_step.to(device=old_potential.device, dtype=old_potential.dtype)
    forward = torch.zeros_like(old_potential)
    backward = torch.zeros_like(old_potential)
    for old_gradient, new_gradient, noise in zip(old_gradients, new_gradients, noises,
                                                 strict=True):
        forward = forward - 0.5 * squared_norms(noise)
        reverse = torch.add(old_gradient, new_gradient).mul_(per_replica(eps, noise))
        reverse.sub_(noise * per_replica(torch.sqrt(2 * eps), noise))
        backward = backward - squared_norms(reverse) / (4 * eps)
    log_ratio = old_potential - new_potential + backward - forward
    return torch.where(torch.isfinite(log_ratio), log_ratio,
                       torch.full_like(log_ratio, -math.inf))


class LangevinKernel(TransitionKernel):
    """Unadjusted Langevin: θ ← θ − ε∇U + √(2ε)ξ, ε = ηT per replica. Reports the acceptance a
    Metropolis correction would have given its previous move (from the next gradient)."""

    name = "langevin"
    metropolis = False
    target_acceptance = UNADJUSTED_TARGET_ACCEPTANCE

    def effective_step(self) -> torch.Tensor:
        """ε = ηT per replica (R,), the step on the potential U."""
        return self.step_size * self.density.temperature

    def _propose(self, gradients: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """θ ← θ − ε∇U + √(2ε)ξ in place; returns the noises ξ and ε."""
        eps = self.effective_step()
        noises = []
        with torch.no_grad():
            for parameter, gradient in zip(self.parameters(), gradients, strict=True):
                noise = self._noise_like(parameter)
                scale = per_replica(eps, parameter)
                parameter.addcmul_(gradient, scale, value=-1.0)
                parameter.addcmul_(noise, torch.sqrt(2 * scale))
                noises.append(noise)
        return noises, eps

    def step(self) -> StepStatistics:
        potential, gradients = self.potential_and_gradient()
        self._check_state(potential)
        acceptance = None
        previous = self.state.previous_move
        if previous is not None:
            log_ratio = _langevin_log_acceptance(
                previous.potential, potential, previous.gradients, gradients, previous.noises,
                previous.effective_step,
            )
            acceptance = log_ratio.clamp(max=0.0).exp()
        noises, eps = self._propose(gradients)
        self.state.previous_move = PreviousMove(potential, gradients, noises, eps)
        self.state.n_steps += 1
        return StepStatistics(self.state.n_steps - 1, potential, acceptance)


class MALAKernel(LangevinKernel):
    """Metropolis-adjusted Langevin: the unadjusted proposal, accepted per replica with
    probability min(1, α) (`_langevin_log_acceptance`)."""

    name = "mala"
    metropolis = True
    target_acceptance = MALA_TARGET_ACCEPTANCE

    def step(self) -> StepStatistics:
        potential, gradients = self.potential_and_gradient()
        self._check_state(potential)
        old_values = [parameter.detach().clone() for parameter in self.parameters()]
        noises, eps = self._propose(gradients)
        new_potential, new_gradients = self.density.potential_and_gradient()
        log_ratio = _langevin_log_acceptance(potential, new_potential, gradients, new_gradients,
                                             noises, eps)
        accept = torch.log(self._uniform(log_ratio)) < log_ratio
        current = self._accept(accept, old_values, potential, gradients, new_potential,
                               new_gradients)
        self.state.n_steps += 1
        return StepStatistics(self.state.n_steps - 1, current, log_ratio.clamp(max=0.0).exp())


def _kinetic_energy(momenta: list[torch.Tensor], masses: list[float],
                    like: torch.Tensor) -> torch.Tensor:
    """½ Σ_layers |p|²/m per replica, shaped like `like` (the (R,) potential)."""
    return sum((squared_norms(p) / (2 * m) for p, m in zip(momenta, masses, strict=True)),
               torch.zeros_like(like))


class HMCKernel(TransitionKernel):
    """Metropolis-adjusted HMC with diagonal mass M = prior precision per layer.

    One step: p ~ N(0, M); L leapfrog steps of length h_r = step_size_r·U(1 − j, 1 + j)
    (p ← p − (h/2)∇U, θ ← θ + h M⁻¹p, p ← p − (h/2)∇U); accept per replica with probability
    min(1, exp(H − H')), H = U + ½ pᵀM⁻¹p. The leapfrog map is volume preserving and reversible
    for any fixed h, so the jittered kernel is exact.
    """

    name = "hmc"
    metropolis = True
    target_acceptance = HMC_TARGET_ACCEPTANCE

    def __init__(
        self,
        density: PosteriorDensity,
        step_size: float | torch.Tensor,
        generator: torch.Generator,
        *,
        leapfrog_steps: int = DEFAULT_LEAPFROG_STEPS,
        jitter: float = DEFAULT_HMC_JITTER,
    ) -> None:
        super().__init__(density, step_size, generator)
        if isinstance(leapfrog_steps, bool) or not isinstance(leapfrog_steps, int) or (
                leapfrog_steps < 1):
            raise ValueError(f"leapfrog_steps must be an integer ≥ 1, got {leapfrog_steps!r}.")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}.")
        self.leapfrog_steps = leapfrog_steps
        self.jitter = float(jitter)

    def step_units(self) -> str:
        return "h (leapfrog step, mass = prior precision)"

    def step(self) -> StepStatistics:
        """One Metropolis-adjusted trajectory: momenta p ~ N(0, M) with M the prior precision,
        `leapfrog_steps` steps of `_trajectory`, accepted with probability
        min(1, exp(H(θ, p) − H(θ', p'))), H = U + ½pᵀM⁻¹p."""
        potential, gradients = self.potential_and_gradient()
        self._check_state(potential)
        parameters = self.parameters()
        masses = self.density.prior_precisions()
        old_values = [parameter.detach().clone() for parameter in parameters]
        momenta = [self._noise_like(parameter) * math.sqrt(mass)
                   for parameter, mass in zip(parameters, masses, strict=True)]
        jitter = 1.0 + self.jitter * (2.0 * self._uniform(potential).double().cpu() - 1.0)
        step = self.step_size * jitter  # (R,) float64
        kinetic = _kinetic_energy(momenta, masses, potential)
        with torch.no_grad():
            new_potential, new_gradients = self._trajectory(parameters, momenta, gradients,
                                                            masses, step)
        new_kinetic = _kinetic_energy(momenta, masses, potential)
        log_ratio = potential + kinetic - new_potential - new_kinetic
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio,
                                torch.full_like(log_ratio, -math.inf))
        accept = torch.log(self._uniform(log_ratio)) < log_ratio
        current = self._accept(accept, old_values, potential, gradients, new_potential,
                               new_gradients)
        self.state.n_steps += 1
        return StepStatistics(self.state.n_steps - 1, current, log_ratio.clamp(max=0.0).exp())

    def _trajectory(self, parameters: list[torch.nn.Parameter], momenta: list[torch.Tensor],
                    gradients: list[torch.Tensor], masses: list[float], step: torch.Tensor
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Leapfrog with mass M: p ← p − (h/2)∇U, θ ← θ + h M⁻¹p, p ← p − (h/2)∇U, repeated
        `leapfrog_steps` times in place; returns U and ∇U at the end point."""
        for _ in range(self.leapfrog_steps):
            for parameter, momentum, gradient, mass in zip(
                    parameters, momenta, gradients, masses, strict=True):
                momentum.addcmul_(gradient, per_replica(step / 2, momentum), value=-1.0)
                parameter.addcmul_(momentum, per_replica(step / mass, parameter))
            potential, gradients = self.density.potential_and_gradient()
            for momentum, gradient in zip(momenta, gradients, strict=True):
                momentum.addcmul_(gradient, per_replica(step / 2, momentum), value=-1.0)
        return potential, gradients


#: Longest trajectory of the split kernel, as a rotation angle of its exactly solved Gaussian part:
#: after a quarter period a direction the data does not inform is drawn afresh from the prior, and
#: longer trajectories turn back towards the start.
SPLIT_HMC_MAX_TRAJECTORY = math.pi / 2


class SplitHMCKernel(HMCKernel):
    """Metropolis-adjusted HMC with mass M = prior precision, integrated by splitting
    H = U_lik(θ) + [U_prior(θ) + ½pᵀM⁻¹p] (Shahbaba et al. 2014, "split HMC"; Beskos et al. 2011
    for Gaussian-prior targets), docs/networks.md "Prior-split HMC".

    With U_prior = ½λ|θ|² per layer and M = λ, the bracket's flow is a rotation of angular
    frequency 1, solved exactly: θ ← θ cos h + (p/λ) sin h, p ← p cos h − λθ sin h. One step of
    length h is kick(h/2) · rotate(h) · kick(h/2), the kick p ← p − (h/2)∇U_lik with
    ∇U_lik = ∇U − λθ. The map is volume preserving and reversible (a composition of symplectic
    maps, symmetric in time), so the Metropolis test on H keeps the posterior exact. Because
    the Gaussian part is integrated without error, the energy error comes from the likelihood
    curvature ω²_data = eig(Λ^{-1/2} ∇²U_lik Λ^{-1/2}) alone: h is limited by the data, not by
    the O(N·N0) prior directions whose leapfrog errors add up in plain HMC.

    `max_step_size` = SPLIT_HMC_MAX_TRAJECTORY/L (a quarter period per trajectory) bounds the
    default and the adapted step: where the data are weak the acceptance stays high at any h,
    and adaptation would otherwise lengthen the trajectory past the point where it turns back.
    A step size given explicitly is used as given.
    """

    name = "split-hmc"

    def step_units(self) -> str:
        return "h (rotation angle per step of prior-split HMC, mass = prior precision)"

    @property
    def max_step_size(self) -> float | None:
        """Largest default or adapted h: L·h ≤ π/2."""
        return SPLIT_HMC_MAX_TRAJECTORY / self.leapfrog_steps

    def _likelihood_gradients(self, gradients: list[torch.Tensor],
                              parameters: list[torch.nn.Parameter],
                              masses: list[float]) -> list[torch.Tensor]:
        # ∇U_lik = ∇U − λθ: the densities return the gradient of the whole potential.
        return [gradient - mass * parameter.detach()
                for gradient, parameter, mass in zip(gradients, parameters, masses, strict=True)]

    def _trajectory(self, parameters: list[torch.nn.Parameter], momenta: list[torch.Tensor],
                    gradients: list[torch.Tensor], masses: list[float], step: torch.Tensor
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """kick(h/2) · rotate(h) · kick(h/2), repeated `leapfrog_steps` times in place (the class
        docstring); returns U and ∇U at the end point."""
        cosine, sine = torch.cos(step), torch.sin(step)
        likelihood = self._likelihood_gradients(gradients, parameters, masses)
        for _ in range(self.leapfrog_steps):
            for parameter, momentum, gradient, mass in zip(
                    parameters, momenta, likelihood, masses, strict=True):
                momentum.addcmul_(gradient, per_replica(step / 2, momentum), value=-1.0)
                cos_r, sin_r = per_replica(cosine, parameter), per_replica(sine, parameter)
                position = parameter.detach().clone()
                parameter.mul_(cos_r).addcmul_(momentum, sin_r / mass)
                momentum.mul_(cos_r).addcmul_(position, sin_r * mass, value=-1.0)
            potential, gradients = self.density.potential_and_gradient()
            likelihood = self._likelihood_gradients(gradients, parameters, masses)
            for momentum, gradient in zip(momenta, likelihood, strict=True):
                momentum.addcmul_(gradient, per_replica(step / 2, momentum), value=-1.0)
        return potential, gradients


#: Transition kernels by name.
TRANSITION_KERNELS: dict[str, type[TransitionKernel]] = {
    "langevin": LangevinKernel,
    "mala": MALAKernel,
    "hmc": HMCKernel,
    "split-hmc": SplitHMCKernel,
}
