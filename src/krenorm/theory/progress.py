"""A live display of a long saddle-point solve: evaluations, passes over the kernel blocks and
‖∇S‖ (docs/scale.md §4), on a rich status line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from krenorm.theory.solvers import ProgressCallback, SolverProgress


@contextmanager
def solver_progress(console: Console | None = None, *, every_s: float = 0.5
                    ) -> Iterator[ProgressCallback]:
    """A callback for `fit_theory(progress=...)` / `solve_saddle_point(progress=...)` that shows
    the latest evaluation on a rich status line, refreshed at most every `every_s` seconds.

        with solver_progress() as progress:
            fit = fit_theory(x, y, spec, width, temperature, progress=progress)
    """
    console = Console(stderr=True) if console is None else console
    start = time.perf_counter()
    last = [-float("inf")]
    with console.status("solving the saddle point …") as status:

        def update(step: SolverProgress) -> None:
            now = time.perf_counter()
            if now - last[0] < every_s:
                return
            last[0] = now
            status.update(f"saddle point: {describe_progress(step, now - start)}")

        yield update


def describe_progress(step: SolverProgress, elapsed_s: float) -> str:
    """"12 evaluations, 24 passes, ‖∇S‖ = 3.1e-07, 85 s" (no passes for actions without
    kernel blocks)."""
    passes = "" if step.block_passes is None else f", {step.block_passes} passes"
    return (f"{step.evaluations} evaluations{passes}, ‖∇S‖ = {step.gradient_norm:.2e}, "
            f"{elapsed_s:.0f} s")
