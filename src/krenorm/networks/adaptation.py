"""Burn-in step-size adaptation, in the manner of a torch learning-rate scheduler: it holds a
transition kernel and, after each kernel step, `step(acceptance)` retunes the kernel's per-replica
step size; `finish()` fixes it, after which the chain is time-homogeneous (docs/networks.md).

Each replica adapts its own step size from its own acceptance: replicas are independent chains,
so this is legitimate, and a replica in a stiffer region is no longer stuck with a step size tuned
to the others' average.

- `DualAveraging` (kernels with a Metropolis correction): Nesterov dual averaging of ln η towards
  the kernel's target acceptance (Hoffman & Gelman 2014, §3.2); the final step size is the
  averaged iterate.
- `CautiousAdaptation` (the unadjusted kernel, which cannot reject an overlong step: dual
  averaging's exploratory jumps made it diverge): with r = (α − target)/(1 − target), ln η grows
  by 0.02·min(r, 1) when r > 0 and shrinks by 0.1·max(r, −5) when r < 0; the final step size is
  the geometric mean of the second half of the iterates.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from krenorm.networks.transitions import TransitionKernel

#: A replica whose adapted step size fell below this fraction of its initial one has collapsed
#: (its acceptance stayed near 0); the run fails when more than half of the replicas collapse.
COLLAPSE_FRACTION = 1.0e-8


class StepSizeAdaptation(ABC):
    """Retunes `kernel.step_size` (R,) from per-replica acceptances (R,) during burn-in."""

    def __init__(self, kernel: TransitionKernel, *, target: float | None = None) -> None:
        if not isinstance(kernel, TransitionKernel):
            raise ValueError(f"kernel must be a TransitionKernel, got {type(kernel).__name__}.")
        target = kernel.target_acceptance if target is None else float(target)
        if not 0 < target < 1:
            raise ValueError(f"target acceptance must be in (0, 1), got {target!r}.")
        self.kernel = kernel
        self.target = target
        self.initial_step_size = kernel.step_size.clone()
        self.iteration = 0

    @abstractmethod
    def _update(self, acceptance: torch.Tensor) -> torch.Tensor:
        """Next log step size (R,) from one acceptance per replica (float64, CPU)."""

    @abstractmethod
    def final_step_size(self) -> torch.Tensor:
        """The step size (R,) to keep after burn-in."""

    def step(self, acceptance: torch.Tensor | None) -> None:
        """Feed the acceptance (R,) of the kernel step just taken (None: nothing to learn from,
        e.g. the unadjusted kernel's first step)."""
        if acceptance is None:
            return
        acceptance = acceptance.detach().to("cpu", torch.float64)
        self.iteration += 1
        step_size = self._capped(torch.exp(self._update(acceptance)))
        collapsed = step_size < COLLAPSE_FRACTION * self.initial_step_size
        if int(collapsed.sum()) * 2 > step_size.numel():
            raise RuntimeError(
                f"{self.kernel.name}: step-size adaptation collapsed in {int(collapsed.sum())} of "
                f"{step_size.numel()} replicas (η below {COLLAPSE_FRACTION:.0e} of its start "
                f"{float(self.initial_step_size.max()):.3g}) with acceptance near 0; the chains "
                "are stuck or diverged (check T > 0, the data scale, or give a smaller initial "
                "step_size)."
            )
        self.kernel.step_size = step_size

    def finish(self) -> None:
        """Fix the kernel's step size at `final_step_size()` (no-op before any update)."""
        if self.iteration > 0:
            self.kernel.step_size = self._capped(self.final_step_size())

    def _capped(self, step_size: torch.Tensor) -> torch.Tensor:
        """Step sizes bounded by the kernel's `max_step_size` (prior-split HMC: L·h ≤ π/2)."""
        cap = self.kernel.max_step_size
        return step_size if cap is None else step_size.clamp(max=cap)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "target": self.target,
                "initial_step_size": self.initial_step_size.clone(), "iteration": self.iteration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != type(self).__name__:
            raise ValueError(f"state is from a {state.get('kind')!r} adaptation, this is "
                             f"{type(self).__name__!r}.")
        self.target = float(state["target"])
        self.initial_step_size = state["initial_step_size"].clone()
        self.iteration = int(state["iteration"])


class DualAveraging(StepSizeAdaptation):
    """Dual averaging of ln η per replica: with w = 1/(t + t0),
    H̄ ← (1 − w)H̄ + w(target − α), ln η = μ − √t/γ·H̄, μ = ln(10η0), and the averaged iterate
    ln η̄ ← t^−κ ln η + (1 − t^−κ) ln η̄ is kept at the end."""

    def __init__(
        self, kernel: TransitionKernel, *, target: float | None = None, gamma: float = 0.05,
        t0: float = 10.0, kappa: float = 0.75,
    ) -> None:
        super().__init__(kernel, target=target)
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.mu = torch.log(10 * self.initial_step_size)
        self.error_average = torch.zeros_like(self.initial_step_size)
        self.log_step_average = torch.log(self.initial_step_size)

    def _update(self, acceptance: torch.Tensor) -> torch.Tensor:
        t = self.iteration
        weight = 1.0 / (t + self.t0)
        self.error_average = (1 - weight) * self.error_average + weight * (self.target - acceptance)
        log_step = self.mu - math.sqrt(t) / self.gamma * self.error_average
        cap = self.kernel.max_step_size
        if cap is not None:
            # Average what is used: an uncapped iterate would drag the final step past the cap.
            log_step = log_step.clamp(max=math.log(cap))
        decay = t ** (-self.kappa)
        self.log_step_average = decay * log_step + (1 - decay) * self.log_step_average
        return log_step

    def final_step_size(self) -> torch.Tensor:
        return torch.exp(self.log_step_average)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mu": self.mu.clone(),
                "error_average": self.error_average.clone(),
                "log_step_average": self.log_step_average.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.mu = state["mu"].clone()
        self.error_average = state["error_average"].clone()
        self.log_step_average = state["log_step_average"].clone()


class CautiousAdaptation(StepSizeAdaptation):
    """Multiplicative adaptation for the unadjusted kernel: at most 2 % up, up to 40 % down per
    step (see the module docstring); `history` holds ln η per iteration, shape (iterations, R)."""

    def __init__(self, kernel: TransitionKernel, *, target: float | None = None) -> None:
        super().__init__(kernel, target=target)
        self.log_step = torch.log(self.initial_step_size)
        self._history: list[torch.Tensor] = []

    def _update(self, acceptance: torch.Tensor) -> torch.Tensor:
        ratio = (acceptance - self.target) / (1 - self.target)
        change = torch.where(ratio > 0, 0.02 * ratio.clamp(max=1.0), 0.1 * ratio.clamp(min=-5.0))
        self.log_step = self.log_step + change
        self._history.append(self.log_step)
        return self.log_step

    @property
    def history(self) -> torch.Tensor:
        """ln η after each update, (iterations, R)."""
        if not self._history:
            return torch.empty(0, self.log_step.numel(), dtype=torch.float64)
        return torch.stack(self._history)

    def final_step_size(self) -> torch.Tensor:
        tail = self._history[len(self._history) // 2:]
        if not tail:
            return self.initial_step_size.clone()
        return torch.exp(torch.stack(tail).mean(0))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_step": self.log_step.clone(),
                "history": self.history.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_step = state["log_step"].clone()
        self._history = list(state["history"].unbind(0))


def adaptation_for(kernel: TransitionKernel) -> StepSizeAdaptation:
    """Dual averaging for kernels with a Metropolis correction, `CautiousAdaptation` without."""
    return DualAveraging(kernel) if kernel.metropolis else CautiousAdaptation(kernel)
