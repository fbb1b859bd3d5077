"""How long one sweep point may run before the driver stops it (docs/sweeps.md "Failure modes").

A point's cost is estimated from its spec with a deliberately coarse model — the P × P algebra
of each theory fit (≈ P³ per solver iteration, a few dozen iterations) and, for a sampled
network, replicas × steps × P × N multiply-adds per leapfrog step — and the default limit is
generous: `LIMIT_FACTOR` times the estimate and never below `MIN_LIMIT_S`. Its job is to end a
point that hangs (a deadlock, a livelock in a worker), not to police slow ones; a worker that
stops altogether (SIGSTOP, a frozen node) is caught sooner by its missing heartbeat
(executors.ProcessPoolSweepExecutor, stall_after_s). `execution.point_time_limit_s` overrides
the default for every point of a sweep.
"""

from __future__ import annotations

import math

from krenorm.experiments.spec import ExperimentSpec

#: Floating-point operations per second assumed for one torch thread (a slow, shared core).
FLOPS_PER_SECOND = 2e8
#: Saddle-point iterations assumed per theory fit.
SOLVER_ITERATIONS = 50
#: The default limit is this many times the estimate ...
LIMIT_FACTOR = 30.0
#: ... and at least this long (seconds): start-up, data loading and a busy machine.
MIN_LIMIT_S = 600.0


def estimated_seconds(spec: ExperimentSpec) -> float:
    """A coarse estimate of one point's run time on one thread (seconds)."""
    p = spec.data.n_train + spec.data.n_test
    flops = 0.0
    if spec.theory is not None:
        fits = (int(spec.theory.finite) * (1 + int(spec.theory.retuned_priors))
                + int(spec.theory.infinite and not spec.is_infinite_width))
        flops += fits * SOLVER_ITERATIONS * p**3
    if spec.network is not None:
        width = spec.width if math.isfinite(spec.width) else 1.0
        flops += (spec.network.n_replicas * spec.network.n_steps * p * width
                  * max(1, spec.network.leapfrog_steps) * 10)
    return 1.0 + flops / FLOPS_PER_SECOND


def point_time_limit(spec: ExperimentSpec, override_s: float | None = None) -> float:
    """The time limit of one point: `override_s` when given, else
    max(MIN_LIMIT_S, LIMIT_FACTOR × estimated_seconds(spec))."""
    if override_s is not None:
        return override_s
    return max(MIN_LIMIT_S, LIMIT_FACTOR * estimated_seconds(spec))
