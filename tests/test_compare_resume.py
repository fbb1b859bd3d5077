"""Kill a compare run mid-way — SIGKILL its driver — and rerun it: every point recorded exactly
once, and the same tables and report as a run that was never interrupted (docs/architecture.md "One
pipeline": a compare run is a fixed sweep; docs/sweeps.md "Resume semantics").

The driver runs as `python -m krenorm compare` in a subprocess with two pool workers; the
uninterrupted reference runs in this process (workers = 0). Both use one torch thread per
point; the theory's float64 sums may still round differently in another process (a few ULP,
measured ≤ 2e-16 relative), so table entries are compared to 1e-12 relative.
"""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from krenorm.experiments.compare import run_compare
from krenorm.experiments.config import load_config
from krenorm.experiments.processes import process_alive
from krenorm.experiments.store import ResultsStore

# 4 sampled networks (tiny chains) and 2 × 16 theory points (CNN/LCN with retuned priors,
# Np = 16 patches), ~0.1–0.3 s each on one thread: the kill lands mid-run.
CONFIG = """
name = "compare-resume"
retuned_priors = true
[data]
dataset = "local-teacher"
n_train = 24
n_test = 8
seed = 0
image_shape = [1, 12, 12]
mask = 3
stride = 3
[hyper]
temperature = 0.1
[[architectures]]
kind = "cnn"
mask = 3
stride = 3
network_widths = [4, 8]
[[architectures]]
kind = "lcn"
mask = 3
stride = 3
network_widths = [4, 8]
[theory]
widths = [2, 3, 5, 6, 10, 12, 16, 24, 32, 48, 64, 96, 128]
[networks]
n_replicas = 2
n_steps = 40
"""
N_POINTS = 4 + 2 * (13 + 2 + 1)


def _compare(config, output) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "krenorm", "compare", str(config), "--output-dir", str(output),
         "--workers", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _done(db) -> list:
    if not db.exists():
        return []
    with ResultsStore(db) as store:
        return store.records(status="done")


def _table(path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _same_entry(left: str, right: str) -> bool:
    try:
        return math.isclose(float(left), float(right), rel_tol=1e-12, abs_tol=1e-15)
    except ValueError:  # not a number: spec hash, names, empty cells
        return left == right


@pytest.mark.slow
def test_sigkill_compare_driver_then_resume(tmp_path):
    config = tmp_path / "compare.toml"
    config.write_text(CONFIG)
    output = tmp_path / "killed"
    db = output / "results.sqlite"
    driver = _compare(config, output)
    try:
        deadline = time.monotonic() + 180
        while len(_done(db)) < 4:
            if driver.poll() is not None:
                raise AssertionError(f"driver exited ({driver.returncode}) before 4 points:\n"
                                     f"{driver.stdout.read()}")
            assert time.monotonic() < deadline, "timed out waiting for 4 points"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        assert driver.returncode == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    # Pool workers notice their driver is gone and exit on their own.
    workers = {record.provenance["pid"] for record in _done(db)}
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in workers if process_alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"workers {orphans} outlived their driver"
    before = {record.spec_hash: record for record in _done(db)}
    assert 4 <= len(before) < N_POINTS
    assert not (output / "report.md").exists()  # killed before the report

    resumed = _compare(config, output)
    text, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, text
    assert (f"{N_POINTS - len(before)} points computed now, {len(before)} already in the store"
            in text)

    with ResultsStore(db) as store:
        records = store.records("compare-resume")
        attempts = store.attempts()
        sessions = [row[0] for row in store._connection.execute(
            "SELECT session_id FROM sessions ORDER BY started_at")]
    assert len(records) == N_POINTS and {r.status for r in records} == {"done"}
    done = [attempt.spec_hash for attempt in attempts if attempt.outcome == "done"]
    assert sorted(done) == sorted(record.spec_hash for record in records)  # each run once
    assert not [attempt for attempt in attempts if attempt.outcome == "rejected"]
    rerun = {attempt.spec_hash for attempt in attempts if attempt.session_id == sessions[-1]}
    assert not rerun & set(before)
    for record in records:
        if record.spec_hash in before:
            assert record.metrics == before[record.spec_hash].metrics

    # Same tables and report as a run that was never interrupted.
    reference = tmp_path / "reference"
    result = run_compare(load_config(config), reference, progress=False, workers=0)
    assert result.sweep.completed == N_POINTS
    assert (output / "report.md").read_text() == (reference / "report.md").read_text()
    killed, uninterrupted = _table(output / "results.csv"), _table(reference / "results.csv")
    assert [row["spec_hash"] for row in killed] == [row["spec_hash"] for row in uninterrupted]
    for left, right in zip(killed, uninterrupted, strict=True):
        assert left.keys() == right.keys()
        for key in left.keys() - {"seconds"}:
            assert _same_entry(left[key], right[key]), (left["spec_hash"], key)
        if left["network_loss"]:  # sampled numbers: bit-identical given the seeds
            assert left["network_loss"] == right["network_loss"]
