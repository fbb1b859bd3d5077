"""Run a sweep — `krenorm sweep CONFIG`, and `krenorm compare`, which is a fixed sweep: check
the data of every point, register the points in the results store, hand back claims of dead
drivers, skip finished points, run the rest through an executor with retries, and record each
result in its own transaction (docs/architecture.md "Scale", "One pipeline"; docs/sweeps.md).

Resume semantics: a point is 'done' exactly once. Killing the driver (or a worker) loses at most
the points in flight; the next `krenorm sweep` on the same store reruns exactly those (and the
failed ones), never a finished one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from krenorm.experiments.errors import ConfigError
from krenorm.experiments.executors import SweepExecutor, make_executor
from krenorm.experiments.runner import run_experiment
from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.store import Claim, ResultsStore
from krenorm.experiments.sweep_config import SweepConfig, load_sweep_config


@dataclass(frozen=True)
class SweepResult:
    """What one invocation did. skipped: already done before it started; completed: finished
    by it; failed: still failed after all tries; elsewhere: running in another live session;
    retries: extra tries it made; worker_losses: points in flight when a worker died."""

    name: str
    db: str
    executor: str
    total: int
    skipped: int
    completed: int
    failed: int
    elsewhere: int
    retries: int
    worker_losses: int
    reclaimed: int
    seconds: float

    @property
    def points_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "points_per_second": self.points_per_second}


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()


def _check_device(config: SweepConfig, scheduler: str | None) -> None:
    """A local run asking for CUDA must have it here; Dask workers are checked where they run
    (the point fails with the message of runner.resolve_device)."""
    if (config.execution.device == "cuda" and scheduler is None
            and not torch.cuda.is_available()):
        raise ConfigError("execution.device = 'cuda' but CUDA is not available on this machine; "
                          "use 'cpu' or 'auto'.")


class _Driver:
    """The submit/wait/record loop of one invocation (one store session)."""

    def __init__(self, config: SweepConfig, store: ResultsStore, executor: SweepExecutor,
                 session_id: str, heartbeat_every_s: float):
        self.config, self.store, self.executor = config, store, executor
        self.session_id = session_id
        self.heartbeat_every_s = heartbeat_every_s
        self.tries: collections.Counter[str] = collections.Counter()
        self.in_flight: dict[concurrent.futures.Future, tuple[ExperimentSpec, Claim]] = {}
        self.completed = self.failed = self.retries = self.worker_losses = self.elsewhere = 0

    def run(self, queue: collections.deque[ExperimentSpec], advance: Callable[[int], None]
            ) -> None:
        last_heartbeat = time.monotonic()
        while queue or self.in_flight:
            self._fill(queue)
            if not self.in_flight:
                continue
            finished, _ = concurrent.futures.wait(
                self.in_flight, timeout=self.heartbeat_every_s,
                return_when=concurrent.futures.FIRST_COMPLETED)
            if time.monotonic() - last_heartbeat >= self.heartbeat_every_s:
                self.store.heartbeat(self.session_id)
                last_heartbeat = time.monotonic()
            lost_worker = False
            for future in finished:
                spec, claim = self.in_flight.pop(future)
                lost_worker |= self._settle(future, spec, claim, queue, advance)
            if lost_worker:
                # A broken pool fails every future in flight; settle them all, then restart.
                concurrent.futures.wait(self.in_flight, timeout=60.0)
                for future in list(self.in_flight):
                    spec, claim = self.in_flight.pop(future)
                    self._settle(future, spec, claim, queue, advance)
                self.executor.restart()

    def _fill(self, queue: collections.deque[ExperimentSpec]) -> None:
        while queue and len(self.in_flight) < self.executor.capacity:
            spec = queue.popleft()
            claim = self.store.claim(spec.content_hash, self.session_id)
            if claim is None:  # finished meanwhile, or another live driver runs it
                if self.store.status(spec.content_hash) == "running":
                    self.elsewhere += 1
                continue
            try:
                future = self.executor.submit(run_experiment, spec,
                                              self.config.execution.device)
            except BaseException as error:
                # Not submitted: give the claim back (a pool that broke between two results
                # refuses new work; restart it and carry on).
                self.store.release(claim)
                if not self.executor.is_worker_loss(error):
                    raise
                queue.appendleft(spec)
                self.executor.restart()
                continue
            self.tries[spec.content_hash] += 1
            if self.tries[spec.content_hash] > 1:
                self.retries += 1
            self.in_flight[future] = (spec, claim)

    def _settle(self, future: concurrent.futures.Future, spec: ExperimentSpec, claim: Claim,
                queue: collections.deque[ExperimentSpec], advance: Callable[[int], None]) -> bool:
        """Record one future's result or failure; returns True when its worker died."""
        failure: BaseException | None = None
        if not future.done():  # its pool broke and never reported back on it
            future.cancel()
            failure = RuntimeError("the worker pool broke before this point finished")
            worker_loss = True
        else:
            try:
                outcome = future.result()
            except (Exception, concurrent.futures.CancelledError) as error:
                failure = error
            worker_loss = failure is not None and self.executor.is_worker_loss(failure)
        if failure is None:
            if self.store.record_result(claim, outcome.metrics, outcome.diagnostics,
                                        outcome.provenance, outcome.seconds):
                self.completed += 1
                advance(1)
            return False
        if worker_loss:
            self.worker_losses += 1
            message = (f"worker process died while this point was in flight (killed, or out "
                       f"of memory): {type(failure).__name__}: {failure}")
        else:
            message = _error_text(failure)
        self.store.record_failure(claim, message, "lost" if worker_loss else "failed")
        if self.tries[spec.content_hash] <= self.config.execution.retries:
            queue.append(spec)
        else:
            self.failed += 1
            advance(1)
        return worker_loss

    def release_all(self) -> None:
        for future, (_, claim) in list(self.in_flight.items()):
            future.cancel()
            self.store.release(claim)
        self.in_flight.clear()


def run_sweep(config: SweepConfig | str | Path, db: str | Path | None = None,
              workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              stale_after_s: float = 120.0, heartbeat_every_s: float = 5.0) -> SweepResult:
    """Run every point of a sweep not yet done in the store at `db` (default: the config's).

    config: a SweepConfig, or a TOML path; either way it is validated completely before any
    work, data included (each distinct data set is loaded once here and every architecture
    checked against it). workers / scheduler: see executors.make_executor. stale_after_s: a
    driver session silent this long is presumed dead and its claims are rerun (same-host
    sessions whose process is gone are reclaimed at once).
    """
    start = time.perf_counter()
    if not isinstance(config, SweepConfig):
        config = load_sweep_config(config, check_data=False)
    config.check_data()
    _check_device(config, scheduler)
    db_path = Path(db if db is not None else config.db)
    executor = make_executor(workers, scheduler, config.execution.threads_per_worker)
    with executor, ResultsStore(db_path) as store:
        store.register(config.name, config.points)
        reclaimed = store.reclaim_abandoned(stale_after_s)
        statuses = store.statuses(config.name)
        queue = collections.deque(spec for spec in config.points
                                  if statuses[spec.content_hash] != "done")
        skipped = len(config.points) - len(queue)
        session_id = store.open_session(config.name, executor.description)
        driver = _Driver(config, store, executor, session_id, heartbeat_every_s)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        reason = "interrupted"
        try:
            with Progress(*columns, disable=not progress) as bar:
                task = bar.add_task(f"{config.name} ({executor.description})",
                                    total=len(config.points), completed=skipped)
                driver.run(queue, lambda steps: bar.advance(task, steps))
            reason = "finished"
        finally:
            driver.release_all()
            store.close_session(session_id, reason)
    return SweepResult(config.name, str(db_path), executor.description, len(config.points),
                       skipped, driver.completed, driver.failed, driver.elsewhere,
                       driver.retries, driver.worker_losses, reclaimed,
                       time.perf_counter() - start)
