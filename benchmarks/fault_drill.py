"""Fault-injection drill for sweeps (docs/sweeps.md "Failure modes").

Runs `krenorm sweep` on a sweep of tiny points (default 48: 2-replica networks of 150 sampler
steps on a 2-dimensional linear teacher, ≈ 0.3 s each) and SIGKILLs, at random moments, either
the driver (then starts it again, as a user resuming would) or one of its pool workers (the
driver carries on), `--kills` times. Then lets a last driver finish and reads the store:

    points done exactly once / lost / duplicated / failed

'done exactly once' counts points with status 'done' and exactly one accepted ('done')
attempt; 'duplicated' points with more than one accepted attempt; 'lost' points not done;
'failed' points whose status is 'failed'. All but the first must be zero: worker losses are
re-queued without using the retry budget (execution.retries = 0 here, so any charge would show
as a failure) and a killed driver's claims are handed back by the next one.

    python benchmarks/fault_drill.py [--points 48] [--kills 12] [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from krenorm.experiments.store import ResultsStore

CONFIG = """
name = "fault-drill"
[execution]
retries = 0
[data]
dataset = "linear-teacher"
n_train = 4
n_test = 2
seed = {seeds}
options = {{ dimension = 2 }}
[hyper]
width = 4
[theory]
finite = false
infinite = false
[network]
n_replicas = 2
n_steps = 150
[[architectures]]
kind = "fc"
"""


def _driver(config: Path, db: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "krenorm", "sweep", str(config), "--db", str(db), "--workers",
         str(workers), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)


def _workers(driver: subprocess.Popen) -> list[psutil.Process]:
    """Pool workers of a driver: children of its fork server (grandchildren of the driver)."""
    try:
        return [child for child in psutil.Process(driver.pid).children(recursive=True)
                if child.ppid() != driver.pid]
    except psutil.NoSuchProcess:
        return []


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    with ResultsStore(db, read_only=True) as store:
        return store.counts()["done"]


def _cleanup(sessions: list[int]) -> None:
    """Orphans of killed drivers (their fork servers) — each driver had its own session."""
    for session in sessions:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)


def drill(points: int, kills: int, workers: int, seed: int, directory: Path) -> dict:
    rng = random.Random(seed)
    config, db = directory / "drill.toml", directory / "drill.sqlite"
    config.write_text(CONFIG.format(seeds=list(range(points))))
    sessions: list[int] = []
    driver = _driver(config, db, workers)
    sessions.append(driver.pid)
    # At least a third of each kind, the rest at random.
    kinds = (["driver"] * (kills // 3) + ["worker"] * (kills // 3)
             + [rng.choice(["driver", "worker"]) for _ in range(kills - 2 * (kills // 3))])
    rng.shuffle(kinds)
    done_kills = {"driver": 0, "worker": 0}
    start = time.monotonic()
    for kind in kinds:
        if _done(db) >= points:
            print("the sweep finished before all kills were made")
            break
        if kind == "worker":
            deadline = time.monotonic() + 60
            while not (candidates := _workers(driver)) and time.monotonic() < deadline:
                if driver.poll() is not None:
                    driver = _driver(config, db, workers)
                    sessions.append(driver.pid)
                time.sleep(0.1)
            time.sleep(rng.uniform(0.5, 2.0))
            candidates = _workers(driver)
            if not candidates:
                continue
            victim = rng.choice(candidates)
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        else:
            time.sleep(rng.uniform(1.0, 8.0))
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            driver = _driver(config, db, workers)
            sessions.append(driver.pid)
        done_kills[kind] += 1
        print(f"{time.monotonic() - start:6.1f} s  SIGKILL {kind:6}  done so far: {_done(db)}",
              flush=True)
    output, _ = driver.communicate(timeout=900)
    _cleanup(sessions)
    with ResultsStore(db, read_only=True) as store:
        records = store.records("fault-drill")
        accepted: dict[str, int] = {}
        for attempt in store.attempts():
            if attempt.outcome == "done":
                accepted[attempt.spec_hash] = accepted.get(attempt.spec_hash, 0) + 1
        events = store.events()
        attempts = store.attempts()
    done = [record for record in records if record.status == "done"]
    return {
        "points": points, "driver_kills": done_kills["driver"],
        "worker_kills": done_kills["worker"], "last_exit_code": driver.returncode,
        "done_exactly_once": sum(1 for record in done if accepted.get(record.spec_hash) == 1),
        "lost": sum(1 for record in records if record.status != "done"),
        "duplicated": sum(1 for count in accepted.values() if count > 1),
        "failed": sum(1 for record in records if record.status == "failed"),
        "attempts": len(attempts),
        "requeued_after_worker_loss": sum(1 for event in events if event.kind == "requeued"),
        "reclaimed_from_dead_drivers": sum(1 for a in attempts if a.outcome == "abandoned"),
        "seconds": round(time.monotonic() - start, 1),
        "last_driver_said": [line.strip() for line in output.splitlines()
                             if "finished now" in line][-1:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=48)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.points < 40 or arguments.kills < 10:
        parser.error("the drill needs --points >= 40 and --kills >= 10")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="krenorm-drill-") as directory:
        result = drill(arguments.points, arguments.kills, arguments.workers, arguments.seed,
                       Path(directory))
    print(f"\nmachine: {os.cpu_count()} cores, load average at start {load[0]:.1f} / "
          f"{load[1]:.1f} / {load[2]:.1f}, at end {os.getloadavg()[0]:.1f}")
    for key, value in result.items():
        print(f"{key:28} {value}")
    ok = (result["done_exactly_once"] == result["points"] and result["lost"] == 0
          and result["duplicated"] == 0 and result["failed"] == 0)
    print("\nDRILL", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
