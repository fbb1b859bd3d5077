"""Run a sweep — `krenorm sweep CONFIG`, and `krenorm compare`, which is a fixed sweep: check
the data of every point, register the points in the results store, hand back claims of dead
drivers, skip finished points, run the rest through an executor with retries, and record each
result in its own transaction (docs/architecture.md "Scale", "One pipeline"; docs/sweeps.md).

Resume semantics: a point is 'done' exactly once. Killing the driver (or a worker) loses at most
the points in flight; the next `krenorm sweep` on the same store reruns exactly those (and the
failed ones), never a finished one.

Faults (docs/sweeps.md "Failure modes"): a point whose worker died or stalled is re-queued
without using its retry budget (`execution.retries` is for the point's own errors), and the
store's events table says why; a point past its time limit (point_limits.py) is stopped and
counts as a failed try; losing the Dask scheduler or Ctrl-C hands every claim back and raises
SweepInterruptedError, which says how to resume.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
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
from krenorm.experiments.executors import (
    SchedulerLostError,
    SweepExecutor,
    WorkerProblem,
    make_executor,
)
from krenorm.experiments.point_limits import point_time_limit
from krenorm.experiments.runner import TheoryEngine, run_experiment
from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.store import Claim, ResultsStore, SessionHeartbeat
from krenorm.experiments.store_errors import StoreError
from krenorm.experiments.sweep_config import SweepConfig, load_sweep_config

#: Exit codes of `krenorm sweep` / `krenorm compare` (docs/sweeps.md "Failure modes").
EXIT_OK, EXIT_FAILED_POINTS, EXIT_CONFIG, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4
#: Seconds between two looks at the workers (heartbeats, time limits, the scheduler).
POLL_S = 0.5


class SweepInterruptedError(RuntimeError):
    """The sweep stopped before its end (Dask scheduler lost, Ctrl-C). Finished points are
    recorded; the points in flight were handed back and run when the same command is given
    again. `resume` is that advice as a sentence."""

    def __init__(self, message: str, *, resume: str, done: int, left: int):
        super().__init__(f"{message}. {done} points are recorded, {left} left; {resume}")
        self.resume = resume
        self.done = done
        self.left = left


@dataclass(frozen=True)
class SweepResult:
    """What one invocation did. skipped: already done before it started; completed: finished
    by it; failed: still failed after all tries; elsewhere: running in another live session;
    retries: extra tries it made after a point's own error; worker_losses: points handed back
    because their worker died or stalled (re-queued, not charged); timeouts: points stopped at
    their time limit."""

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
    timeouts: int = 0

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
                 session_id: str):
        self.config, self.store, self.executor = config, store, executor
        self.session_id = session_id
        #: Tries charged to each point (its own errors and time-outs) and infrastructure losses.
        self.charged: collections.Counter[str] = collections.Counter()
        self.losses: collections.Counter[str] = collections.Counter()
        self.in_flight: dict[concurrent.futures.Future, tuple[ExperimentSpec, Claim]] = {}
        #: Futures stopped at their time limit, and why the last worker loss happened.
        self.over_time: dict[concurrent.futures.Future, str] = {}
        self.loss_reason: str | None = None
        self.completed = self.failed = self.retries = self.worker_losses = self.elsewhere = 0
        self.timeouts = 0
        execution = config.execution
        #: How the points' theory fits hold CNN/LCN kernel blocks (docs/scale.md §1, §5).
        self.engine = TheoryEngine(
            memory_limit=None if execution.memory_limit is None else int(execution.memory_limit),
            scheduler=execution.block_scheduler)

    def run(self, queue: collections.deque[ExperimentSpec], advance: Callable[[int], None],
            show_status: Callable[[list[str]], None] | None = None) -> None:
        """Run the queue; `show_status` gets the running points' status lines (a long theory
        solve's passes and ‖∇S‖) on every look at the workers."""
        while queue or self.in_flight:
            # Raises SchedulerLostError before we submit to nobody.
            self._note(self.executor.inspect())
            self._fill(queue)
            if not self.in_flight:
                continue
            finished, _ = concurrent.futures.wait(
                self.in_flight, timeout=POLL_S,
                return_when=concurrent.futures.FIRST_COMPLETED)
            if show_status is not None:
                show_status(self.executor.point_statuses())
            lost_worker = False
            for future in finished:  # results that came back are recorded before anything else
                spec, claim = self.in_flight.pop(future)
                lost_worker |= self._settle(future, spec, claim, queue, advance)
            # A worker inspect() kills shows up as a broken pool in a later round.
            self._note(self.executor.inspect())
            if lost_worker:
                # A broken pool fails every future in flight; settle them all, then restart.
                concurrent.futures.wait(self.in_flight, timeout=60.0)
                for future in list(self.in_flight):
                    spec, claim = self.in_flight.pop(future)
                    self._settle(future, spec, claim, queue, advance)
                self.executor.restart()
                self.loss_reason = None

    def _note(self, problems: list[WorkerProblem]) -> None:
        """Remember what the executor found (the worker it killed reports back as a loss)."""
        for problem in problems:
            if problem.kind == "over-time" and problem.future is not None:
                self.over_time[problem.future] = problem.detail
                self.loss_reason = (f"the pool restarted after worker {problem.pid} was stopped "
                                    "at another point's time limit")
            else:
                self.loss_reason = problem.detail

    def _fill(self, queue: collections.deque[ExperimentSpec]) -> None:
        while queue and len(self.in_flight) < self.executor.capacity:
            spec = queue.popleft()
            claim = self.store.claim(spec.content_hash, self.session_id)
            if claim is None:  # finished meanwhile, or another live driver runs it
                if self.store.status(spec.content_hash) == "running":
                    self.elsewhere += 1
                continue
            try:
                # The engine travels only when the config sets one: (spec, device) is the
                # runner's call otherwise.
                engine = () if self.engine == TheoryEngine() else (self.engine,)
                future = self.executor.submit(run_experiment, spec,
                                              self.config.execution.device, *engine)
            except BaseException as error:
                # Not submitted: give the claim back (a pool that broke between two results
                # refuses new work; restart it and carry on).
                self.store.release(claim)
                if not self.executor.is_worker_loss(error):
                    self.executor.inspect()  # a lost scheduler is said as such
                    raise
                queue.appendleft(spec)
                self.executor.restart()
                continue
            self.executor.set_time_limit(
                future, point_time_limit(spec, self.config.execution.point_time_limit_s))
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
            except concurrent.futures.CancelledError as error:
                failure, worker_loss = error, True  # cancelled by the executor, not the point
            except Exception as error:
                failure = error
                worker_loss = self.executor.is_worker_loss(failure)
        if failure is None:
            if self.store.record_result(claim, outcome.metrics, outcome.diagnostics,
                                        outcome.provenance, outcome.seconds):
                self.completed += 1
                advance(1)
            return False
        hash_ = spec.content_hash
        if future in self.over_time:
            message = self.over_time.pop(future)
            self.timeouts += 1
            self.store.add_event("timed-out", message, spec_hash=hash_,
                                 session_id=self.session_id)
            self._charge(spec, claim, f"TimeoutError: {message}", queue, advance)
        elif worker_loss:
            self.worker_losses += 1
            self.losses[hash_] += 1
            reason = self.loss_reason or (
                f"its worker process died while it was in flight (killed, or out of memory): "
                f"{type(failure).__name__}: {failure}")
            if self.losses[hash_] > self.config.execution.max_requeues:
                # Lost again and again: most likely the point itself kills its worker (memory).
                self.store.record_failure(
                    claim, f"lost {self.losses[hash_]} times with its worker (last: {reason}); "
                    "the point itself may be killing it (out of memory?); raise "
                    "execution.max_requeues to keep trying", "lost")
                self.failed += 1
                advance(1)
            else:
                self.store.requeue(claim, f"re-queued (not charged to retries): {reason}")
                queue.append(spec)
        else:
            self._charge(spec, claim, _error_text(failure), queue, advance)
        return worker_loss

    def _charge(self, spec: ExperimentSpec, claim: Claim, message: str,
                queue: collections.deque[ExperimentSpec], advance: Callable[[int], None]
                ) -> None:
        """A failed try of the point's own: retry while the budget lasts."""
        self.store.record_failure(claim, message, "failed")
        self.charged[spec.content_hash] += 1
        if self.charged[spec.content_hash] <= self.config.execution.retries:
            self.retries += 1
            queue.append(spec)
        else:
            self.failed += 1
            advance(1)

    def release_all(self) -> None:
        """Hand every claim in flight back unrun (the points stay resumable)."""
        for future, (_, claim) in list(self.in_flight.items()):
            with contextlib.suppress(Exception):  # a closed Dask client refuses cancel()
                future.cancel()
            self.store.release(claim)
        self.in_flight.clear()


def run_sweep(config: SweepConfig | str | Path, db: str | Path | None = None,
              workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              stale_after_s: float = 120.0, heartbeat_every_s: float = 5.0, *,
              extend: bool = False, max_points: int | None = None) -> SweepResult:
    """Run every point of a sweep not yet done in the store at `db` (default: the config's).

    config: a SweepConfig, or a TOML path; either way it is validated completely before any
    work, data included (each distinct data set is loaded once here and every architecture
    checked against it). workers / scheduler: see executors.make_executor. stale_after_s: a
    driver session silent this long is presumed dead and its claims are rerun (same-host
    sessions whose process is gone are reclaimed at once). extend: when the sweep's name is
    already in the store with other points, add this config's points to it (else
    store.SweepChangedError). max_points: grid size limit (see sweep_config.parse_sweep_config).

    Raises SweepInterruptedError (scheduler lost, Ctrl-C; points left resumable),
    store_errors.StoreError (the store cannot be written; recorded points intact), ConfigError.
    """
    start = time.perf_counter()
    if not isinstance(config, SweepConfig):
        config = load_sweep_config(config, check_data=False, max_points=max_points)
    config.check_data()
    _check_device(config, scheduler)
    db_path = Path(db if db is not None else config.db)
    executor = make_executor(workers, scheduler, config.execution.threads_per_worker,
                             stall_after_s=config.execution.stall_after_s)
    with executor, ResultsStore(db_path) as store:
        store.register(config.name, config.points, extend=extend)
        reclaimed = store.reclaim_abandoned(stale_after_s)
        driver, skipped = _drive(config, store, executor, heartbeat_every_s, progress,
                                 scheduler)
    return SweepResult(config.name, str(db_path), executor.description, len(config.points),
                       skipped, driver.completed, driver.failed, driver.elsewhere,
                       driver.retries, driver.worker_losses, reclaimed,
                       time.perf_counter() - start, driver.timeouts)


def _resume_advice(config: SweepConfig, scheduler: str | None) -> str:
    where = f" --scheduler {scheduler}" if scheduler else ""
    source = config.source or "CONFIG"
    return (f"run the same command again to resume (`krenorm sweep {source}{where}`, or on "
            "local workers with --workers N): finished points are kept and not rerun")


def _drive(config: SweepConfig, store: ResultsStore, executor: SweepExecutor,
           heartbeat_every_s: float, progress: bool, scheduler: str | None
           ) -> tuple[_Driver, int]:
    statuses = store.statuses(config.name)
    queue = collections.deque(spec for spec in config.points
                              if statuses[spec.content_hash] != "done")
    skipped = len(config.points) - len(queue)
    session_id = store.open_session(config.name, executor.description)
    driver = _Driver(config, store, executor, session_id)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    reason = "interrupted"
    stop: tuple[str, BaseException] | None = None
    try:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(f"{config.name} ({executor.description})",
                                total=len(config.points), completed=skipped, status="")
            # A long theory solve says how far it is (evaluations, passes, ‖∇S‖): points run in
            # this process report straight to the bar, pool workers through status files.
            executor.status_sink = lambda line: bar.update(task, status=line)
            with SessionHeartbeat(store.path, session_id, heartbeat_every_s):
                driver.run(queue, lambda steps: bar.advance(task, steps),
                           lambda lines: bar.update(task, status=" · ".join(lines[:2])))
        reason = "finished"
    except SchedulerLostError as error:
        reason, stop = "scheduler-lost", (str(error), error)
    except KeyboardInterrupt as error:
        reason, stop = "interrupted", ("interrupted (Ctrl-C)", error)
    except StoreError:
        # The store itself failed (disk full, read-only): handing claims back would fail the
        # same way; the next driver reclaims them (this process will be gone).
        reason = "store-error"
        with contextlib.suppress(StoreError):
            driver.release_all()
            store.close_session(session_id, "store-error")
        raise
    finally:
        if reason != "store-error":
            driver.release_all()
            store.close_session(session_id, reason)
    if stop is not None:
        message, cause = stop
        store.add_event("interrupted", message, sweep=config.name, session_id=session_id)
        counts = store.counts(config.name)
        raise SweepInterruptedError(message, resume=_resume_advice(config, scheduler),
                                    done=counts["done"],
                                    left=len(config.points) - counts["done"]) from cause
    return driver, skipped
