"""Where sweep points run (docs/architecture.md "Scale"): a concurrent.futures-style interface over
a local process pool (default), the driver process itself (workers = 0, for debugging) or a Dask
distributed cluster (`--scheduler tcp://host:8786`; on SLURM start the cluster with
dask-jobqueue, see docs/sweeps.md). Every executor hands out `concurrent.futures.Future`s, so
the sweep driver waits on all of them the same way.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.context
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from krenorm.experiments.processes import process_alive


def _exit_when_driver_dies(driver_pid: int, poll_s: float) -> None:
    while process_alive(driver_pid):
        time.sleep(poll_s)
    # The driver died (e.g. SIGKILL): nobody will read our results, and a resumed sweep reruns
    # whatever we were doing, so stop at once instead of lingering. (With the fork server the
    # driver is not our parent, and the fork server itself lives as long as its workers do, so
    # watching the parent would not do.)
    os._exit(1)


def _initialize_worker(threads: int, driver_pid: int) -> None:
    """Worker start-up: torch threads per worker (workers × threads ≤ cores avoids
    oversubscription) and a watchdog that ends the worker when the driver is gone."""
    torch.set_num_threads(threads)
    watchdog = threading.Thread(target=_exit_when_driver_dies, args=(driver_pid, 1.0),
                                daemon=True)
    watchdog.start()


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

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        raise NotImplementedError

    def is_worker_loss(self, error: BaseException) -> bool:
        return False

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
            future.set_result(function(*arguments))
        except Exception as error:  # the sweep records it as the point's failure
            future.set_exception(error)
        finally:
            torch.set_num_threads(previous)
        return future


class ProcessPoolSweepExecutor(SweepExecutor):
    """A local pool of `workers` processes (started by `_start_context`), each with
    `threads_per_worker` torch threads."""

    def __init__(self, workers: int, threads_per_worker: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1 for a process pool, got {workers}.")
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.capacity = 2 * workers  # one running and one queued per worker
        self.description = (f"process pool ({workers} worker{'s' if workers > 1 else ''}, "
                            f"{threads_per_worker} torch thread(s) each)")
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=_start_context(), initializer=_initialize_worker,
            initargs=(self.threads_per_worker, os.getpid()))

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        return self._pool.submit(function, *arguments)

    def is_worker_loss(self, error: BaseException) -> bool:
        return isinstance(error, BrokenProcessPool)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskSweepExecutor(SweepExecutor):
    """A Dask distributed cluster reached at `scheduler` ('tcp://host:8786', or a LocalCluster's
    address). Workers need krenorm installed; Dask itself re-runs a task whose worker died (up
    to distributed.scheduler.allowed-failures times) before reporting KilledWorker."""

    def __init__(self, scheduler: str, connect_timeout_s: float = 30.0):
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
        threads = sum(self._client.nthreads().values())
        self.capacity = max(1, 2 * threads)
        self.description = (f"Dask cluster at {scheduler} ({len(self._client.nthreads())} "
                            f"workers, {threads} threads)")

    def submit(self, function: Callable, *arguments: Any) -> concurrent.futures.Future:
        return self._executor.submit(function, *arguments)

    def is_worker_loss(self, error: BaseException) -> bool:
        from distributed.scheduler import KilledWorker  # start-up time, as in __init__

        return isinstance(error, KilledWorker)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._client.close()


def make_executor(workers: int | None = None, scheduler: str | None = None,
                  threads_per_worker: int = 1) -> SweepExecutor:
    """Dask when a scheduler address is given; else a process pool of `workers` processes
    (default: cores // threads_per_worker), or the driver itself when workers = 0."""
    if scheduler is not None:
        if workers is not None:
            raise ValueError("give either --workers (local pool) or --scheduler (Dask), not "
                             "both; a Dask cluster's size is set where it is started.")
        return DaskSweepExecutor(scheduler)
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads_per_worker)
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 runs points in the driver), got {workers}.")
    if workers == 0:
        return InlineExecutor(threads_per_worker)
    return ProcessPoolSweepExecutor(workers, threads_per_worker)
