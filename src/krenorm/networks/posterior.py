"""Running posterior chains end to end: build the network, sample, record observables,
checkpoint/resume, summarise (docs/math/theory.md §1, §4; docs/networks.md).

`sample_posterior(...)` is the one-call entry point; `PosteriorRun` is the resumable object behind
it (`advance`, `save`, `load`, `summary`). Both take the posterior (spec, width, data, T, λ0, λ1)
and one `SamplerSettings`. Schedule of one run of n_steps:

    steps 1 … burn_in                 burn-in; during its first half each replica adapts its own
                                      step size (adapt_step_size), then the step sizes are fixed
    steps burn_in+1 … n_steps         every `thin`-th state is recorded (all replicas)

Defaults: burn_in = n_steps // 2, thin = max(1, (n_steps − burn_in) // 500), the step size from
`default_step_size` as the start of the adaptation (`adaptation.adaptation_for`: dual averaging
towards the kernel's target acceptance, or for unadjusted Langevin a cautious multiplicative rule
towards 0.98 of the acceptance its moves would have had). The hidden-layer kernel is recorded on
at most `kernel_records` evenly spaced records (it costs R·P²·F per record).

The summary applies the replica exclusion rule of `diagnostics` (stuck, frozen or non-mixing
replicas are left out of every average and named); its errors, ESS and R̂ come from ArviZ.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from krenorm._validation import check_positive
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.nngp import nngp_kernel
from krenorm.memory import check_allocation
from krenorm.networks.adaptation import StepSizeAdaptation, adaptation_for
from krenorm.networks.checkpoint import load_checkpoint, save_checkpoint
from krenorm.networks.diagnostics import (
    ChainEstimate,
    PosteriorTraces,
    ReplicaDiagnostics,
    estimate_mean,
    inference_data,
    replica_health,
)
from krenorm.networks.modules import (
    PreparedInputs,
    ReplicatedNetwork,
    build_network,
    make_generator,
)
from krenorm.networks.observables import (
    KernelAlignment,
    compare_kernels,
    readout_order_parameter,
)
from krenorm.networks.posterior_density import as_targets
from krenorm.networks.samplers import (
    SAMPLERS,
    HMCSampler,
    PosteriorSampler,
    default_step_size,
)
from krenorm.networks.settings import SamplerSettings
from krenorm.networks.transitions import StepStatistics
from krenorm.width import check_width, width_to_json

#: Kind tag of checkpoints written by `PosteriorRun.save` (see `checkpoint`).
CHECKPOINT_KIND = "posterior-run/2"
#: Activations, weights and autograd buffers held per element of Φ during one step (estimate).
_TEMPORARIES_PER_FEATURE = 6
#: Keywords of the deprecated call form, all fields of SamplerSettings.
_LEGACY_OPTIONS = ("sampler", "n_replicas", "n_steps", "step_size", "burn_in", "thin", "seed",
                   "dtype", "kernel_records", "adapt_step_size")
#: Mean acceptance below which the summary notes a low acceptance.
_LOW_ACCEPTANCE = 0.2
#: Test-loss R̂ above which the summary notes that the chains have not converged.
_RHAT_WARNING = 1.1


def resolve_settings(
    settings: SamplerSettings | None, legacy: Mapping[str, Any], *, caller: str
) -> SamplerSettings:
    """The run's settings: `settings`, or SamplerSettings built from the deprecated keywords
    (sampler=, n_replicas=, …, dtype=torch.float64) with a DeprecationWarning."""
    unknown = sorted(set(legacy) - set(_LEGACY_OPTIONS))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}; sampler "
                        "options go in settings=SamplerSettings(...).")
    if not legacy:
        if settings is not None and not isinstance(settings, SamplerSettings):
            raise ValueError(f"settings must be a SamplerSettings, got "
                             f"{type(settings).__name__}.")
        return settings if settings is not None else SamplerSettings()
    if settings is not None:
        raise ValueError(f"{caller}: give either settings= or the deprecated keywords "
                         f"{sorted(legacy)}, not both.")
    warnings.warn(
        f"{caller}({', '.join(f'{name}=…' for name in legacy)}) is deprecated; pass "
        "settings=SamplerSettings(...) with the same fields (dtype as 'float32'/'float64').",
        DeprecationWarning,
        stacklevel=3,
    )
    values = dict(legacy)
    if isinstance(values.get("dtype"), torch.dtype):
        values["dtype"] = str(values["dtype"]).removeprefix("torch.")
    return SamplerSettings(**values)


def network_width(width: object) -> int:
    """A sampled network's width: a finite positive whole number (int or float)."""
    value = check_width(width, allow_infinite=False)
    if not value.is_integer():
        raise ValueError(f"width must be a whole number of units for a sampled network, got "
                         f"{width!r}.")
    return int(value)


def make_sampler(
    settings: SamplerSettings,
    model: ReplicatedNetwork,
    inputs: PreparedInputs,
    y_train: torch.Tensor,
    *,
    temperature: float,
    lambda0: float,
    lambda1: float,
    step_size: float,
    generator: torch.Generator,
) -> PosteriorSampler:
    """The sampler named by `settings.sampler` (HMC samplers get `settings.leapfrog_steps`)."""
    sampler_class = SAMPLERS[settings.sampler]
    arguments = (model, inputs, y_train, temperature, lambda0, lambda1, step_size, generator)
    if issubclass(sampler_class, HMCSampler):
        return sampler_class(*arguments, leapfrog_steps=settings.leapfrog_steps)
    return sampler_class(*arguments)


class PosteriorAccumulator:
    """Per-record observables of R chains: traces of the instantaneous train and test errors,
    of the potential U and of the acceptance of the step before the record; running sums of
    the predictive mean and second moment and of the readout block second moments (all per
    replica), and of the hidden-layer kernel ΦΦᵀ on the training inputs (summed over replicas)."""

    def __init__(self, n_replicas: int, n_test: int, n_outputs: int, positions: int) -> None:
        double = torch.float64
        # Traces are kept as Python floats: appending small tensors after every large forward
        # pass pins the allocator's heap and grew the resident memory by MBs per record.
        self.steps: list[int] = []
        self.train_errors: list[list[float]] = []
        self.test_errors: list[list[float]] = []
        self.potentials: list[list[float]] = []
        self.acceptances: list[list[float] | None] = []
        self.mean_sum = torch.zeros(n_replicas, n_test, n_outputs, dtype=double)
        self.second_moment_sum = torch.zeros(n_replicas, n_test, n_outputs, dtype=double)
        self.block_sum = torch.zeros(n_replicas, positions, positions, dtype=double)
        self.kernel_sum: torch.Tensor | None = None
        self.n_kernel_records = 0

    @property
    def n_records(self) -> int:
        return len(self.test_errors)

    @torch.no_grad()
    def record(
        self,
        sampler: PosteriorSampler,
        stats: StepStatistics,
        test_inputs: PreparedInputs,
        test_targets: torch.Tensor,
        with_kernel: bool,
    ) -> None:
        """Add the current state of every replica (`stats`: the step that led to it)."""
        self.steps.append(sampler.n_steps_taken)
        self.train_errors.append(
            sampler.expected_squared_error(sampler.inputs, sampler.targets).double().tolist()
        )
        self.potentials.append(sampler.kernel.current_potential().double().tolist())
        acceptance = stats.acceptance
        self.acceptances.append(None if acceptance is None else acceptance.double().tolist())
        mean, variance = sampler.predictive(test_inputs)
        mean, variance = mean.double().cpu(), variance.double().cpu()
        targets = test_targets.double().cpu()
        error = ((targets - mean) ** 2).sum(-1) + mean.shape[-1] * variance
        self.test_errors.append(error.mean(-1).tolist())
        self.mean_sum += mean
        self.second_moment_sum += mean**2 + variance[..., None]
        self.block_sum += sampler.readout_block_second_moments().double().cpu()
        if with_kernel:
            features = sampler.model.hidden_features(sampler.inputs)
            kernel = torch.einsum("rpf,rqf->pq", features, features).double().cpu()
            self.kernel_sum = kernel if self.kernel_sum is None else self.kernel_sum + kernel
            self.n_kernel_records += features.shape[0]

    def traces(self, step_size: torch.Tensor) -> PosteriorTraces:
        """The recorded traces, (R, n) each; acceptance None unless every record has one."""
        acceptance = None
        if self.acceptances and all(row is not None for row in self.acceptances):
            acceptance = torch.tensor(self.acceptances, dtype=torch.float64).T
        return PosteriorTraces(
            steps=torch.tensor(self.steps, dtype=torch.int64),
            test_loss=torch.tensor(self.test_errors, dtype=torch.float64).T,
            train_error=torch.tensor(self.train_errors, dtype=torch.float64).T,
            potential=torch.tensor(self.potentials, dtype=torch.float64).T,
            acceptance=acceptance,
            step_size=step_size.detach().to("cpu", torch.float64).clone(),
        )

    def state_dict(self) -> dict[str, Any]:
        return {key: _copy(value) for key, value in vars(self).items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update({key: _copy(value) for key, value in state.items()})


def _copy(value: object) -> object:
    """Copies of state entries, so a saved state does not change with later in-place sums."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _to_python(value: object) -> object:
    """JSON-able form of a summary field."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


@dataclass(frozen=True)
class PosteriorSummary:
    """Posterior averages of one sampled architecture (docs/math/theory.md §4 observables),
    over the replicas that pass the exclusion rule of `diagnostics` (`excluded_replicas` lists
    the others; `replicas` is the full per-replica table).

    test_loss = ⟨(1/Pt) Σ_t |y_t − f(x_t)|²⟩ = bias2 + variance, with bias2 = (1/Pt)Σ_t|y_t − E f|²
    and variance = (1/Pt)Σ_t Σ_d Var f; stderr = ArviZ's MCSE of the mean (chains = included
    replicas); train_error likewise on the training set. q_matrix = (λ1/N) Σ_k ⟨a_k a_kᵀ⟩ over
    readout positions (1×1 for FC and CNN-GAP), the network-side estimate of Q̄, with per-entry
    standard errors over replicas. acceptance: mean post-burn-in acceptance of the included
    replicas (for unadjusted Langevin, the acceptance its moves would have had: a discretisation
    check); min_replica_acceptance: the lowest of all replicas, excluded ones included.
    step_size: the median of the replicas' final step sizes (each in the table). The kernel
    alignment sums all replicas (the hidden kernel is not stored per replica). `to_dict()` omits
    the traces; `to_inference_data()` exports them.
    """

    sampler: str
    architecture: dict[str, Any]
    width: float
    n_replicas: int
    n_train: int
    n_test: int
    temperature: float
    lambda0: float
    lambda1: float
    n_steps: int
    burn_in: int
    thin: int
    step_size: float
    test_loss: float
    test_loss_stderr: float
    bias2: float
    variance: float
    train_error: float
    train_error_stderr: float
    test_loss_estimate: ChainEstimate
    train_error_estimate: ChainEstimate
    acceptance: float | None
    min_replica_acceptance: float | None
    q_matrix: torch.Tensor
    q_matrix_stderr: torch.Tensor | None
    kernel_alignment: KernelAlignment | None
    predictive_mean: torch.Tensor
    predictive_variance: torch.Tensor
    wall_time_s: float
    device: str
    dtype: str
    settings: SamplerSettings
    replicas: tuple[ReplicaDiagnostics, ...]
    excluded_replicas: tuple[int, ...]
    traces: PosteriorTraces = field(repr=False, compare=False)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ess(self) -> float:
        """Effective sample size of the test-loss estimate."""
        return self.test_loss_estimate.ess

    def to_dict(self) -> dict[str, Any]:
        out = {item.name: _to_python(getattr(self, item.name)) for item in fields(self)
               if item.name != "traces"}
        out["ess"] = self.ess
        return out

    def to_inference_data(self) -> Any:
        """The recorded traces of every replica as `arviz.InferenceData` (chain = replica,
        draw = step number): posterior {test_loss, train_error}, sample_stats {lp = −U,
        acceptance_rate, step_size}; attrs name the sampler, the posterior and the excluded
        chains."""
        attrs: dict[str, str | int | float] = {
            "sampler": self.sampler, "architecture": str(self.architecture),
            "width": self.width, "temperature": self.temperature, "lambda0": self.lambda0,
            "lambda1": self.lambda1, "burn_in": self.burn_in, "thin": self.thin,
            "excluded_chains": ",".join(str(index) for index in self.excluded_replicas),
        }
        return inference_data(self.traces, attrs=attrs)


def _fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


class PosteriorRun:
    """One resumable posterior run; see the module docstring for the schedule.

    `PosteriorRun(spec, width, x_train, y_train, x_test, y_test, T, λ0, λ1,
    settings=SamplerSettings(...), device=...)`; the keywords sampler=, n_replicas=, … of earlier
    versions still work and warn (DeprecationWarning).
    """

    def __init__(
        self,
        spec: ArchitectureSpec,
        width: float,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        *,
        settings: SamplerSettings | None = None,
        device: torch.device | str | None = None,
        memory_limit: int | None = None,
        **legacy: Any,
    ) -> None:
        settings = resolve_settings(settings, legacy, caller="PosteriorRun")
        if not isinstance(spec, ArchitectureSpec):
            raise ValueError(f"spec must be an ArchitectureSpec, got {type(spec).__name__}.")
        for name, value in (("temperature", temperature), ("lambda0", lambda0),
                            ("lambda1", lambda1)):
            check_positive(name, value)
        units = network_width(width)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"training and test inputs differ in shape: {tuple(x_train.shape[1:])} vs "
                f"{tuple(x_test.shape[1:])}."
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = getattr(torch, settings.dtype)
        self.settings = settings
        self.spec, self.width = spec, float(units)
        self.temperature = float(temperature)
        self.lambda0, self.lambda1 = float(lambda0), float(lambda1)
        self.n_steps = settings.n_steps
        self.burn_in, self.thin = settings.effective_burn_in, settings.effective_thin
        self.kernel_records = settings.kernel_records
        n_replicas = settings.n_replicas
        n_outputs = 1 if y_train.ndim == 1 else y_train.shape[1]
        generator = make_generator(settings.seed, device)
        model = build_network(
            spec, units, tuple(x_train.shape[1:]), n_replicas, n_outputs, self.lambda0,
            self.lambda1, generator=generator, dtype=dtype, device=device,
            memory_limit=memory_limit,
        )
        check_allocation(
            "the hidden activations of one sampling step",
            _TEMPORARIES_PER_FEATURE * n_replicas * (x_train.shape[0] + x_test.shape[0])
            * units * model.n_patches,
            dtype,
            memory_limit,
        )
        train_inputs = model.prepare(x_train)
        self.test_inputs = model.prepare(x_test)
        self.test_targets = as_targets(y_test, n_outputs, x_test.shape[0]).to(model.first_layer)
        self.x_train = x_train
        step_size = settings.step_size
        if step_size is None:
            step_size = default_step_size(settings.sampler, model, train_inputs,
                                          self.temperature, self.lambda0, self.lambda1)
        self.sampler = make_sampler(
            settings, model, train_inputs, y_train, temperature=self.temperature,
            lambda0=self.lambda0, lambda1=self.lambda1, step_size=step_size,
            generator=generator,
        )
        cap = self.sampler.kernel.max_step_size
        if settings.step_size is None and cap is not None:
            # The default rule knows the data, not the kernel's bound (prior-split HMC).
            self.sampler.kernel.step_size = self.sampler.kernel.step_size.clamp(max=cap)
        self.adaptation_steps = self.burn_in // 2 if settings.adapt_step_size else 0
        self.adaptation: StepSizeAdaptation | None = (
            adaptation_for(self.sampler.kernel) if self.adaptation_steps else None
        )
        self.accumulator = PosteriorAccumulator(
            n_replicas, x_test.shape[0], n_outputs, model.readout_positions
        )
        n_records = (self.n_steps - self.burn_in) // self.thin
        self.kernel_thin = (max(1, n_records // max(1, self.kernel_records))
                            if self.kernel_records else 0)
        self.wall_time = 0.0
        # What a checkpoint must match: the posterior, the data and every sampler setting.
        self.config: dict[str, Any] = {
            "format": CHECKPOINT_KIND,
            "spec": spec.to_dict(),
            "width": width_to_json(self.width),
            "temperature": self.temperature,
            "lambda0": self.lambda0,
            "lambda1": self.lambda1,
            **settings.to_dict(),
            "data": _fingerprint(x_train, y_train, x_test, y_test),
        }

    @property
    def step(self) -> int:
        """Steps taken so far."""
        return self.sampler.n_steps_taken

    @property
    def sampler_name(self) -> str:
        return self.settings.sampler

    @property
    def model(self) -> ReplicatedNetwork:
        return self.sampler.model

    def _advance_one(self) -> None:
        adapting = self.step < self.adaptation_steps
        stats = self.sampler.step(monitor=not adapting)
        if adapting and self.adaptation is not None:
            self.adaptation.step(stats.acceptance)
        count = self.step
        if count == self.adaptation_steps and self.adaptation is not None:
            self.adaptation.finish()
            self.sampler.monitor.reset()
        if count == self.burn_in:
            # The replica table reports the acceptance over the recorded part of the chain.
            self.sampler.monitor.reset()
        if count > self.burn_in and (count - self.burn_in) % self.thin == 0:
            index = self.accumulator.n_records
            with_kernel = bool(self.kernel_thin) and index % self.kernel_thin == 0 and (
                index // self.kernel_thin < self.kernel_records
            )
            self.accumulator.record(self.sampler, stats, self.test_inputs, self.test_targets,
                                    with_kernel)

    def advance(
        self,
        until_step: int | None = None,
        *,
        progress: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every_s: float = 60.0,
    ) -> None:
        """Run to `until_step` (default n_steps) with an optional tqdm progress bar (with ETA);
        save to `checkpoint` every `checkpoint_every_s` seconds, at the end, and on Ctrl-C."""
        until_step = self.n_steps if until_step is None else min(until_step, self.n_steps)
        last_save = time.monotonic()
        bar = tqdm(
            total=self.n_steps, initial=self.step, disable=not progress, unit="step",
            desc=f"{self.sampler_name} {self.spec.kind} N={self.width:g}", dynamic_ncols=True,
        )
        try:
            while self.step < until_step:
                started = time.perf_counter()
                self._advance_one()
                self.wall_time += time.perf_counter() - started
                bar.update(1)
                if progress and self.step % 50 == 0:
                    bar.set_postfix(self._progress_fields(), refresh=False)
                if checkpoint is not None and time.monotonic() - last_save > checkpoint_every_s:
                    self.save(checkpoint)
                    last_save = time.monotonic()
        except KeyboardInterrupt:
            if checkpoint is not None:
                self.save(checkpoint)
            raise
        finally:
            bar.close()
        if checkpoint is not None:
            self.save(checkpoint)

    def _progress_fields(self) -> dict[str, str]:
        step_size = self.sampler.step_size
        shown = {"step": f"{float(step_size.median()):.2e}"}
        acceptance = self.sampler.mean_acceptance
        if acceptance is not None:
            shown["acc"] = f"{float(acceptance.mean()):.2f}"
            shown["min acc"] = f"{float(acceptance.min()):.2f}"
        if self.accumulator.n_records:
            last = self.accumulator.test_errors[-1]
            shown["test"] = f"{sum(last) / len(last):.4f}"
        return shown

    # --- checkpoints --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the full state atomically, with a SHA-256 of the payload (`checkpoint`)."""
        state = {
            "config": self.config,
            "sampler": self.sampler.state_dict(),
            "adaptation": None if self.adaptation is None else self.adaptation.state_dict(),
            "accumulator": self.accumulator.state_dict(),
            "wall_time": self.wall_time,
        }
        save_checkpoint(path, state, kind=CHECKPOINT_KIND)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Resume from a checkpoint of the same configuration and data; the continuation is
        bit-identical to an uninterrupted run (generator states are restored). Refuses, naming
        the file, a checkpoint that is corrupted, holds anything but tensors and plain
        containers, or was written by another configuration."""
        # On the CPU: generator states, step sizes and sums live there; the sampler moves the
        # parameters and cached gradients to the model's device.
        state = load_checkpoint(path, kind=CHECKPOINT_KIND, map_location="cpu")
        config = state.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"checkpoint {path} has no run configuration.")
        differing = sorted(key for key in set(self.config) | set(config)
                           if self.config.get(key) != config.get(key))
        if differing:
            raise ValueError(
                f"checkpoint {path} was written by a run with different {differing}; "
                "use the same configuration and data or a new checkpoint path."
            )
        self.sampler.load_state_dict(state["sampler"])
        if self.adaptation is not None:
            self.adaptation.load_state_dict(state["adaptation"])
        self.accumulator.load_state_dict(state["accumulator"])
        self.wall_time = float(state["wall_time"])

    # --- results ------------------------------------------------------------------------------

    def summary(self) -> PosteriorSummary:
        """Posterior averages and their errors from the records so far, over the replicas that
        pass the exclusion rule (`diagnostics`)."""
        accumulator = self.accumulator
        if accumulator.n_records < 2:
            raise ValueError(
                f"only {accumulator.n_records} samples recorded; advance past burn_in "
                f"({self.burn_in}) by at least 2·thin steps first."
            )
        notes = []
        step_size = self.sampler.step_size
        traces = accumulator.traces(step_size)
        acceptance = self.sampler.mean_acceptance
        table = replica_health(traces.test_loss.T, traces.train_error.T, acceptance, step_size,
                               metropolis=self.sampler.metropolis)
        excluded = tuple(row.index for row in table if row.excluded)
        included = [row.index for row in table if not row.excluded]
        if excluded:
            listed = "; ".join(f"{row.index}: {', '.join(row.reasons)}" for row in table
                               if row.excluded)
            notes.append(f"{len(excluded)} of {len(table)} replicas excluded from the averages "
                         f"({listed}).")
        kept = [row for row in table if row.reasons and not row.excluded]
        if kept:
            listed = "; ".join(f"{row.index}: {', '.join(row.reasons)}" for row in kept[:10])
            notes.append(f"{len(kept)} of {len(table)} replicas flagged but kept in the averages "
                         f"({listed}{' …' if len(kept) > 10 else ''}); the estimates are "
                         "unreliable: run longer, or with a smaller step_size.")
        test = estimate_mean(traces.test_loss[included].T)
        train = estimate_mean(traces.train_error[included].T)
        if not test.reliable:
            advice = "run longer" + ("" if self.sampler_name.startswith("collapsed")
                                     else " or use the collapsed sampler")
            notes.append(
                f"test-loss chain is short: {test.n_samples} records for τ = {test.tau:.1f} "
                f"(want ≥ 50 τ); {advice}."
            )
        if test.rhat is not None and test.rhat > _RHAT_WARNING:
            notes.append(f"R̂ of the test loss is {test.rhat:.3f} > {_RHAT_WARNING}: not "
                         "converged.")
        n_samples = accumulator.n_records * len(included)
        mean = accumulator.mean_sum[included].sum(0) / n_samples
        second = accumulator.second_moment_sum[included].sum(0) / n_samples
        variance = (second - mean**2).clamp_min(0.0)
        targets = self.test_targets.double().cpu()
        bias2 = float(((targets - mean) ** 2).sum(-1).mean())
        variance_term = float(variance.sum(-1).mean())
        blocks = accumulator.block_sum[included] / accumulator.n_records  # per replica
        q_per_replica = readout_order_parameter(blocks, self.width, self.lambda1)
        q_stderr = None
        if len(included) > 1:
            q_stderr = q_per_replica.std(0, unbiased=True) / math.sqrt(len(included))
        mean_acceptance = None
        if acceptance is not None:
            mean_acceptance = float(acceptance[included].mean())
            if mean_acceptance < _LOW_ACCEPTANCE:
                notes.append(f"mean acceptance {mean_acceptance:.3f} is low.")
        alignment = None
        if accumulator.kernel_sum is not None:
            posterior_kernel = accumulator.kernel_sum / accumulator.n_kernel_records
            nngp = nngp_kernel(self.spec, self.x_train.double().cpu(), lambda0=self.lambda0,
                               lambda1=self.lambda1)
            alignment = compare_kernels(posterior_kernel, nngp, self.sampler.targets.double().cpu())
            if excluded:
                notes.append("the kernel alignment includes the excluded replicas.")
        squeeze = self.test_targets.shape[1] == 1
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        return PosteriorSummary(
            sampler=self.sampler_name,
            architecture=self.spec.to_dict(),
            width=self.width,
            n_replicas=self.model.n_replicas,
            n_train=self.sampler.inputs.n_samples,
            n_test=self.test_inputs.n_samples,
            temperature=self.temperature,
            lambda0=self.lambda0,
            lambda1=self.lambda1,
            n_steps=self.step,
            burn_in=self.burn_in,
            thin=self.thin,
            step_size=float(step_size.median()),
            test_loss=test.mean,
            test_loss_stderr=test.stderr,
            bias2=bias2,
            variance=variance_term,
            train_error=train.mean,
            train_error_stderr=train.stderr,
            test_loss_estimate=test,
            train_error_estimate=train,
            acceptance=mean_acceptance,
            min_replica_acceptance=None if acceptance is None else float(acceptance.min()),
            q_matrix=q_per_replica.mean(0),
            q_matrix_stderr=q_stderr,
            kernel_alignment=alignment,
            predictive_mean=mean[:, 0] if squeeze else mean,
            predictive_variance=variance[:, 0] if squeeze else variance,
            wall_time_s=self.wall_time,
            device=str(self.model.first_layer.device),
            dtype=str(self.model.first_layer.dtype),
            settings=self.settings,
            replicas=table,
            excluded_replicas=excluded,
            traces=traces,
            warnings=tuple(notes),
        )


def sample_posterior(
    spec: ArchitectureSpec,
    width: float,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    temperature: float,
    lambda0: float,
    lambda1: float,
    *,
    settings: SamplerSettings | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every_s: float = 60.0,
    progress: bool = False,
    memory_limit: int | None = None,
    **legacy: Any,
) -> PosteriorSummary:
    """Sample the posterior exp(−(1/2T)Σ(f − y)² − λ0|W|²/2 − λ1|a|²/2) of R replicas of the
    `spec` network of width N (docs/math/theory.md §1) and return its posterior averages (§4).

    settings: a `SamplerSettings` (sampler, replicas, steps, burn-in, thinning, step size, seed,
    dtype, …; defaults when None). The keywords sampler=, n_replicas=, n_steps=, … of earlier
    versions still work and warn. With `checkpoint`, an existing file of the same configuration
    is resumed (bit-identically) and the state is saved every `checkpoint_every_s` seconds and at
    the end.
    """
    settings = resolve_settings(settings, legacy, caller="sample_posterior")
    run = PosteriorRun(spec, width, x_train, y_train, x_test, y_test, temperature, lambda0,
                       lambda1, settings=settings, device=device, memory_limit=memory_limit)
    if checkpoint is not None and Path(checkpoint).exists():
        run.load(checkpoint)
    run.advance(progress=progress, checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s)
    return run.summary()
