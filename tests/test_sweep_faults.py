"""Fault injection on sweeps (docs/sweeps.md "Failure modes"; issue "Reliability"): each test
reproduces one fault — a killed or stopped pool worker, a point past its time limit, a lost
Dask scheduler, Ctrl-C, a name reused for other points, a read-only / full / damaged store, a
bad sampler setting, a huge grid, a NaN in a result — and checks what the sweep does now.

Points are tiny: theory points of a 2-dimensional linear teacher (~10 ms) and, where a worker
must be hit while it runs a point, a 2-replica network of a few hundred steps (~1 s).
"""

import concurrent.futures
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.experiments import executors
from krenorm.experiments import sweep as sweep_module
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.executors import InlineExecutor, SchedulerLostError, WorkerProblem
from krenorm.experiments.runner import run_experiment
from krenorm.experiments.store import ResultsStore, SweepChangedError
from krenorm.experiments.store_errors import StoreError
from krenorm.experiments.sweep import SweepInterruptedError, run_sweep
from krenorm.experiments.sweep_config import count_points, parse_sweep_config

THEORY = {
    "name": "faults",
    "data": {"dataset": "linear-teacher", "n_train": 4, "n_test": 2,
             "seed": list(range(6)), "options": {"dimension": 2}},
    "hyper": {"width": [1, 2]},
    "architectures": [{"kind": "fc"}],
}


def _network(n_points: int, n_steps: int, **execution) -> dict:
    """n_points network points of ~n_steps/400 s each on one thread."""
    return {**THEORY, "name": "faults-net", "execution": {"retries": 0, **execution},
            "data": {**THEORY["data"], "seed": list(range(n_points))}, "hyper": {"width": 4},
            "theory": {"finite": False, "infinite": False},
            "network": {"n_replicas": 2, "n_steps": n_steps}}


class _Background:
    """run_sweep in a thread (the test thread injects the fault)."""

    def __init__(self, config, db, **options):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(config, db), kwargs=options,
                                       daemon=True)
        self.thread.start()

    def _run(self, config, db, **options):
        try:
            self.result = run_sweep(config, db=db, progress=False, **options)
        except BaseException as error:  # reported by join()
            self.error = error

    def join(self, timeout_s: float):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the sweep hung"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def beacons(tmp_path, monkeypatch):
    """The folder where pool workers announce the point they run (<pid>.point)."""
    folder = tmp_path / "beacons"
    folder.mkdir()
    real = executors.tempfile.mkdtemp

    def mkdtemp(**options):  # only the heartbeat folder (multiprocessing uses mkdtemp too)
        if options.get("prefix") == "krenorm-heartbeats-":
            folder.mkdir(exist_ok=True)
            return str(folder)
        return real(**options)

    monkeypatch.setattr(executors.tempfile, "mkdtemp", mkdtemp)
    return folder


def _running_worker(beacons: Path, timeout_s: float = 120.0) -> psutil.Process:
    """A pool worker that is running a point now."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for point in beacons.glob("*.point"):
            with contextlib.suppress(psutil.NoSuchProcess):
                return psutil.Process(int(point.stem))
        time.sleep(0.05)
    raise AssertionError("no pool worker started a point")


class _Flaky(InlineExecutor):
    """Inline execution whose first `lose` submissions come back as a lost worker (what a
    broken pool reports). With problem_kind, each such future stays pending until `inspect()`
    has reported it (as the real pool does: the worker is killed, then the pool breaks)."""

    def __init__(self, lose: int, problem_kind: str | None = None):
        super().__init__()
        self.lose, self.problem_kind, self.pending = lose, problem_kind, []

    def submit(self, function, *arguments):
        if self.lose > 0:
            self.lose -= 1
            future = concurrent.futures.Future()
            if self.problem_kind is None:
                future.set_exception(BrokenProcessPool("a worker died"))
            else:
                self.pending.append(future)
            return future
        return super().submit(function, *arguments)

    def is_worker_loss(self, error):
        return isinstance(error, BrokenProcessPool)

    def inspect(self):
        problems = [WorkerProblem(self.problem_kind, 4242, future, f"{self.problem_kind} for "
                                  "test") for future in self.pending]
        for future in self.pending:
            future.set_exception(BrokenProcessPool("killed by inspect"))
        self.pending = []
        return problems


def _exactly_once(db, n_points):
    with ResultsStore(db) as store:
        counts = store.counts()
        done_attempts = [a for a in store.attempts() if a.outcome == "done"]
        events = store.events()
    assert counts == {"pending": 0, "running": 0, "done": n_points, "failed": 0}
    assert len(done_attempts) == n_points
    assert len({a.spec_hash for a in done_attempts}) == n_points
    return events


# --- 1. a killed pool worker: re-queued, not charged ---------------------------------------


def test_lost_worker_requeues_points_without_charging_retries(tmp_path, monkeypatch):
    """Three submissions come back as a dead worker; with retries = 0 none of them fails."""
    monkeypatch.setattr(sweep_module, "make_executor", lambda *a, **k: _Flaky(3))
    config = parse_sweep_config({**THEORY, "execution": {"retries": 0}})
    db = tmp_path / "lost.sqlite"
    result = run_sweep(config, db=db, workers=0, progress=False)
    assert (result.completed, result.failed, result.worker_losses, result.retries) == \
        (12, 0, 3, 0)
    events = _exactly_once(db, 12)
    assert [event.kind for event in events] == ["requeued"] * 3
    assert all("not charged to retries" in event.detail and "worker process died"
               in event.detail for event in events)


def test_point_that_keeps_killing_its_worker_fails_after_max_requeues(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "make_executor", lambda *a, **k: _Flaky(10**6))
    config = parse_sweep_config({**THEORY, "data": {**THEORY["data"], "seed": 0},
                                 "hyper": {"width": 1}, "execution": {"max_requeues": 2}})
    result = run_sweep(config, db=tmp_path / "oom.sqlite", workers=0, progress=False)
    assert (result.failed, result.worker_losses) == (1, 3)
    with ResultsStore(tmp_path / "oom.sqlite") as store:
        assert "lost 3 times with its worker" in store.records(status="failed")[0].error


@pytest.mark.slow
def test_killed_pool_worker_requeues_its_points_without_using_retries(tmp_path, beacons):
    config = parse_sweep_config(_network(6, 400))  # retries = 0: any charge would fail a point
    db = tmp_path / "kill.sqlite"
    run = _Background(config, db, workers=2)
    _running_worker(beacons).send_signal(signal.SIGKILL)
    result = run.join(180)
    assert result.failed == 0 and result.completed == 6 and result.worker_losses >= 1
    events = _exactly_once(db, 6)
    requeued = [event for event in events if event.kind == "requeued"]
    assert requeued and all("not charged to retries" in event.detail for event in requeued)


# --- 2. a stopped worker and a point past its time limit -------------------------------------


def test_stalled_worker_requeues_and_over_time_point_is_charged(tmp_path, monkeypatch):
    """What the driver does with inspect()'s findings: a stalled worker's points are re-queued
    with the reason; a point stopped at its limit is a failed try with the message."""
    monkeypatch.setattr(sweep_module, "make_executor", lambda *a, **k: _Flaky(1, "stalled"))
    config = parse_sweep_config({**THEORY, "execution": {"retries": 0}})
    result = run_sweep(config, db=tmp_path / "stall.sqlite", workers=0, progress=False)
    assert (result.completed, result.failed) == (12, 0)
    events = _exactly_once(tmp_path / "stall.sqlite", 12)
    assert [event.detail for event in events] == ["re-queued (not charged to retries): "
                                                  "stalled for test"]
    monkeypatch.setattr(sweep_module, "make_executor", lambda *a, **k: _Flaky(1, "over-time"))
    result = run_sweep(config, db=tmp_path / "limit.sqlite", workers=0, progress=False)
    assert (result.completed, result.failed, result.timeouts) == (11, 1, 1)
    with ResultsStore(tmp_path / "limit.sqlite") as store:
        assert store.records(status="failed")[0].error == "TimeoutError: over-time for test"
        assert [event.kind for event in store.events()] == ["timed-out"]


@pytest.mark.slow
def test_stopped_worker_is_detected_killed_and_its_points_requeued(tmp_path, beacons):
    config = parse_sweep_config(_network(4, 400, stall_after_s=3.0))
    db = tmp_path / "stop.sqlite"
    run = _Background(config, db, workers=2)
    victim = _running_worker(beacons)
    victim.send_signal(signal.SIGSTOP)
    try:
        result = run.join(180)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGCONT)
    assert result.failed == 0 and result.worker_losses >= 1
    events = _exactly_once(db, 4)
    assert any(f"worker process {victim.pid} stopped responding" in event.detail
               for event in events if event.kind == "requeued")


@pytest.mark.slow
def test_point_past_its_time_limit_is_stopped_and_failed_with_a_message(tmp_path):
    # A point far longer than its 1.5 s limit on any machine (2·10⁵ steps; 2000 steps finished
    # inside the limit on a quiet machine), no retry: stopped, failed, the reason stored.
    config = parse_sweep_config(_network(1, 200_000, point_time_limit_s=1.5))
    db = tmp_path / "limit.sqlite"
    result = run_sweep(config, db=db, workers=1, progress=False)
    assert (result.failed, result.timeouts) == (1, 1)
    with ResultsStore(db) as store:
        [record] = store.records(status="failed")
        assert "past its time limit of 2 s" in record.error  # 1.5 s, printed rounded
        assert [event.kind for event in store.events()] == ["timed-out"]


def test_default_time_limit_grows_with_the_point():
    from krenorm.experiments.point_limits import MIN_LIMIT_S, point_time_limit

    small = parse_sweep_config(_network(1, 400)).points[0]
    big = parse_sweep_config({**_network(1, 10**7), "data": {**THEORY["data"], "seed": 0,
                                                             "n_train": 2000}}).points[0]
    assert point_time_limit(small) == MIN_LIMIT_S
    assert point_time_limit(big) > 10 * MIN_LIMIT_S
    assert point_time_limit(big, 7.0) == 7.0


# --- 3. scheduler loss and Ctrl-C: stop cleanly, points resumable ----------------------------


class _SchedulerDiesAfter(InlineExecutor):
    """Inline execution whose 'scheduler' goes away after `points` submissions."""

    def __init__(self, points: int):
        super().__init__()
        self.left = points

    def submit(self, function, *arguments):
        self.left -= 1
        return super().submit(function, *arguments)

    def inspect(self):
        if self.left <= 0:
            raise SchedulerLostError("lost the Dask scheduler at tcp://test:8786")
        return []


def test_scheduler_loss_stops_with_resume_advice_and_keeps_points_resumable(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(sweep_module, "make_executor", lambda *a, **k: _SchedulerDiesAfter(5))
    config = parse_sweep_config(THEORY)
    db = tmp_path / "lost.sqlite"
    with pytest.raises(SweepInterruptedError, match=r"lost the Dask scheduler.*5 points are "
                                                    r"recorded, 7 left; run the same command"):
        run_sweep(config, db=db, workers=0, progress=False)
    with ResultsStore(db) as store:
        assert store.counts() == {"pending": 7, "running": 0, "done": 5, "failed": 0}
        assert [event.kind for event in store.events()] == ["interrupted"]
    monkeypatch.undo()
    resumed = run_sweep(config, db=db, workers=0, progress=False)
    assert (resumed.skipped, resumed.completed, resumed.failed) == (5, 7, 0)


def test_ctrl_c_hands_points_back_not_as_failures(tmp_path, monkeypatch):
    calls = []

    def interrupted_after_three(spec, device):
        calls.append(spec)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return run_experiment(spec, device)

    monkeypatch.setattr(sweep_module, "run_experiment", interrupted_after_three)
    db = tmp_path / "ctrl_c.sqlite"
    with pytest.raises(SweepInterruptedError, match="Ctrl-C"):
        run_sweep(parse_sweep_config(THEORY), db=db, workers=0, progress=False)
    with ResultsStore(db) as store:
        assert store.counts() == {"pending": 9, "running": 0, "done": 3, "failed": 0}


_CLUSTER = textwrap.dedent("""
    from distributed import LocalCluster
    import time
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           protocol="tcp", dashboard_address=None)
    print(cluster.scheduler_address, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_killed_dask_scheduler_of_a_local_cluster_stops_the_driver(tmp_path):
    """The real thing: SIGKILL the process holding a LocalCluster's scheduler mid-sweep; the
    driver (`krenorm sweep --scheduler …`) exits 4 with resume advice, nothing failed."""
    pytest.importorskip("distributed")
    config_path, db = tmp_path / "dask.toml", tmp_path / "dask.sqlite"
    config_path.write_text(_toml({**THEORY, "name": "dask-loss", "hyper": {"width": 4},
                                  "data": {**THEORY["data"], "seed": list(range(12))}})
                           + "[execution]\nretries = 0\n[theory]\nfinite = false\n"
                           "infinite = false\n[network]\nn_replicas = 2\nn_steps = 400\n")
    cluster = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        address = cluster.stdout.readline().strip()
        driver = subprocess.Popen(
            [sys.executable, "-m", "krenorm", "sweep", str(config_path), "--db", str(db),
             "--scheduler", address, "--no-progress"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            # The driver may have created the file but not yet its tables: poll again then.
            with contextlib.suppress(StoreError):
                if db.exists():
                    with ResultsStore(db, read_only=True) as store:
                        if store.counts()["done"] >= 1:
                            break
            time.sleep(0.2)
        os.killpg(cluster.pid, signal.SIGKILL)
        output, _ = driver.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGKILL)
    assert driver.returncode == 4, output
    assert "lost the Dask scheduler" in output and "resume" in output
    with ResultsStore(db) as store:
        counts = store.counts()
    assert counts["failed"] == counts["running"] == 0 and counts["done"] >= 1


# --- 4. a sweep is its content ---------------------------------------------------------------


def test_name_reused_with_other_points_is_refused_unless_extended(tmp_path):
    db = tmp_path / "same_name.sqlite"
    first = parse_sweep_config(THEORY)
    run_sweep(first, db=db, workers=0, progress=False)
    edited = parse_sweep_config({**THEORY, "hyper": {"width": [2, 4]}})
    with pytest.raises(SweepChangedError, match=r"holds other points.*6 new, 6 not in the "
                                                r"config.*new `name`.*--extend"):
        run_sweep(edited, db=db, workers=0, progress=False)
    with ResultsStore(db) as store:  # nothing was merged
        assert store.counts("faults")["done"] == 12 and len(store.statuses("faults")) == 12
    renamed = parse_sweep_config({**THEORY, "name": "faults-4", "hyper": {"width": [2, 4]}})
    assert run_sweep(renamed, db=db, workers=0, progress=False).skipped == 6  # shared points
    extended = run_sweep(edited, db=db, workers=0, progress=False, extend=True)
    assert (extended.skipped, extended.completed) == (12, 0)
    with ResultsStore(db) as store:
        assert len(store.statuses("faults")) == 18
        assert [event.kind for event in store.events()] == ["extended"]
    # After extending, the sweep is the union: the original config alone is other content.
    with pytest.raises(SweepChangedError, match="0 new, 6 not in the config"):
        run_sweep(first, db=db, workers=0, progress=False)


def test_same_content_resumes_and_cli_says_extend(tmp_path):
    db = tmp_path / "cli.sqlite"
    config = tmp_path / "c.toml"
    config.write_text(_toml(THEORY))
    run_sweep(str(config), db=db, workers=0, progress=False)
    assert run_sweep(str(config), db=db, workers=0, progress=False).skipped == 12
    config.write_text(_toml({**THEORY, "hyper": {"width": [3]}}))
    cli = _cli("sweep", str(config), "--db", str(db), "--workers", "0", "--no-progress")
    assert cli.exit_code == 2 and "--extend" in cli.stderr


def _toml(raw: dict) -> str:
    data, hyper = raw["data"], raw["hyper"]
    return textwrap.dedent(f"""
        name = "{raw['name']}"
        [data]
        dataset = "{data['dataset']}"
        n_train = {data['n_train']}
        n_test = {data['n_test']}
        seed = {data['seed']}
        options = {{ dimension = 2 }}
        [hyper]
        width = {hyper['width']}
        [[architectures]]
        kind = "fc"
    """)


def _cli(*arguments):
    """The krenorm command in this process (stderr kept apart from stdout)."""
    return CliRunner().invoke(app, list(arguments))


# --- 5. storage faults ----------------------------------------------------------------------


def _finished_store(directory: Path) -> Path:
    db = directory / "done.sqlite"
    run_sweep(parse_sweep_config(THEORY), db=db, workers=0, progress=False)
    return db


_FILL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    from krenorm.experiments.store import ResultsStore
    from krenorm.experiments.store_errors import StoreError
    db = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    store = ResultsStore(db)
    largest = max(os.path.getsize(path) for path in (db, db + "-wal") if os.path.exists(path))
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 50_000, largest + 50_000))
    try:
        for _ in range(20):  # 4 MB of events: past the limit
            store.add_event("requeued", "x" * 200_000)
    except StoreError as error:
        print("STORE-ERROR", error.kind, error, flush=True)
        sys.exit(3)
    print("NO ERROR")
""")


def test_disk_full_names_the_file_and_keeps_recorded_points(tmp_path):
    db = _finished_store(tmp_path)
    filled = subprocess.run([sys.executable, "-c", _FILL_DISK, str(db)], capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert filled.returncode == 3, filled.stdout + filled.stderr
    assert "STORE-ERROR disk-full" in filled.stdout and str(db) in filled.stdout
    assert "Free space or move the store" in filled.stdout
    with ResultsStore(db) as store:
        assert store.counts()["done"] == 12
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupted_store_is_named_with_a_remedy(tmp_path):
    db = tmp_path / "bad.sqlite"
    db.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"bad\.sqlite.*damaged.*\.recover") as caught:
        ResultsStore(db)
    assert caught.value.kind == "corrupted"
    with pytest.raises(StoreError, match=r"bad\.sqlite"):
        ResultsStore(db, read_only=True)


@contextlib.contextmanager
def _read_only(path: Path):
    """Make a file unwritable for this user: chmod, or for root (whom permissions do not
    bind) the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_store_is_reported_and_refuses_writes_with_a_message(tmp_path):
    """`krenorm report` works on a store the user cannot write; `krenorm sweep` on it exits 3
    with a message naming the file; the recorded points stay."""
    db = _finished_store(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(_toml({**THEORY, "name": "more", "hyper": {"width": 3}}))
    with _read_only(db):
        report = _cli("report", str(db), "--out", str(tmp_path / "out"))
        assert report.exit_code == 0, report.stdout + report.stderr
        assert (tmp_path / "out" / "report.md").is_file()
        sweep = _cli("sweep", str(config), "--db", str(db), "--workers", "0", "--no-progress")
        assert sweep.exit_code == 3, sweep.stdout + sweep.stderr
        assert str(db) in sweep.stderr and "read-only" in sweep.stderr
        assert "Traceback" not in sweep.stderr
        with ResultsStore(db, read_only=True) as store:
            assert store.counts()["done"] == 12
            with pytest.raises(StoreError, match="opened read-only"):
                store.add_event("requeued", "x")


def test_report_opens_the_store_read_only(tmp_path):
    db = _finished_store(tmp_path)
    before = db.read_bytes()
    with ResultsStore(db, read_only=True) as store:
        assert store.counts()["done"] == 12 and len(store.records(status="done")) == 12
    assert db.read_bytes() == before
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# --- 8. sampler settings with the config; 9. huge grids --------------------------------------


@pytest.mark.parametrize(("network", "message"), [
    ("n_steps = 1", r"network\.n_steps must be an integer ≥ 2"),
    ("n_steps = 10\nburn_in = 10", r"network\.burn_in must be smaller than n_steps"),
    ("n_steps = [100, 10]\nburn_in = 50", r"network\.burn_in must be smaller"),
])
def test_sampler_settings_are_refused_before_any_work(tmp_path, network, message):
    config = tmp_path / "net.toml"
    config.write_text(_toml(THEORY) + "[network]\n" + network + "\n")
    with pytest.raises(ConfigError, match=message):
        run_sweep(str(config), db=tmp_path / "never.sqlite", workers=0)
    assert not (tmp_path / "never.sqlite").exists()


def test_huge_grid_is_counted_and_refused_before_expansion():
    raw = {**THEORY, "data": {**THEORY["data"], "seed": list(range(1000))},
           "hyper": {"width": list(range(1, 1001))}}
    assert count_points(raw)[0] == 10**6
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"1,000,000 points \(data\.seed 1000 × hyper\.width "
                                          r"1000\), more than the limit of 100,000.*max_points"):
        parse_sweep_config(raw)
    assert time.perf_counter() - start < 1.0
    small = {**THEORY, "execution": {"max_points": 5}}
    with pytest.raises(ConfigError, match="12 points"):
        parse_sweep_config(small)
    assert len(parse_sweep_config(small, max_points=12).points) == 12


# --- 10. non-finite numbers in a result ------------------------------------------------------


def test_nan_in_a_result_keeps_every_json_column_valid(tmp_path):
    db = _finished_store(tmp_path)
    with ResultsStore(db) as store:
        points = parse_sweep_config({**THEORY, "name": "nan", "data": {**THEORY["data"],
                                                                       "seed": 99}}).points
        store.register("nan", points)
        session = store.open_session("nan", "test")
        claim = store.claim(points[0].content_hash, session)
        assert store.record_result(claim, {"theory.test_loss": math.nan, "x": math.inf},
                                   {"trace": [1.0, -math.inf]}, {}, 0.1)
        record = store.records("nan")[0]
        assert math.isnan(record.metrics["theory.test_loss"]) and record.metrics["x"] == math.inf
        assert record.diagnostics["trace"] == [1.0, -math.inf]
        assert set(record.non_finite) == {"metrics/theory.test_loss", "metrics/x",
                                          "diagnostics/trace/1"}
    connection = sqlite3.connect(db)
    values = connection.execute("SELECT json_extract(metrics_json, '$.\"theory.test_loss\"') "
                                "FROM experiments WHERE status = 'done'").fetchall()
    assert len(values) == 13 and values.count((None,)) == 1
    assert connection.execute("SELECT COUNT(*) FROM experiments WHERE status = 'done' AND "
                              "(NOT json_valid(metrics_json) OR NOT json_valid("
                              "diagnostics_json))").fetchone() == (0,)
    flags = json.loads(connection.execute("SELECT non_finite_json FROM experiments WHERE "
                                          "non_finite_json IS NOT NULL").fetchone()[0])
    assert flags["metrics"] == [[["theory.test_loss"], "nan"], [["x"], "inf"]]


def test_disk_full_during_a_sweep_exits_3_naming_the_file(tmp_path, monkeypatch):
    """SQLite's 'database or disk is full' on the 4th result: `krenorm sweep` exits 3 with the
    file and the remedy; the 3 results before are kept, nothing is marked failed."""
    from krenorm.experiments import store as store_module

    original = ResultsStore.record_result.__wrapped__
    recorded = []

    def record_until_full(self, claim, *arguments):
        if len(recorded) == 3:
            raise sqlite3.OperationalError("database or disk is full")
        recorded.append(claim.spec_hash)
        return original(self, claim, *arguments)

    monkeypatch.setattr(ResultsStore, "record_result",
                        store_module._guarded("recording a result")(record_until_full))
    db, config = tmp_path / "full.sqlite", tmp_path / "c.toml"
    config.write_text(_toml(THEORY))
    cli = _cli("sweep", str(config), "--db", str(db), "--workers", "0", "--no-progress")
    assert cli.exit_code == 3, cli.stdout + cli.stderr
    assert f"results store {db}: recording a result failed" in cli.stderr.replace("\n", "")
    assert "Free space or move the store" in cli.stderr.replace("\n", " ")
    monkeypatch.undo()
    with ResultsStore(db) as store:
        assert store.counts() == {"pending": 9, "running": 0, "done": 3, "failed": 0}


def _bare(cls, **attributes):
    """An executor object without its pool or client (for its inspect() logic alone)."""
    executor = object.__new__(cls)
    executor.__dict__.update(attributes)
    return executor


def test_pool_inspect_kills_a_silent_worker_and_one_past_its_limit(tmp_path):
    """inspect() on real processes standing in for workers: one whose heartbeat stopped 10 s
    ago (stall_after_s = 3) and one running a point for 5 s with a 1 s limit; both are killed
    and reported; a beating, idle one is left alone."""
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    silent, slow, healthy = sleepers
    now = time.time()
    for process in sleepers:
        (tmp_path / f"{process.pid}.alive").touch()
    os.utime(tmp_path / f"{silent.pid}.alive", (now - 10, now - 10))
    point = concurrent.futures.Future()
    (tmp_path / f"{slow.pid}.point").write_text(f"token {now - 5!r}")
    executor = _bare(executors.ProcessPoolSweepExecutor, _beacon_dir=str(tmp_path),
                     stall_after_s=3.0, _tokens={"token": point}, _limits={point: 1.0})
    try:
        problems = {problem.pid: problem for problem in executor.inspect()}
        assert set(problems) == {silent.pid, slow.pid}
        assert problems[silent.pid].kind == "stalled" and problems[silent.pid].future is None
        assert "stopped responding (no heartbeat for 10 s" in problems[silent.pid].detail
        assert problems[slow.pid].kind == "over-time" and problems[slow.pid].future is point
        assert silent.wait(5) == -signal.SIGKILL and slow.wait(5) == -signal.SIGKILL
        assert healthy.poll() is None
    finally:
        for process in sleepers:
            process.kill()
            process.wait()


def test_dask_inspect_says_when_the_scheduler_is_gone():
    from types import SimpleNamespace

    client = SimpleNamespace(status="running")
    executor = _bare(executors.DaskSweepExecutor, _client=client, scheduler="tcp://head:8786",
                     scheduler_grace_s=0.3, _unreachable_since=None)
    assert executor.inspect() == []
    client.status = "connecting"  # a blip: tolerated for scheduler_grace_s
    assert executor.inspect() == []
    time.sleep(0.4)
    with pytest.raises(SchedulerLostError, match="lost the Dask scheduler at tcp://head:8786"):
        executor.inspect()
    client.status = "closed"
    executor._unreachable_since = None
    with pytest.raises(SchedulerLostError, match="'closed'"):
        executor.inspect()
