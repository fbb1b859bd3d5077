"""Kill a sweep mid-run — SIGKILL one worker, then the driver — and resume it: no point lost,
none run twice (docs/architecture.md "Scale"; docs/sweeps.md "Resume semantics").

The driver runs as `python -m krenorm sweep` in a subprocess; worker process ids come from the
provenance of the points they finished. Executions are counted from the store's attempt log:
every run of a point is preceded by a claim (one attempt row), so "run twice" would show up as a
second 'done' attempt or as an attempt of the resumed session on a point already finished.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from krenorm.experiments.processes import process_alive
from krenorm.experiments.store import ResultsStore

# 48 CNN theory points (Np = 16 patches) of ~0.1–0.3 s each on one thread: long enough that
# the kills land mid-run on 2 workers, short enough for the test budget.
CONFIG = """
name = "resume"
[execution]
retries = 3
[data]
dataset = "local-teacher"
n_train = [24, 32]
n_test = 8
seed = [0, 1, 2, 3]
options = { image_shape = [1, 12, 12], mask = 3, stride = 3 }
[hyper]
width = [4, 8, 16, 32, 64, 128]
temperature = 0.1
[theory]
infinite = false
[[architectures]]
kind = "cnn"
mask = 3
stride = 3
"""
N_POINTS = 48


def _sweep(config, db) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "krenorm", "sweep", str(config), "--db", str(db), "--workers",
         "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, what: str, driver: subprocess.Popen, timeout_s: float = 120.0):
    """Poll the store until condition() holds; fail if the driver exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver.poll() is not None:
            raise AssertionError(f"driver exited ({driver.returncode}) before {what}:\n"
                                 f"{driver.stdout.read()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _done(db) -> list:
    with ResultsStore(db) as store:
        return store.records(status="done")


@pytest.mark.slow
def test_sigkill_worker_then_driver_then_resume(tmp_path):
    config, db = tmp_path / "resume.toml", tmp_path / "resume.sqlite"
    config.write_text(CONFIG)
    driver = _sweep(config, db)
    try:
        # 1. Once a few points are recorded, SIGKILL a worker that finished one.
        first = _wait_for(lambda: len(done := _done(db)) >= 3 and done, "3 points", driver)
        victim = first[0].provenance["pid"]
        assert victim != driver.pid
        os.kill(victim, signal.SIGKILL)
        # 2. The driver notices the dead worker, records the points in flight as lost, restarts
        # its pool and goes on; once it has finished 3 more points, SIGKILL the driver.
        def recovered():
            with ResultsStore(db) as store:
                lost = [a for a in store.attempts() if a.outcome == "lost"]
                done = store.records(status="done")
            return lost and len(done) >= len(first) + 3 and done

        recovered_records = _wait_for(recovered, "recovery from the dead worker", driver)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        assert driver.returncode == -signal.SIGKILL  # it was killed mid-run, not finished
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    # Workers notice their driver is gone and exit on their own (parent-death watchdog).
    workers = {r.provenance["pid"] for r in _done(db)} - {victim}
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in workers if process_alive(pid)]
    for pid in orphans:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"workers {orphans} outlived their driver"

    with ResultsStore(db) as store:
        before = {r.spec_hash: r for r in store.records(status="done")}
        running_at_kill = store.counts()["running"]
    assert len(before) >= len(recovered_records) and len(before) < N_POINTS
    assert running_at_kill >= 1  # claims of the dead driver, to be handed back

    # 3. Resume: only the unfinished points run; finished ones are skipped untouched.
    resumed = _sweep(config, db)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"{N_POINTS - len(before)} finished now, {len(before)} already done" in output

    with ResultsStore(db) as store:
        records = store.records("resume")
        attempts = store.attempts()
        sessions = [row[0] for row in store._connection.execute(
            "SELECT session_id FROM sessions ORDER BY started_at")]
    assert len(records) == N_POINTS and {r.status for r in records} == {"done"}  # none lost
    done_attempts = [a.spec_hash for a in attempts if a.outcome == "done"]
    assert sorted(done_attempts) == sorted(r.spec_hash for r in records)  # each run to the end once
    assert not [a for a in attempts if a.outcome == "rejected"]
    assert {a.outcome for a in attempts} <= {"done", "lost", "abandoned"}
    assert sum(a.outcome == "abandoned" for a in attempts) == running_at_kill
    resume_session = sessions[-1]
    rerun = {a.spec_hash for a in attempts if a.session_id == resume_session}
    assert not rerun & set(before)  # the resumed sweep never touched a finished point
    for record in records:
        if record.spec_hash in before:  # recorded once, unchanged by the resume
            assert record.finished_at == before[record.spec_hash].finished_at
            assert record.metrics == before[record.spec_hash].metrics
