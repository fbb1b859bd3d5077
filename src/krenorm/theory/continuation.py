"""Continuation of the stationary point in α = P/N and in T (docs/math/theory.md §3.7).

Where a direct solve from the infinite-width point fails (large α, small T: the damped fixed
point stops contracting and the Newton basin is small), the stationary point is followed along
a path on which it moves continuously:

- in α: from α_start (N = P/α_start, where the point is close to the identity) up to the target
  α at the target T, each solve warm-started from the last accepted one;
- in T: when the α path also fails, the α path is run at a higher temperature T·factor (where
  the action is smoother), then T is lowered to the target at the target width.

Steps are geometric in the parameter; a step whose solve does not converge is retried with the
square root of its ratio, and an accepted step lets the ratio grow again (up to `max_ratio`).
The last solve reports the curvature at the point (for a (Q̄, Q) saddle: the Hessian's
eigenvalues and whether the signature is the expected one).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from krenorm._validation import check_positive
from krenorm.theory.action import EffectiveAction
from krenorm.theory.diagnostics import SaddlePoint, SolverDiagnostics, SolverSettings
from krenorm.theory.solvers import (
    LastEvaluationCache,
    ProgressCallback,
    SaddlePointConvergenceWarning,
    SolverProgress,
    solve_saddle_point,
)
from krenorm.width import is_infinite

__all__ = [
    "ContinuationPath",
    "ContinuationSettings",
    "action_at_temperature",
    "continue_in_temperature",
    "continue_in_width",
    "solve_with_continuation",
]


@dataclass(frozen=True)
class ContinuationSettings:
    """How a stationary point is followed (module docstring).

    start_alpha: α = P/N where the α path starts (solved directly from the identity).
    first_ratio, max_ratio, min_ratio: ratio of successive parameter values (α or T) at the
    first step, at most, and the smallest before the path gives up.
    max_steps: solves per path (accepted and rejected together).
    temperature_factor: the T path starts at T·temperature_factor.
    use_temperature: try the T path when the α path fails."""

    start_alpha: float = 0.01
    first_ratio: float = 2.0
    max_ratio: float = 4.0
    min_ratio: float = 1.0005
    max_steps: int = 400
    temperature_factor: float = 100.0
    use_temperature: bool = True

    def __post_init__(self) -> None:
        check_positive("start_alpha", self.start_alpha)
        for name in ("first_ratio", "max_ratio", "min_ratio", "temperature_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 1):
                raise ValueError(f"{name} must be a finite number > 1, got {value!r}.")
        if self.min_ratio > self.first_ratio or self.first_ratio > self.max_ratio:
            raise ValueError("the ratios must satisfy min_ratio ≤ first_ratio ≤ max_ratio, got "
                             f"{self.min_ratio}, {self.first_ratio}, {self.max_ratio}.")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or (
                self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive int, got {self.max_steps!r}.")
        if not isinstance(self.use_temperature, bool):
            raise ValueError(f"use_temperature must be True or False, got "
                             f"{self.use_temperature!r}.")


@dataclass(frozen=True)
class ContinuationPath:
    """A followed path: the parameter ("alpha" or "temperature"), the accepted values in order,
    the number of rejected steps, and the saddle point at the last accepted value (None when
    not even the first point was solved). `reached` says whether the target was reached."""

    parameter: str
    values: tuple[float, ...]
    rejected: int
    saddle: SaddlePoint | None
    reached: bool

    def describe(self) -> str:
        if not self.values:
            return f"continuation in {self.parameter}: no start"
        return (f"continuation in {self.parameter} {self.values[0]:.3g} → {self.values[-1]:.3g} "
                f"({len(self.values)} points, {self.rejected} rejected steps"
                f"{'' if self.reached else ', target not reached'})")


def action_at_temperature(action: EffectiveAction, temperature: float) -> EffectiveAction:
    """The same data, kernels and width at temperature T. Every action reads its temperature
    at evaluation time, so a shallow copy with T replaced shares all the kernels."""
    changed = copy.copy(action)
    changed.temperature = check_positive("temperature", temperature)
    return changed


def _quiet_solve(action: EffectiveAction, start: torch.Tensor | None,
                 settings: SolverSettings, progress: ProgressCallback | None = None,
                 *, prefetch_curvature: bool = False) -> SaddlePoint:
    """A solve without the curvature check; `prefetch_curvature`: its last evaluation carries
    the check's first products anyway, for a polish at the same point through a
    LastEvaluationCache (docs/scale.md §4)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
        return solve_saddle_point(action, start, settings=settings.updated(hessian_check=False),
                                  progress=progress, prefetch_curvature=prefetch_curvature)


def _follow(make_action: Callable[[float], EffectiveAction], parameter: str, start: float,
            target: float, start_point: torch.Tensor | None, solver: SolverSettings,
            settings: ContinuationSettings) -> ContinuationPath:
    """Geometric steps from `start` to `target` (either direction), warm-starting each solve."""
    first = _quiet_solve(make_action(start), start_point, solver)
    if not first.diagnostics.converged:
        return ContinuationPath(parameter, (), 0, None, False)
    values, saddle, rejected = [start], first, 0
    current, ratio = start, settings.first_ratio
    for _ in range(settings.max_steps):
        if current == target:
            break
        trial = current * ratio if target > current else current / ratio
        trial = min(trial, target) if target > current else max(trial, target)
        solved = _quiet_solve(make_action(trial), saddle.point, solver)
        if solved.diagnostics.converged:
            values.append(trial)
            current, saddle = trial, solved
            ratio = min(ratio**1.5, settings.max_ratio)
        else:
            rejected += 1
            ratio = math.sqrt(ratio)
            if ratio < settings.min_ratio:
                break
    return ContinuationPath(parameter, tuple(values), rejected, saddle, current == target)


def continue_in_width(action: EffectiveAction, n_samples: int, *,
                      solver: SolverSettings | None = None,
                      settings: ContinuationSettings | None = None) -> ContinuationPath:
    """Follow the stationary point in α = P/N from `start_alpha` to the action's α (at its
    temperature). The values recorded are α."""
    solver = SolverSettings() if solver is None else solver
    settings = ContinuationSettings() if settings is None else settings
    if is_infinite(action.width):
        raise ValueError("continuation in α needs a finite width; at N = ∞ the stationary point "
                         "is the identity.")
    target = n_samples / action.width
    start = min(settings.start_alpha, target)
    return _follow(lambda alpha: action.at_width(n_samples / alpha), "alpha", start, target,
                   None, solver, settings)


def continue_in_temperature(action: EffectiveAction, start_temperature: float,
                            start_point: torch.Tensor | None = None, *,
                            solver: SolverSettings | None = None,
                            settings: ContinuationSettings | None = None) -> ContinuationPath:
    """Follow the stationary point in T from `start_temperature` (solved from `start_point`, by
    default the identity) to the action's temperature, at the action's width."""
    solver = SolverSettings() if solver is None else solver
    settings = ContinuationSettings() if settings is None else settings
    check_positive("start_temperature", start_temperature)
    return _follow(lambda temperature: action_at_temperature(action, temperature),
                   "temperature", start_temperature, action.temperature, start_point, solver,
                   settings)


def _final(action: EffectiveAction, path: ContinuationPath, solver: SolverSettings,
           note: str, progress: ProgressCallback | None = None) -> SaddlePoint:
    """A full solve at the target from the path's end (converged paths take 0 iterations), so
    that the diagnostics carry the curvature and signature; the method names the path."""
    assert path.saddle is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
        saddle = solve_saddle_point(action, path.saddle.point, settings=solver,
                                    progress=progress)
    diagnostics = dataclasses.replace(
        saddle.diagnostics, method=f"{note}; {saddle.diagnostics.method}",
        message=f"{note}; {saddle.diagnostics.message}")
    return dataclasses.replace(saddle, diagnostics=diagnostics)


def _continued(progress: ProgressCallback | None, before: SolverDiagnostics
               ) -> ProgressCallback | None:
    """A progress callback for a solve that continues an earlier one: counts offset by the
    earlier solve's evaluations and block passes, so a display sees one growing count."""
    if progress is None:
        return None
    report = progress

    def continued(step: SolverProgress) -> None:
        passes = (None if step.block_passes is None or before.block_passes is None
                  else step.block_passes + before.block_passes)
        report(dataclasses.replace(step, evaluations=step.evaluations
                                   + before.function_evaluations, block_passes=passes))

    return continued


def solve_with_continuation(action: EffectiveAction, n_samples: int, *,
                            solver: SolverSettings | None = None,
                            settings: ContinuationSettings | None = None,
                            progress: ProgressCallback | None = None,
                            **_unused: Any) -> SaddlePoint:
    """The stationary point: a direct solve from the identity; when it does not converge, the α
    path; when that fails too, the α path at T·temperature_factor followed by the T path. Warns
    (SaddlePointConvergenceWarning) when the target is still not converged; the result is then
    the best point found, flagged converged=False."""
    solver = SolverSettings() if solver is None else solver
    settings = ContinuationSettings() if settings is None else settings
    # The polish below starts where the direct solve ended: its first evaluation (and the
    # curvature products computed with it) come from this cache, not from two more passes.
    cached = LastEvaluationCache(action)
    direct = _quiet_solve(cached, None, solver, progress,
                          prefetch_curvature=solver.hessian_check)
    if direct.diagnostics.converged or is_infinite(action.width):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
            polished = solve_saddle_point(cached, direct.point, settings=solver,
                                          progress=_continued(progress, direct.diagnostics))
        # The polish (with the curvature check) starts at the direct solution: the work done is
        # the sum of both, which is what the diagnostics (and a progress display) must count.
        first, second = direct.diagnostics, polished.diagnostics
        counts = dataclasses.replace(
            second,
            iterations=first.iterations + second.iterations,
            function_evaluations=first.function_evaluations + second.function_evaluations,
            block_passes=(None if first.block_passes is None or second.block_passes is None
                          else first.block_passes + second.block_passes))
        return dataclasses.replace(polished, diagnostics=counts)
    best = direct
    path = continue_in_width(action, n_samples, solver=solver, settings=settings)
    if path.reached:
        return _final(action, path, solver, path.describe(), progress)
    notes = [path.describe()]
    if settings.use_temperature:
        hot = action_at_temperature(action, action.temperature * settings.temperature_factor)
        hot_path = continue_in_width(hot, n_samples, solver=solver, settings=settings)
        notes.append(f"at T·{settings.temperature_factor:g}: {hot_path.describe()}")
        if hot_path.reached and hot_path.saddle is not None:
            cooling = continue_in_temperature(action, hot.temperature, hot_path.saddle.point,
                                              solver=solver, settings=settings)
            notes.append(cooling.describe())
            if cooling.reached:
                return _final(action, cooling, solver, "; ".join(notes), progress)
    note = "; ".join(notes)
    saddle = _final(action, path, solver, note, progress) if path.saddle is not None else best
    warnings.warn(f"saddle point not converged after continuation ({note}); ‖∇S‖ = "
                  f"{saddle.diagnostics.gradient_norm:.3g}.", SaddlePointConvergenceWarning,
                  stacklevel=2)
    return saddle
