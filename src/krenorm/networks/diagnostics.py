"""Monte-Carlo diagnostics of replicated chains, computed by ArviZ (docs/networks.md).

- `estimate_mean`: a posterior mean from (n, R) traces with its Monte-Carlo standard error
  (ArviZ `mcse`, method 'mean'), effective sample sizes ('mean' and 'bulk') and the
  rank-normalised split-R̂ (Vehtari et al. 2021), chains = replicas.
- `replica_health`: per-replica acceptance, step size, ESS and split-R̂ against the other
  replicas, and the exclusion rule for stuck or non-mixing replicas (below).
- `inference_data`: the recorded traces as `arviz.InferenceData` (chain = replica).

Exclusion rule. A replica is excluded from the posterior averages, and named in the summary's
warnings and replica table, when

1. stuck: its post-burn-in mean acceptance is below STUCK_ACCEPTANCE (kernels with a Metropolis
   correction; the unadjusted kernel always moves), or
2. frozen: its recorded test-loss and train-error traces are both constant, or
3. non-mixing: the median, over up to OUTLIER_NEIGHBOURS other replicas, of the split-R̂ (ArviZ
   method 'split') of the pair (this replica, other replica) exceeds OUTLIER_RHAT on the test loss
   or the train error — provided such replicas are at most OUTLIER_SHARE of those left by rules
   1–2 and the others agree among themselves (rank-normalised R̂ ≤ CONSENSUS_RHAT). Otherwise the
   run as a whole has not converged: the replicas are flagged and reported, not excluded.

Rules 1–2 are mechanical; rule 3 looks at the observables, so its threshold is far from 1 (a
healthy replica reaches R̂ = 1.5 against its peers only with an ESS of order 1) and it needs a
consensus, to keep the selection from trimming the tails of a correctly sampled posterior or
from picking one mode of an unmixed one. When every replica would be excluded, none is, and the
summary says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():
    # ArviZ announces its refactor with a FutureWarning on import, once a day; nothing to act on.
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz

#: Rule 1: post-burn-in mean acceptance below which a replica is stuck.
STUCK_ACCEPTANCE = 0.05
#: Rule 3: median pairwise split-R̂ above which a replica does not mix with the others.
OUTLIER_RHAT = 1.5
#: Rule 3 excludes only when the flagged replicas are at most this share of the candidates …
OUTLIER_SHARE = 0.25
#: … and the other candidates agree among themselves (rank-normalised R̂ at most this).
CONSENSUS_RHAT = 1.1
#: Rule 3: number of other replicas (the next ones, cyclically) each replica is compared with.
OUTLIER_NEIGHBOURS = 16
#: Records per chain below which ArviZ's split diagnostics are undefined (two halves of ≥ 2).
MIN_RECORDS_FOR_RHAT = 4
#: Chains shorter than this many autocorrelation times give unreliable errors (Sokal's rule).
RELIABLE_LENGTH_IN_TAU = 50.0


def check_traces(traces: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(n_samples ≥ 2, n_chains) float64 traces (a 1-D trace is one chain); NaN/inf refused."""
    traces = torch.as_tensor(traces, dtype=torch.float64)
    if traces.ndim == 1:
        traces = traces[:, None]
    if traces.ndim != 2 or traces.shape[0] < 2:
        raise ValueError(
            f"traces must be (n_samples ≥ 2, n_chains), got {tuple(traces.shape)}; record more "
            "samples (longer chains or smaller thinning)."
        )
    if not bool(torch.isfinite(traces).all()):
        raise ValueError("traces contain NaN or inf; the chain diverged, reduce the step size.")
    return traces


def _chain_draw(traces: torch.Tensor) -> np.ndarray:
    """(n, R) traces as ArviZ's (chain, draw) array."""
    return np.ascontiguousarray(traces.T.numpy())


def _scalar(value: Any) -> float:
    """A float from ArviZ's answer (a numpy scalar/array or an xarray Dataset of one variable)."""
    if hasattr(value, "data_vars"):
        value = next(iter(value.data_vars.values())).values
    return float(np.asarray(value))


def _constant_chains(traces: torch.Tensor) -> torch.Tensor:
    """(R,) mask of chains whose trace is constant (to rounding of the traces' scale)."""
    scale = float(traces.abs().max())
    spread = traces.max(0).values - traces.min(0).values
    return spread <= 1e-12 * max(scale, 1e-300)


def split_rhat(traces: torch.Tensor | np.ndarray) -> float:
    """Classic split-R̂ of (n, R) traces (ArviZ method 'split'): each chain halved, then
    √(((n−1)/n·W + B/n)/W). ≈ 1 when converged; inf when the chains are constant but differ."""
    traces = check_traces(traces)
    if traces.shape[0] < MIN_RECORDS_FOR_RHAT:
        raise ValueError("split-R̂ needs at least 4 samples per chain.")
    if bool(_constant_chains(traces).all()):
        return 1.0 if float(traces.max() - traces.min()) == 0.0 else math.inf
    return _scalar(arviz.rhat(_chain_draw(traces), method="split"))


def rank_rhat(traces: torch.Tensor | np.ndarray) -> float:
    """Rank-normalised split-R̂ (ArviZ's default) of (n, R) traces."""
    traces = check_traces(traces)
    if traces.shape[0] < MIN_RECORDS_FOR_RHAT:
        raise ValueError("R̂ needs at least 4 samples per chain.")
    if bool(_constant_chains(traces).all()):
        return 1.0 if float(traces.max() - traces.min()) == 0.0 else math.inf
    return _scalar(arviz.rhat(_chain_draw(traces)))


def effective_sample_size(traces: torch.Tensor | np.ndarray) -> float:
    """ESS of the mean of (n, R) traces (ArviZ method 'mean': Geyer's initial monotone sequence
    on the chain-pooled autocorrelation, with the between-chain variance)."""
    return estimate_mean(traces).ess


@dataclass(frozen=True)
class ChainEstimate:
    """A posterior mean from (n, R) traces: mean ± stderr (ArviZ MCSE of the mean), ess (ESS of
    the mean), ess_bulk, tau = nR/ess (records), the independent-chain standard error
    std(chain means)/√R (None for R = 1), the rank-normalised split-R̂ (None below 4 records)
    and `reliable` (n ≥ 50τ and R̂ defined)."""

    mean: float
    stderr: float
    tau: float
    ess: float
    ess_bulk: float
    n_samples: int
    n_chains: int
    between_chain_stderr: float | None
    rhat: float | None
    reliable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_mean(traces: torch.Tensor | np.ndarray) -> ChainEstimate:
    """Posterior mean and its Monte-Carlo error from (n, R) traces of one observable.

    Degenerate cases are answered, not NaN: every chain constant → the chain means are R
    independent values (ess = R, stderr from their spread, R̂ = 1 if equal else inf); fewer than
    4 records → ess = R as well (nothing to estimate correlations from), R̂ None.
    """
    traces = check_traces(traces)
    n, chains = traces.shape
    mean = float(traces.mean())
    chain_means = traces.mean(0)
    between = float(chain_means.std(unbiased=True)) / math.sqrt(chains) if chains > 1 else None
    degenerate = n < MIN_RECORDS_FOR_RHAT or bool(_constant_chains(traces).all())
    if degenerate:
        rhat = None if n < MIN_RECORDS_FOR_RHAT else rank_rhat(traces)
        return ChainEstimate(
            mean=mean, stderr=between if between is not None else 0.0, tau=float(n),
            ess=float(chains), ess_bulk=float(chains), n_samples=n, n_chains=chains,
            between_chain_stderr=between, rhat=rhat, reliable=False,
        )
    array = _chain_draw(traces)
    ess = _scalar(arviz.ess(array, method="mean"))
    ess_bulk = _scalar(arviz.ess(array, method="bulk"))
    stderr = _scalar(arviz.mcse(array, method="mean"))
    rhat = _scalar(arviz.rhat(array))
    if not all(math.isfinite(value) for value in (ess, ess_bulk, stderr)) or ess <= 0:
        raise ValueError(f"ArviZ returned a non-finite error estimate (ess = {ess}, mcse = "
                         f"{stderr}) for traces of shape {tuple(traces.shape)}.")
    tau = n * chains / ess
    return ChainEstimate(
        mean=mean, stderr=stderr, tau=tau, ess=ess, ess_bulk=ess_bulk, n_samples=n,
        n_chains=chains, between_chain_stderr=between, rhat=rhat,
        reliable=bool(n >= RELIABLE_LENGTH_IN_TAU * tau),
    )


# --- replicas -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaDiagnostics:
    """One row of the replica table: post-burn-in mean acceptance (None for none recorded),
    final step size, the replica's own mean test loss and train error, the ESS of its test-loss
    trace alone, its median pairwise R̂ against the other replicas (max over test loss and train
    error; None when not computed), and whether it is excluded, with the rule(s) that did it."""

    index: int
    acceptance: float | None
    step_size: float
    test_loss: float
    train_error: float
    ess: float | None
    rhat_vs_others: float | None
    excluded: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def _pairwise_rhat(observables: list[torch.Tensor], candidates: list[int]) -> dict[int, float]:
    """Median over up to OUTLIER_NEIGHBOURS following candidates (cyclically) of the split-R̂ of
    the pair (r, s), max over observables, for every candidate r. ArviZ's classic 'split' method:
    the rank-normalised one costs 15× more per pair (1.8 ms vs 0.12 ms), R·16 pairs per summary."""
    count = len(candidates)
    neighbours = min(count - 1, OUTLIER_NEIGHBOURS)
    if neighbours < 1:
        return {}
    left = [r for r in range(count) for _ in range(neighbours)]
    right = [(r + k) % count for r in range(count) for k in range(1, neighbours + 1)]
    worst = np.zeros((count, neighbours))
    for traces in observables:
        chosen = traces[:, candidates]  # (n, count)
        constant = _constant_chains(chosen)
        pairs = torch.stack([chosen[:, left], chosen[:, right]])  # (2, n, pairs)
        values = arviz.rhat(arviz.convert_to_dataset(pairs.numpy()), method="split")
        rhat = next(iter(values.data_vars.values())).values.reshape(count, neighbours)
        # A pair of constant traces has no R̂; it only arises after rules 1–2 missed nothing.
        both_constant = (constant[left] & constant[right]).numpy().reshape(count, neighbours)
        rhat = np.where(both_constant | ~np.isfinite(rhat), np.inf, rhat)
        worst = np.maximum(worst, rhat)
    medians = np.median(worst, axis=1)
    return {candidates[i]: float(medians[i]) for i in range(count)}


def replica_health(
    test_traces: torch.Tensor,
    train_traces: torch.Tensor,
    acceptance: torch.Tensor | None,
    step_size: torch.Tensor,
    *,
    metropolis: bool,
) -> tuple[ReplicaDiagnostics, ...]:
    """The replica table of (n, R) test-loss and train-error traces, per-replica post-burn-in
    acceptance (R,) (None if none was recorded) and step size (R,), with the exclusion rule of
    the module docstring applied."""
    test_traces, train_traces = check_traces(test_traces), check_traces(train_traces)
    n, replicas = test_traces.shape
    reasons: list[list[str]] = [[] for _ in range(replicas)]
    if acceptance is not None and metropolis:
        for index in torch.nonzero(acceptance < STUCK_ACCEPTANCE).flatten().tolist():
            reasons[index].append(f"stuck: acceptance {float(acceptance[index]):.3f} < "
                                  f"{STUCK_ACCEPTANCE}")
    frozen = _constant_chains(test_traces) & _constant_chains(train_traces)
    for index in torch.nonzero(frozen).flatten().tolist():
        reasons[index].append("frozen: constant test-loss and train-error traces")
    excludable = [bool(reason) for reason in reasons]
    candidates = [index for index in range(replicas) if not reasons[index]]
    rhat_vs_others: dict[int, float] = {}
    if n >= 2 * MIN_RECORDS_FOR_RHAT and len(candidates) >= 3:
        rhat_vs_others = _pairwise_rhat([test_traces, train_traces], candidates)
        outliers = [index for index, value in rhat_vs_others.items() if value > OUTLIER_RHAT]
        rest = [index for index in candidates if index not in outliers]
        kept_because = ""
        if outliers and OUTLIER_SHARE * len(candidates) < len(outliers):
            kept_because = (f"kept: {len(outliers)} of {len(candidates)} replicas disagree, the "
                            "run has not converged")
        elif outliers:
            consensus = max(rank_rhat(test_traces[:, rest]), rank_rhat(train_traces[:, rest]))
            if consensus > CONSENSUS_RHAT:
                kept_because = (f"kept: the other replicas do not agree either (R̂ "
                                f"{consensus:.2f} > {CONSENSUS_RHAT}), the run has not converged")
        for index in outliers:
            reason = (f"non-mixing: median split-R̂ against the other replicas "
                      f"{rhat_vs_others[index]:.2f} > {OUTLIER_RHAT}")
            reasons[index].append(reason + (f" ({kept_because})" if kept_because else ""))
            excludable[index] = not kept_because
    # Every replica excludable: keep them all, the summary says so.
    excluded = [False] * replicas if all(excludable) else excludable
    rows = []
    for index in range(replicas):
        ess = None
        trace = test_traces[:, index]
        if n >= MIN_RECORDS_FOR_RHAT and float(trace.max() - trace.min()) > 0:
            ess = _scalar(arviz.ess(trace.numpy()[None, :], method="mean"))
        rows.append(ReplicaDiagnostics(
            index=index,
            acceptance=None if acceptance is None else float(acceptance[index]),
            step_size=float(step_size[index]),
            test_loss=float(test_traces[:, index].mean()),
            train_error=float(train_traces[:, index].mean()),
            ess=ess if ess is None or math.isfinite(ess) else None,
            rhat_vs_others=rhat_vs_others.get(index),
            excluded=excluded[index],
            reasons=tuple(reasons[index]),
        ))
    return tuple(rows)


# --- export ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosteriorTraces:
    """Per-record traces of R replicas (records after burn-in, every `thin`-th step): the
    instantaneous test loss and train error (Rao–Blackwellised for collapsed samplers), the
    potential U of the sampled parameters, the acceptance of the step before each record
    (None for a first unadjusted step) and the final per-replica step size."""

    steps: torch.Tensor  # (n,) step number of each record
    test_loss: torch.Tensor  # (R, n)
    train_error: torch.Tensor  # (R, n)
    potential: torch.Tensor  # (R, n)
    acceptance: torch.Tensor | None  # (R, n)
    step_size: torch.Tensor  # (R,)


def inference_data(traces: PosteriorTraces, *,
                   attrs: dict[str, str | int | float] | None = None) -> arviz.InferenceData:
    """`arviz.InferenceData` with chain = replica and draw = step number of the record:
    posterior {test_loss, train_error}, sample_stats {lp = −U, acceptance_rate, step_size}."""
    chains = traces.test_loss.shape[0]
    draws = traces.steps.numel()
    sample_stats: dict[str, np.ndarray] = {
        "lp": (-traces.potential).numpy(),
        "step_size": traces.step_size.numpy()[:, None].repeat(draws, axis=1),
    }
    if traces.acceptance is not None:
        sample_stats["acceptance_rate"] = traces.acceptance.numpy()
    return arviz.from_dict(
        posterior={"test_loss": traces.test_loss.numpy(),
                   "train_error": traces.train_error.numpy()},
        sample_stats=sample_stats,
        coords={"chain": np.arange(chains), "draw": traces.steps.numpy()},
        attrs=dict(attrs or {}),
    )
