"""What a running sweep point is doing right now, for the sweep's progress display: during a
long theory solve, the evaluations, passes over the kernel blocks and ‖∇S‖ so far
(docs/scale.md §4).

A point reports through a process-wide sink. The executor that runs it installs one: a pool
worker writes the latest line to a file next to its heartbeat, which the driver reads on every
look at its workers; the inline executor hands the line straight to the driver's display. With
no sink installed (a plain call of `run_experiment`) reporting costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from krenorm.theory.progress import describe_progress
from krenorm.theory.solvers import ProgressCallback, SolverProgress

StatusSink = Callable[[str], None]

_sink: StatusSink | None = None


@contextlib.contextmanager
def reporting_to(sink: StatusSink | None) -> Iterator[None]:
    """Install `sink` for the duration of one point (the previous one is restored)."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


def file_sink(path: Path) -> StatusSink:
    """A sink that keeps the latest line in `path` (replaced atomically, so a reader never
    sees half a line)."""
    scratch = path.with_name(path.name + ".tmp")

    def write(line: str) -> None:
        with contextlib.suppress(OSError):
            scratch.write_text(line)
            scratch.replace(path)

    return write


def solver_reporter(label: str, *, every_s: float = 1.0) -> ProgressCallback | None:
    """A progress callback for `fit_theory` that sends "label: k evaluations, n passes,
    ‖∇S‖ = …" to the installed sink at most every `every_s` seconds; None without a sink."""
    sink = _sink
    if sink is None:
        return None
    start = time.perf_counter()
    last = [-float("inf")]

    def report(step: SolverProgress) -> None:
        now = time.perf_counter()
        if now - last[0] < every_s:
            return
        last[0] = now
        sink(f"{label}: {describe_progress(step, now - start)}")

    return report
