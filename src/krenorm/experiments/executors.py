"""Where sweep points run (docs/architecture.md "Scale"): a concurrent.futures-style interface over
a local process pool (default), the driver process itself (workers = 0, for debugging) or a Dask
distributed cluster (`--scheduler tcp://host:8786`; on SLURM start the cluster with
dask-jobqueue, see docs/sweeps.md). Every executor hands out `concurrent.futures.Future`s, so
the sweep driver waits on all of them the same way.

Watching (docs/sweeps.md "Failure modes"): pool workers touch a heartbeat file every second
and write which point they run, so `inspect()` finds a worker that stopped (SIGSTOP, a stuck
node: no heartbeat for stall_after_s) or a point past its time limit, and kills that worker;
the pool then reports the loss and the driver re-queues what was in flight. The Dask executor's
`inspect()` raises SchedulerLostError when the client has lost its scheduler.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.context
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from krenorm.experiments.point_status import StatusSink, file_sink, reporting_to
from krenorm.experiments.processes import process_alive


def _exit_when_driver_dies(driver_pid: int, poll_s: float) -> None:
    while process_alive(driver_pid):
        time.sleep(poll_s)
    # The driver died (e.g. SIGKILL): nobody will read our results, and a resumed sweep reruns
    # whatever we were doing, so stop at once instead of lingering. (With the fork server the
    # driver is not our parent, and the fork server itself lives as long as its workers do, so
    # watching the parent would not do.)
    os._exit(1)


#: Seconds between two heartbeats of a pool worker.
BEAT_EVERY_S = 1.0


class SchedulerLostError(RuntimeError):
    """The Dask client lost its scheduler (killed, or the network went away)."""


@dataclass(frozen=True)
class WorkerProblem:
    """What `inspect()` found and acted on: kind 'stalled' (no heartbeat; the worker was
    killed) or 'over-time' (its point ran past the limit; the worker was killed); `future` is
    the point it was running (None when idle); detail is a sentence for the store."""

    kind: str
    pid: int
    future: concurrent.futures.Future | None
    detail: str


def _beat(directory: str, every_s: float) -> None:
    beacon = Path(directory) / f"{os.getpid()}.alive"
    while True:
        with contextlib.suppress(OSError):
            beacon.touch()
        time.sleep(every_s)


def _initialize_worker(threads: int, driver_pid: int, beacon_dir: str | None = None) -> None:
    """Worker start-up: torch threads per worker (workers × threads ≤ cores avoids
    oversubscription), a watchdog that ends the worker when the driver is gone and a heartbeat
    thread (a stopped process stops beating, a busy one does not)."""
    torch.set_num_threads(threads)
    watchdog = threading.Thread(target=_exit_when_driver_dies, args=(driver_pid, 1.0),
                                daemon=True)
    watchdog.start()
    if beacon_dir is not None:
        threading.Thread(target=_beat, args=(beacon_dir, BEAT_EVERY_S), daemon=True).start()


def _run_watched(beacon_dir: str, token: str, function: Callable, *arguments: Any) -> Any:
    """Run one point in a pool worker, announcing it in <beacon_dir>/<pid>.point (token, start
    time) so the driver can tell which point a worker runs and for how long."""
    point_file = Path(beacon_dir) / f"{os.getpid()}.point"
    status_file = Path(beacon_dir) / f"{os.getpid()}.status"
    with contextlib.suppress(OSError):
        point_file.write_text(f"{token} {time.time()!r}")
    try:
        # What the point is doing (a long solve's passes and ‖∇S‖), for the driver's display.
        with reporting_to(file_sink(status_file)):
            return function(*arguments)
    finally:
        with contextlib.suppress(OSError):
            point_file.unlink()
        with contextlib.suppress(OSError):
            status_file.unlink()


def _start_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where the platform has it, else 'spawn'. Both are safe with CUDA and with
    torch's thread pools (plain fork is not). The fork server imports torch and the runner
    once and forks workers from that clean state, so starting a pool (or restarting one after a
    worker died) costs one import instead of one per worker."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["krenorm.experiments.runner"])
        return context
    return multiprocessing.get_context("spawn")


class SweepExecutor:
    """Base: submit(fn, *args) → concurrent.futures.Future; `capacity` points are kept in
    flight; `is_worker_loss(error)` says whether an error means the worker died (rather than
    the point raising); `restart()` recovers from such a loss; `close()` releases resources."""

    description = "executor"
    capacity = 1
    #: Where an executor that runs points in the driver process sends their status lines
    #: (set by the driver; `point_status`).
    status_sink: StatusSink | None = None

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        raise NotImplementedError

    def is_worker_loss(self, error: BaseException) -> bool:
        return False

    def set_time_limit(self, future: concurrent.futures.Future, limit_s: float | None) -> None:
        """Stop `future`'s point once it has run `limit_s` seconds (None: no limit)."""

    def inspect(self) -> list[WorkerProblem]:
        """Look for stalled workers and points past their limit, act on them (kill the worker)
        and say what was done; raise SchedulerLostError when the scheduler is gone."""
        return []

    def point_statuses(self) -> list[str]:
        """The latest status line of each point running in a worker (`point_status`): a long
        theory solve's evaluations, passes and ‖∇S‖. Empty where workers cannot report."""
        return []

    def restart(self) -> None:
        """Make the executor usable again after a worker loss."""

    def close(self) -> None:
        """Release workers or connections."""

    def __enter__(self) -> SweepExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InlineExecutor(SweepExecutor):
    """Runs each point in the driver process when submitted (workers = 0): no parallelism,
    plain tracebacks; for debugging and tiny sweeps. Each point runs with `threads` torch
    threads (the caller's setting is restored afterwards): on a busy machine torch's default
    thread count can make a point many times slower through spinning threads."""

    description = "inline (driver process)"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with reporting_to(self.status_sink):
                future.set_result(function(*arguments))
        except Exception as error:  # the sweep records it as the point's failure
            future.set_exception(error)
        finally:
            torch.set_num_threads(previous)
        return future


class ProcessPoolSweepExecutor(SweepExecutor):
    """A local pool of `workers` processes (started by `_start_context`), each with
    `threads_per_worker` torch threads. stall_after_s: a worker silent (no heartbeat) this long
    is killed as stalled."""

    def __init__(self, workers: int, threads_per_worker: int = 1, *,
                 stall_after_s: float = 60.0):
        if workers < 1:
            raise ValueError(f"workers must be >= 1 for a process pool, got {workers}.")
        if not stall_after_s > 2 * BEAT_EVERY_S:
            raise ValueError(f"stall_after_s must exceed {2 * BEAT_EVERY_S} s (two heartbeats), "
                             f"got {stall_after_s}.")
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.stall_after_s = stall_after_s
        self.capacity = 2 * workers  # one running and one queued per worker
        self.description = (f"process pool ({workers} worker{'s' if workers > 1 else ''}, "
                            f"{threads_per_worker} torch thread(s) each)")
        self._beacon_dir = tempfile.mkdtemp(prefix="krenorm-heartbeats-")
        self._tokens: dict[str, concurrent.futures.Future] = {}
        self._limits: dict[concurrent.futures.Future, float] = {}
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=_start_context(), initializer=_initialize_worker,
            initargs=(self.threads_per_worker, os.getpid(), self._beacon_dir))

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        token = uuid.uuid4().hex
        future = self._pool.submit(_run_watched, self._beacon_dir, token, function, *arguments)
        self._tokens[token] = future
        future.add_done_callback(lambda _: self._forget(token))
        return future

    def _forget(self, token: str) -> None:
        future = self._tokens.pop(token, None)
        if future is not None:
            self._limits.pop(future, None)

    def set_time_limit(self, future: concurrent.futures.Future, limit_s: float | None) -> None:
        if limit_s is not None:
            self._limits[future] = limit_s

    def _running(self, pid: int) -> tuple[concurrent.futures.Future | None, float | None]:
        """The future a worker runs and since when (None, None when idle)."""
        try:
            token, started = (Path(self._beacon_dir) / f"{pid}.point").read_text().split()
        except (OSError, ValueError):
            return None, None
        return self._tokens.get(token), float(started)

    def inspect(self) -> list[WorkerProblem]:
        now = time.time()
        problems = []
        for beacon in Path(self._beacon_dir).glob("*.alive"):
            pid = int(beacon.stem)
            try:
                silent_s = now - beacon.stat().st_mtime
            except OSError:
                continue
            if not process_alive(pid):
                with contextlib.suppress(OSError):
                    beacon.unlink()
                continue
            future, started = self._running(pid)
            if silent_s > self.stall_after_s:
                problems.append(WorkerProblem(
                    "stalled", pid, future,
                    f"worker process {pid} stopped responding (no heartbeat for "
                    f"{silent_s:.0f} s > stall_after_s = {self.stall_after_s:g} s: stopped, "
                    "swapping or a stuck node); it was killed"))
            elif future is not None and started is not None and future in self._limits \
                    and now - started > self._limits[future]:
                problems.append(WorkerProblem(
                    "over-time", pid, future,
                    f"the point ran {now - started:.0f} s, past its time limit of "
                    f"{self._limits[future]:.0f} s (execution.point_time_limit_s; the default "
                    "is derived from the point's estimated cost); its worker was killed"))
            else:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                beacon.unlink()
        return problems

    def point_statuses(self) -> list[str]:
        lines = []
        for path in sorted(Path(self._beacon_dir).glob("*.status")):
            with contextlib.suppress(OSError):
                lines.append(path.read_text().strip())
        return [line for line in lines if line]

    def is_worker_loss(self, error: BaseException) -> bool:
        return isinstance(error, BrokenProcessPool)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._tokens.clear()
        self._limits.clear()
        self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._beacon_dir, ignore_errors=True)


class DaskSweepExecutor(SweepExecutor):
    """A Dask distributed cluster reached at `scheduler` ('tcp://host:8786', or a LocalCluster's
    address). Workers need krenorm installed; Dask itself re-runs a task whose worker died (up
    to distributed.scheduler.allowed-failures times) before reporting KilledWorker."""

    def __init__(self, scheduler: str, connect_timeout_s: float = 30.0,
                 scheduler_grace_s: float = 10.0):
        # Imported here for start-up time only: distributed costs ~1 s to import and most runs
        # use the local pool.
        from distributed import Client

        try:
            self._client = Client(scheduler, timeout=connect_timeout_s)
        except OSError as error:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler!r} ({error}); "
                             "start one (`dask scheduler`) or check --scheduler.") from error
        # pure=False: a retried point must run again, not return Dask's cached failure.
        self._executor = self._client.get_executor(pure=False)
        self.scheduler = scheduler
        self.scheduler_grace_s = scheduler_grace_s
        self._unreachable_since: float | None = None
        threads = sum(self._client.nthreads().values())
        self.capacity = max(1, 2 * threads)
        self.description = (f"Dask cluster at {scheduler} ({len(self._client.nthreads())} "
                            f"workers, {threads} threads)")

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        return self._executor.submit(function, *arguments)

    def is_worker_loss(self, error: BaseException) -> bool:
        from distributed.scheduler import KilledWorker  # start-up time, as in __init__

        return isinstance(error, KilledWorker)

    def inspect(self) -> list[WorkerProblem]:
        """Raise SchedulerLostError once the client has been without its scheduler for
        scheduler_grace_s (a short network blip reconnects by itself)."""
        if self._client.status == "running":
            self._unreachable_since = None
            return []
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if self._client.status in ("closed", "closing") or \
                now - self._unreachable_since > self.scheduler_grace_s:
            raise SchedulerLostError(
                f"lost the Dask scheduler at {self.scheduler} (client status "
                f"{self._client.status!r} for {now - self._unreachable_since:.0f} s)")
        return []

    def close(self) -> None:
        # After a scheduler loss the client is closed already; shutting down must not raise.
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False)
        with contextlib.suppress(Exception):
            self._client.close(timeout=5)


def make_executor(workers: int | None = None, scheduler: str | None = None,
                  threads_per_worker: int = 1, *, stall_after_s: float = 60.0,
                  scheduler_grace_s: float = 10.0) -> SweepExecutor:
    """Dask when a scheduler address is given; else a process pool of `workers` processes
    (default: cores // threads_per_worker), or the driver itself when workers = 0."""
    if scheduler is not None:
        if workers is not None:
            raise ValueError("give either --workers (local pool) or --scheduler (Dask), not "
                             "both; a Dask cluster's size is set where it is started.")
        return DaskSweepExecutor(scheduler, scheduler_grace_s=scheduler_grace_s)
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads_per_worker)
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 runs points in the driver), got {workers}.")
    if workers == 0:
        return InlineExecutor(threads_per_worker)
    return ProcessPoolSweepExecutor(workers, threads_per_worker, stall_after_s=stall_after_s)
