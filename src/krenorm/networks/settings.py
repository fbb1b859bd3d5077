"""Settings of one posterior sampling run, validated once at the boundary (docs/networks.md).

One frozen `SamplerSettings` is what the API (`sample_posterior`), the CLI and the TOML configs
of `compare` and `sweep` all pass: the same checks answer every caller, before any work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: Sampler names: a posterior density and a transition kernel each (krenorm.networks.samplers).
SAMPLER_NAMES: tuple[str, ...] = ("collapsed", "collapsed-hmc", "collapsed-split-hmc", "hmc",
                                  "langevin", "mala", "split-hmc")
DTYPE_NAMES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample the posterior of one network (not what network: that is the spec).

    sampler: 'collapsed' (readout integrated out, MALA on the first layer), 'collapsed-hmc'
    (readout integrated out, HMC on the first layer), 'mala', 'langevin' (unadjusted) or 'hmc'
    (all parameters); 'collapsed-split-hmc' / 'split-hmc' are HMC with the Gaussian prior part
    solved exactly (prior-split HMC; use few leapfrog_steps, e.g. 3). n_replicas independent
    chains batched in one tensor, n_steps steps each, of which burn_in (default n_steps // 2)
    are discarded; every thin-th later state is recorded (default: at most 500 records).
    step_size None starts from the default rule; with adapt_step_size each replica adapts its
    own step size during the first half of the burn-in.
    For the Langevin kernels step_size is η (the step on the potential is ηT), for HMC the
    leapfrog step h (prior-split HMC: the rotation angle per step; default and adapted values
    are capped at π/(2·leapfrog_steps)); leapfrog_steps is HMC's number of leapfrog steps per
    trajectory.
    kernel_records bounds the number of recorded hidden-layer kernels (each costs R·P²·F).
    """

    sampler: str = "collapsed"
    n_replicas: int = 16
    n_steps: int = 2000
    burn_in: int | None = None
    thin: int | None = None
    step_size: float | None = None
    adapt_step_size: bool = True
    seed: int = 0
    dtype: str = "float64"
    kernel_records: int = 50
    leapfrog_steps: int = 10

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"sampler must be one of {list(SAMPLER_NAMES)}, got "
                             f"{self.sampler!r}.")
        _integer("n_replicas", self.n_replicas, minimum=1)
        _integer("n_steps", self.n_steps, minimum=2)
        if self.burn_in is not None:
            _integer("burn_in", self.burn_in, minimum=0)
            if self.burn_in >= self.n_steps:
                raise ValueError(f"burn_in must be smaller than n_steps = {self.n_steps}, got "
                                 f"{self.burn_in}; lower burn_in or raise n_steps.")
        if self.thin is not None:
            _integer("thin", self.thin, minimum=1)
            if (self.n_steps - self.effective_burn_in) // self.thin < 2:
                raise ValueError(
                    f"thin = {self.thin} leaves fewer than 2 recorded samples of the "
                    f"{self.n_steps - self.effective_burn_in} post-burn-in steps; lower thin or "
                    "burn_in, or raise n_steps.")
        if self.step_size is not None and (isinstance(self.step_size, bool) or not isinstance(
                self.step_size, (int, float)) or not 0 < self.step_size < float("inf")):
            raise ValueError(f"step_size must be a positive number or None, got "
                             f"{self.step_size!r}.")
        if not isinstance(self.adapt_step_size, bool):
            raise ValueError(f"adapt_step_size must be true or false, got "
                             f"{self.adapt_step_size!r}.")
        _integer("seed", self.seed, minimum=0)
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}.")
        _integer("kernel_records", self.kernel_records, minimum=0)
        _integer("leapfrog_steps", self.leapfrog_steps, minimum=1)

    @property
    def effective_burn_in(self) -> int:
        """burn_in, or its default n_steps // 2."""
        return self.n_steps // 2 if self.burn_in is None else self.burn_in

    @property
    def effective_thin(self) -> int:
        """thin, or its default: at most 500 records after the burn-in."""
        if self.thin is not None:
            return self.thin
        return max(1, (self.n_steps - self.effective_burn_in) // 500)

    def replace(self, **changes: Any) -> SamplerSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "networks") -> SamplerSettings:
        """Settings from a config table; unknown keys are refused with the allowed ones named."""
        allowed = {field.name for field in fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown} in [{where}]; allowed: "
                             f"{sorted(allowed)}.")
        return cls(**raw)


def _integer(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")
