"""Sampling the posterior of a deep network, with a metastability check (docs/deep.md
"Sampled networks", docs/math/deep.md §6).

`sample_deep_posterior` runs R replicas of a `DeepNetwork` under one of the named samplers of
`SamplerSettings` — 'hmc', 'mala', 'langevin' on all parameters (`DeepFullPosterior`),
'collapsed' (MALA) and 'collapsed-hmc' on the hidden layers with the readout integrated out
(`DeepCollapsedPosterior`) — adapts each replica's step size during burn-in, then records the
instantaneous test and training MSE of every replica (Rao–Blackwellised for the collapsed
samplers) and estimates their posterior means with ArviZ errors, R̂ and ESS
(`diagnostics.estimate_mean`).

Metastability check. With `check_starts` (default) the replicas are split: the first half starts
from the prior, the second from a *trained* point — each of those replicas is first trained by
`TRAINING_STEPS` Adam steps on the full potential U (the MAP direction: a fitted network, far
from the prior's typical set). After the same burn-in both halves sample the same posterior if
the chains mix; a posterior mean that differs between the halves by more than
`METASTABILITY_Z` combined standard errors (test or training loss) is flagged. The pooled
estimate is still reported, and its R̂ (over all chains) is large in that case too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.networks.deep_modules import DeepCollapsedPosterior, DeepFullPosterior, DeepNetwork
from krenorm.networks.diagnostics import ChainEstimate, estimate_mean
from krenorm.networks.modules import PreparedInputs
from krenorm.networks.settings import SamplerSettings
from krenorm.networks.transitions import HMCKernel, LangevinKernel, MALAKernel, TransitionKernel

__all__ = ["METASTABILITY_Z", "DeepPosteriorSummary", "StartComparison",
           "compare_starts", "sample_deep_posterior"]

#: |difference| / combined SE above which the prior-started and trained-started halves are
#: declared in disagreement (two observables are tested, so about 0.5 % false alarms).
METASTABILITY_Z = 3.0
#: Adam steps (learning rate TRAINING_RATE) on U that make the trained start.
TRAINING_STEPS = 200
TRAINING_RATE = 0.01
#: Step sizes the burn-in adaptation starts from when the settings give none: HMC's leapfrog
#: step h (mass = prior precision, so h ~ 0.1 moves a weight by ~0.1 prior SD per leapfrog) and
#: the Langevin kernels' η (ε = ηT).
_DEFAULT_STEP = {"hmc": 0.05, "collapsed-hmc": 0.05, "mala": 1e-3, "collapsed": 1e-3,
                 "langevin": 1e-4}
#: Multiplicative adaptation rate of the per-replica step size during burn-in.
_ADAPTATION_RATE = 0.05
#: R̂ above which the summary warns (rank-normalised split-R̂, Vehtari et al. 2021).
RHAT_WARNING = 1.05


@dataclass(frozen=True)
class StartComparison:
    """Posterior means from the prior-started half and the trained-started half of the
    replicas, per observable ('test_loss', 'train_loss'): (prior mean, its SE, trained mean, its
    SE, z = difference / combined SE); `agree` is max |z| ≤ threshold."""

    observables: dict[str, tuple[float, float, float, float, float]]
    threshold: float
    agree: bool

    @property
    def max_abs_z(self) -> float:
        return max(abs(values[4]) for values in self.observables.values())

    def to_dict(self) -> dict[str, Any]:
        return {"observables": {name: dict(zip(("prior", "prior_stderr", "trained",
                                                "trained_stderr", "z"), values, strict=True))
                                for name, values in self.observables.items()},
                "threshold": self.threshold, "agree": self.agree, "max_abs_z": self.max_abs_z}


def compare_starts(traces: dict[str, torch.Tensor], n_prior: int, *,
                   threshold: float = METASTABILITY_Z) -> StartComparison:
    """Compare the first `n_prior` chains of each (n, R) trace with the remaining ones."""
    observables: dict[str, tuple[float, float, float, float, float]] = {}
    for name, trace in traces.items():
        first, second = estimate_mean(trace[:, :n_prior]), estimate_mean(trace[:, n_prior:])
        combined = math.hypot(first.stderr, second.stderr)
        z = (first.mean - second.mean) / combined if combined > 0 else (
            0.0 if first.mean == second.mean else math.inf)
        observables[name] = (first.mean, first.stderr, second.mean, second.stderr, z)
    agree = all(abs(values[4]) <= threshold for values in observables.values())
    return StartComparison(observables, threshold, agree)


@dataclass(frozen=True)
class DeepPosteriorSummary:
    """Posterior averages of a sampled deep network: test loss ε_g = bias² + variance on the
    test set, training loss (instantaneous MSE on the training set) and training error (of the
    posterior-mean predictor), each mean with its ArviZ standard error; R̂ and ESS of the test
    loss; mean acceptance; the metastability check (None when not run) and warnings."""

    test_loss: float
    test_loss_stderr: float
    bias2: float
    variance: float
    train_loss: float
    train_loss_stderr: float
    train_error: float
    rhat: float | None
    ess: float
    acceptance: float
    step_size: float
    burn_in: int
    thin: int
    n_records: int
    starts: StartComparison | None
    warnings: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["starts"] = None if self.starts is None else self.starts.to_dict()
        out["warnings"] = list(self.warnings)
        return out


def _density(spec_sampler: str, network: DeepNetwork, x: torch.Tensor, y: torch.Tensor,
             temperature: float) -> DeepFullPosterior:
    if spec_sampler.startswith("collapsed"):
        return DeepCollapsedPosterior(network, x, y, temperature=temperature)
    return DeepFullPosterior(network, x, y, temperature=temperature)


def _kernel(settings: SamplerSettings, density: DeepFullPosterior,
            generator: torch.Generator) -> TransitionKernel:
    step = settings.step_size if settings.step_size is not None else _DEFAULT_STEP[
        settings.sampler]
    if settings.sampler in ("hmc", "collapsed-hmc"):
        return HMCKernel(density, step, generator, leapfrog_steps=settings.leapfrog_steps)
    if settings.sampler == "langevin":
        return LangevinKernel(density, step, generator)
    return MALAKernel(density, step, generator)


def _train(network: DeepNetwork, x: torch.Tensor, y: torch.Tensor, temperature: float,
           replicas: slice) -> None:
    """Adam on the full potential U (all parameters), then keep the result only in `replicas`:
    the trained start of the metastability check."""
    saved = [parameter.detach().clone() for parameter in network.parameters()]
    density = DeepFullPosterior(network, x, y, temperature=temperature)
    optimizer = torch.optim.Adam(list(network.parameters()), lr=TRAINING_RATE)
    for _ in range(TRAINING_STEPS):
        optimizer.zero_grad()
        # U/P keeps Adam's effective step independent of the data set size.
        (density.potential().sum() / x.shape[0]).backward()
        optimizer.step()
    with torch.no_grad():
        for parameter, old in zip(network.parameters(), saved, strict=True):
            keep = old.clone()
            keep[replicas] = parameter[replicas]
            parameter.copy_(keep)


def sample_deep_posterior(spec: DeepArchitectureSpec, widths: Sequence[int],
                          priors: Sequence[float] | float, x_train: torch.Tensor,
                          y_train: torch.Tensor,
                          x_test: torch.Tensor, y_test: torch.Tensor, *, temperature: float,
                          settings: SamplerSettings, check_starts: bool = True
                          ) -> DeepPosteriorSummary:
    """Sample the posterior of the deep network (see the module docstring); x as the theory
    takes it ((P, N_0) for 'fc', (P, c, H, W) otherwise), y of shape (P,)."""
    start = time.perf_counter()
    if not isinstance(settings, SamplerSettings):
        raise ValueError(f"settings must be a SamplerSettings, got {type(settings).__name__}.")
    dtype = torch.float64 if settings.dtype == "float64" else torch.float32
    x, x0 = x_train.to(dtype), x_test.to(dtype)
    if spec.kind == "fc":
        x, x0 = x.reshape(x.shape[0], -1), x0.reshape(x0.shape[0], -1)
    y, y0 = y_train.to(dtype).reshape(-1), y_test.to(dtype).reshape(-1)
    replicas = settings.n_replicas
    n_prior = (replicas + 1) // 2
    if check_starts and replicas < 4:
        raise ValueError(f"the metastability check splits the replicas in two halves of at "
                         f"least 2 chains; n_replicas = {replicas}: raise it to 4 or more.")
    generator = torch.Generator().manual_seed(settings.seed)
    network = DeepNetwork(spec, tuple(x.shape[1:]), widths, priors, replicas=replicas,
                          generator=generator, dtype=dtype)
    if check_starts:
        _train(network, x, y, temperature, slice(n_prior, replicas))
    density = _density(settings.sampler, network, x, y, temperature)
    kernel = _kernel(settings, density, generator)
    test_inputs = PreparedInputs(x0, spec.kind)
    train_inputs = PreparedInputs(x, spec.kind)
    burn_in, thin = settings.effective_burn_in, settings.effective_thin
    test_trace, train_trace = [], []
    mean_sum = torch.zeros(replicas, x0.shape[0], dtype=torch.float64)
    square_sum = torch.zeros_like(mean_sum)
    train_mean_sum = torch.zeros(replicas, x.shape[0], dtype=torch.float64)
    acceptance = torch.zeros(replicas, dtype=torch.float64)
    counted = 0
    for step in range(settings.n_steps):
        stats = kernel.step()
        if step < burn_in:
            if settings.adapt_step_size and stats.acceptance is not None:
                kernel.step_size = kernel.step_size * torch.exp(
                    _ADAPTATION_RATE * (stats.acceptance.double().cpu()
                                        - kernel.target_acceptance))
            continue
        if stats.acceptance is not None:
            acceptance += stats.acceptance.double().cpu()
            counted += 1
        if (step - burn_in) % thin:
            continue
        mean, variance = density.predictive(test_inputs)
        mean = mean[..., 0].double().cpu()
        test_trace.append(((mean - y0.double()) ** 2 + variance.double().cpu()).mean(1))
        mean_sum += mean
        square_sum += mean**2 + variance.double().cpu()
        train_mean, train_variance = density.predictive(train_inputs)
        train_mean = train_mean[..., 0].double().cpu()
        train_mean_sum += train_mean
        train_trace.append(((train_mean - y.double()) ** 2
                            + train_variance.double().cpu()).mean(1))
    tests, trains = torch.stack(test_trace), torch.stack(train_trace)
    n_records = tests.shape[0]
    test_estimate: ChainEstimate = estimate_mean(tests)
    train_estimate = estimate_mean(trains)
    average = mean_sum.mean(0) / n_records
    bias2 = float(((average - y0.double()) ** 2).mean())
    variance_part = float((square_sum.mean(0) / n_records - average**2).mean())
    train_error = float(((train_mean_sum.mean(0) / n_records - y.double()) ** 2).mean())
    starts = compare_starts({"test_loss": tests, "train_loss": trains}, n_prior) if (
        check_starts) else None
    notes = []
    if test_estimate.rhat is not None and test_estimate.rhat > RHAT_WARNING:
        notes.append(f"R̂ = {test_estimate.rhat:.3f} > {RHAT_WARNING} (test loss): the chains "
                     "have not mixed.")
    if starts is not None and not starts.agree:
        notes.append(f"metastability: the prior-started and trained-started chains disagree "
                     f"(max |z| = {starts.max_abs_z:.1f} > {starts.threshold:g}).")
    return DeepPosteriorSummary(
        test_loss=test_estimate.mean, test_loss_stderr=test_estimate.stderr, bias2=bias2,
        variance=variance_part, train_loss=train_estimate.mean,
        train_loss_stderr=train_estimate.stderr, train_error=train_error,
        rhat=test_estimate.rhat, ess=test_estimate.ess,
        acceptance=float(acceptance.mean() / max(counted, 1)),
        step_size=float(kernel.step_size.median()), burn_in=burn_in, thin=thin,
        n_records=n_records, starts=starts, warnings=tuple(notes),
        seconds=time.perf_counter() - start)
