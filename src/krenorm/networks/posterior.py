"""Running posterior chains end to end: build the network, sample, accumulate observables,
checkpoint/resume, summarise (THEORY.md §1, §4).

`sample_posterior(...)` is the one-call entry point; `PosteriorRun` is the resumable object behind
it (`advance`, `save`, `load`, `summary`). Schedule of one run of n_steps:

    steps 1 … burn_in                 burn-in; η adapts during its first half (adapt_step_size)
    steps burn_in+1 … n_steps         every `thin`-th state is recorded (all replicas)

Defaults: burn_in = n_steps // 2, thin = max(1, (n_steps − burn_in) // 500), the step size from
`default_step_size` (η = c/(tr JJᵀ + T·max λ)) as the start of the burn-in adaptation: dual
averaging towards a mean acceptance of 0.6 (MALA, collapsed) or, for unadjusted Langevin, a
cautious multiplicative rule towards 0.98 for the acceptance its moves would have had under a
Metropolis correction. The hidden-layer kernel is recorded on
at most `kernel_records` evenly spaced records (it costs R·P²·F per record).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from krenorm._validation import check_positive
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.memory import check_allocation
from krenorm.kernels.nngp import nngp_kernel
from krenorm.networks.modules import PreparedInputs, build_network, make_generator
from krenorm.networks.observables import (
    ChainEstimate,
    KernelAlignment,
    compare_kernels,
    estimate_mean,
    readout_order_parameter,
)
from krenorm.networks.samplers import SAMPLERS, PosteriorSampler, as_targets, default_step_size

#: Format tag of checkpoints written by `PosteriorRun.save`.
CHECKPOINT_FORMAT = "krenorm.posterior-run/1"
#: Activations, weights and autograd buffers held per element of Φ during one step (estimate).
_TEMPORARIES_PER_FEATURE = 6


class PosteriorAccumulator:
    """Per-record observables of R chains: instantaneous train/test errors (traces), running
    sums of the predictive mean and second moment, of the readout block second moments and of
    the hidden-layer kernel ΦΦᵀ on the training inputs."""

    def __init__(self, n_replicas: int, n_test: int, n_outputs: int, positions: int) -> None:
        options = {"dtype": torch.float64}
        # Traces are kept as Python floats: appending small tensors after every large forward
        # pass pins the allocator's heap and grew the resident memory by MBs per record.
        self.train_errors: list[list[float]] = []
        self.test_errors: list[list[float]] = []
        self.mean_sum = torch.zeros(n_replicas, n_test, n_outputs, **options)
        self.second_moment_sum = torch.zeros(n_replicas, n_test, n_outputs, **options)
        self.block_sum = torch.zeros(n_replicas, positions, positions, **options)
        self.kernel_sum: torch.Tensor | None = None
        self.n_kernel_records = 0

    @property
    def n_records(self) -> int:
        return len(self.test_errors)

    @torch.no_grad()
    def record(
        self,
        sampler: PosteriorSampler,
        test_inputs: PreparedInputs,
        test_targets: torch.Tensor,
        with_kernel: bool,
    ) -> None:
        """Add the current state of every replica."""
        self.train_errors.append(
            sampler.expected_squared_error(sampler.inputs, sampler.targets).double().tolist()
        )
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

    def state_dict(self) -> dict:
        return {key: _copy(value) for key, value in vars(self).items()}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update({key: _copy(value) for key, value in state.items()})


def _copy(value: object) -> object:
    """Copies of state entries, so a saved state does not change with later in-place sums."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _to_python(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


@dataclass(frozen=True)
class PosteriorSummary:
    """Posterior averages of one sampled architecture (THEORY.md §4 observables).

    test_loss = ⟨(1/Pt) Σ_t |y_t − f(x_t)|²⟩ = bias2 + variance, with bias2 = (1/Pt)Σ_t|y_t − E f|²
    and variance = (1/Pt)Σ_t Σ_d Var f; stderr from the pooled integrated autocorrelation time;
    train_error likewise on the training set. q_matrix = (λ1/N) Σ_k ⟨a_k a_kᵀ⟩ over readout
    positions (1×1 for FC and CNN-GAP), the network-side estimate of Q̄, with per-entry standard
    errors over replicas. acceptance: mean Metropolis acceptance after adaptation (for the
    unadjusted Langevin sampler, the acceptance its moves would have had: a discretisation check).
    """

    sampler: str
    architecture: dict
    width: int
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
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ess(self) -> float:
        """Effective sample size of the test-loss trace."""
        return self.test_loss_estimate.ess

    def to_dict(self) -> dict:
        out = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            out[key] = value.to_dict() if hasattr(value, "to_dict") else _to_python(value)
        out["ess"] = self.ess
        return out


def _fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


class PosteriorRun:
    """One resumable posterior run; see the module docstring for the schedule."""

    def __init__(
        self,
        spec: ArchitectureSpec,
        width: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        temperature: float,
        lambda0: float,
        lambda1: float,
        sampler: str = "collapsed",
        n_replicas: int = 16,
        n_steps: int = 2000,
        step_size: float | None = None,
        burn_in: int | None = None,
        thin: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        kernel_records: int = 50,
        memory_limit: int | None = None,
        adapt_step_size: bool = True,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
        if not isinstance(spec, ArchitectureSpec):
            raise ValueError(f"spec must be an ArchitectureSpec, got {type(spec).__name__}.")
        for name, value in (("temperature", temperature), ("lambda0", lambda0),
                            ("lambda1", lambda1)):
            check_positive(name, value)
        if not isinstance(n_steps, int) or n_steps < 2:
            raise ValueError(f"n_steps must be an int ≥ 2, got {n_steps!r}.")
        burn_in = n_steps // 2 if burn_in is None else burn_in
        if not isinstance(burn_in, int) or not 0 <= burn_in < n_steps:
            raise ValueError(f"burn_in must be an int in [0, n_steps), got {burn_in!r}.")
        thin = max(1, (n_steps - burn_in) // 500) if thin is None else thin
        if not isinstance(thin, int) or thin < 1 or (n_steps - burn_in) // thin < 2:
            raise ValueError(
                f"thin = {thin!r} leaves fewer than 2 recorded samples of the {n_steps - burn_in} "
                "post-burn-in steps; lower thin or burn_in, or raise n_steps."
            )
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"training and test inputs differ in shape: {tuple(x_train.shape[1:])} vs "
                f"{tuple(x_test.shape[1:])}."
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.spec, self.width = spec, width
        self.temperature, self.lambda0, self.lambda1 = temperature, lambda0, lambda1
        self.sampler_name, self.n_steps, self.burn_in, self.thin = sampler, n_steps, burn_in, thin
        self.kernel_records = kernel_records
        n_outputs = 1 if y_train.ndim == 1 else y_train.shape[1]
        self.generator = make_generator(seed, device)
        model = build_network(
            spec, width, tuple(x_train.shape[1:]), n_replicas, n_outputs, lambda0, lambda1,
            generator=self.generator, dtype=dtype, device=device,
        )
        check_allocation(
            "the hidden activations of one sampling step",
            _TEMPORARIES_PER_FEATURE * n_replicas * (x_train.shape[0] + x_test.shape[0])
            * width * model.n_patches,
            dtype,
            memory_limit,
        )
        train_inputs = model.prepare(x_train)
        self.test_inputs = model.prepare(x_test)
        self.test_targets = as_targets(y_test, n_outputs, x_test.shape[0]).to(model.first_layer)
        self.x_train = x_train
        requested_step_size = step_size
        if step_size is None:
            step_size = default_step_size(sampler, model, train_inputs, temperature, lambda0,
                                          lambda1)
        self.sampler = SAMPLERS[sampler](
            model, train_inputs, y_train, temperature, lambda0, lambda1, step_size, self.generator
        )
        self.adaptation_steps = burn_in // 2 if adapt_step_size else 0
        self.accumulator = PosteriorAccumulator(
            n_replicas, x_test.shape[0], n_outputs, model.readout_positions
        )
        n_records = (n_steps - burn_in) // thin
        self.kernel_thin = max(1, n_records // max(1, kernel_records)) if kernel_records else 0
        self.wall_time = 0.0
        self.config = {
            "format": CHECKPOINT_FORMAT,
            "spec": spec.to_dict(),
            "width": width,
            "sampler": sampler,
            "n_replicas": n_replicas,
            "n_steps": n_steps,
            "burn_in": burn_in,
            "thin": thin,
            "step_size": requested_step_size,
            "temperature": temperature,
            "lambda0": lambda0,
            "lambda1": lambda1,
            "seed": seed,
            "dtype": str(dtype),
            "kernel_records": kernel_records,
            "adapt_step_size": adapt_step_size,
            "data": _fingerprint(x_train, y_train, x_test, y_test),
        }

    @property
    def step(self) -> int:
        """Steps taken so far."""
        return self.sampler.n_steps_taken

    @property
    def model(self):
        return self.sampler.model

    def _after_step(self) -> None:
        count = self.step
        if count == self.adaptation_steps and self.adaptation_steps > 0:
            self.sampler.finish_adaptation()
        if count > self.burn_in and (count - self.burn_in) % self.thin == 0:
            index = self.accumulator.n_records
            with_kernel = bool(self.kernel_thin) and index % self.kernel_thin == 0 and (
                index // self.kernel_thin < self.kernel_records
            )
            self.accumulator.record(self.sampler, self.test_inputs, self.test_targets, with_kernel)

    def advance(
        self,
        until_step: int | None = None,
        progress: bool = False,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every_s: float = 60.0,
    ) -> None:
        """Run to `until_step` (default n_steps) with an optional tqdm progress bar (with ETA);
        save to `checkpoint` every `checkpoint_every_s` seconds, at the end, and on Ctrl-C."""
        until_step = self.n_steps if until_step is None else min(until_step, self.n_steps)
        last_save = time.monotonic()
        bar = tqdm(
            total=self.n_steps, initial=self.step, disable=not progress, unit="step",
            desc=f"{self.sampler_name} {self.spec.kind} N={self.width}", dynamic_ncols=True,
        )
        try:
            while self.step < until_step:
                started = time.perf_counter()
                self.sampler.step(adapt=self.step < self.adaptation_steps)
                self._after_step()
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

    def _progress_fields(self) -> dict:
        fields = {"eta": f"{self.sampler.step_size:.2e}"}
        acceptance = self.sampler.mean_acceptance
        if acceptance is not None:
            fields["acc"] = f"{float(acceptance.mean()):.2f}"
        if self.accumulator.n_records:
            last = self.accumulator.test_errors[-1]
            fields["test"] = f"{sum(last) / len(last):.4f}"
        return fields

    # --- checkpoints --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the full state atomically (temporary file + rename)."""
        path = Path(path)
        state = {
            "config": self.config,
            "sampler": self.sampler.state_dict(),
            "accumulator": self.accumulator.state_dict(),
            "wall_time": self.wall_time,
        }
        temporary = path.with_name(path.name + ".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint of the same configuration and data; the continuation is
        bit-identical to an uninterrupted run (generator states are restored)."""
        state = torch.load(Path(path), map_location=self.model.first_layer.device,
                           weights_only=False)
        if state.get("config", {}).get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a krenorm posterior-run checkpoint.")
        differing = sorted(
            key for key in set(self.config) | set(state["config"])
            if self.config.get(key) != state["config"].get(key)
        )
        if differing:
            raise ValueError(
                f"checkpoint {path} was written by a run with different {differing}; "
                "use the same configuration and data or a new checkpoint path."
            )
        self.sampler.load_state_dict(state["sampler"])
        self.accumulator.load_state_dict(state["accumulator"])
        self.wall_time = float(state["wall_time"])

    # --- results ------------------------------------------------------------------------------

    def summary(self) -> PosteriorSummary:
        """Posterior averages and their errors from the records so far."""
        accumulator = self.accumulator
        if accumulator.n_records < 2:
            raise ValueError(
                f"only {accumulator.n_records} samples recorded; advance past burn_in "
                f"({self.burn_in}) by at least 2·thin steps first."
            )
        notes = []
        test = estimate_mean(torch.tensor(accumulator.test_errors, dtype=torch.float64))
        train = estimate_mean(torch.tensor(accumulator.train_errors, dtype=torch.float64))
        if not test.reliable:
            advice = "run longer" + ("" if self.sampler_name == "collapsed"
                                     else " or use the collapsed sampler")
            notes.append(
                f"test-loss chain is short: {test.n_samples} records for τ = {test.tau:.1f} "
                f"(want ≥ 50 τ); {advice}."
            )
        if test.rhat is not None and test.rhat > 1.1:
            notes.append(f"split-R̂ of the test loss is {test.rhat:.3f} > 1.1: not converged.")
        n_samples = accumulator.n_records * self.model.n_replicas
        mean = accumulator.mean_sum.sum(0) / n_samples
        variance = (accumulator.second_moment_sum.sum(0) / n_samples - mean**2).clamp_min(0.0)
        targets = self.test_targets.double().cpu()
        bias2 = float(((targets - mean) ** 2).sum(-1).mean())
        variance_term = float(variance.sum(-1).mean())
        blocks = accumulator.block_sum / accumulator.n_records  # per replica
        q_per_replica = readout_order_parameter(blocks, self.width, self.lambda1)
        q_stderr = None
        if self.model.n_replicas > 1:
            q_stderr = q_per_replica.std(0, unbiased=True) / math.sqrt(self.model.n_replicas)
        acceptance = self.sampler.mean_acceptance
        if acceptance is not None and float(acceptance.mean()) < 0.2:
            notes.append(f"mean acceptance {float(acceptance.mean()):.3f} is low.")
        alignment = None
        if accumulator.kernel_sum is not None:
            posterior_kernel = accumulator.kernel_sum / accumulator.n_kernel_records
            nngp = nngp_kernel(self.spec, self.x_train.double().cpu(), lambda0=self.lambda0,
                               lambda1=self.lambda1)
            alignment = compare_kernels(posterior_kernel, nngp, self.sampler.targets.double().cpu())
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
            step_size=self.sampler.step_size,
            test_loss=test.mean,
            test_loss_stderr=test.stderr,
            bias2=bias2,
            variance=variance_term,
            train_error=train.mean,
            train_error_stderr=train.stderr,
            test_loss_estimate=test,
            train_error_estimate=train,
            acceptance=None if acceptance is None else float(acceptance.mean()),
            min_replica_acceptance=None if acceptance is None else float(acceptance.min()),
            q_matrix=q_per_replica.mean(0),
            q_matrix_stderr=q_stderr,
            kernel_alignment=alignment,
            predictive_mean=mean[:, 0] if squeeze else mean,
            predictive_variance=variance[:, 0] if squeeze else variance,
            wall_time_s=self.wall_time,
            device=str(self.model.first_layer.device),
            dtype=str(self.model.first_layer.dtype),
            warnings=tuple(notes),
        )


def sample_posterior(
    spec: ArchitectureSpec,
    width: int,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    temperature: float,
    lambda0: float,
    lambda1: float,
    sampler: str = "collapsed",
    n_replicas: int = 16,
    n_steps: int = 2000,
    step_size: float | None = None,
    burn_in: int | None = None,
    thin: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every_s: float = 60.0,
    progress: bool = False,
    kernel_records: int = 50,
    adapt_step_size: bool = True,
) -> PosteriorSummary:
    """Sample the posterior exp(−(1/2T)Σ(f − y)² − λ0|W|²/2 − λ1|a|²/2) of R replicas of the
    `spec` network of width N (THEORY.md §1) and return its posterior averages (§4).

    sampler: 'collapsed' (readout integrated out exactly, MALA on W; fewest steps), 'mala', or
    'langevin' (unadjusted). With `checkpoint`, an existing file of the same configuration is
    resumed (bit-identically) and the state is saved periodically and at the end.
    """
    run = PosteriorRun(
        spec, width, x_train, y_train, x_test, y_test, temperature, lambda0, lambda1, sampler,
        n_replicas, n_steps, step_size, burn_in, thin, seed, device, dtype, kernel_records,
        adapt_step_size=adapt_step_size,
    )
    if checkpoint is not None and Path(checkpoint).exists():
        run.load(checkpoint)
    run.advance(progress=progress, checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s)
    return run.summary()
