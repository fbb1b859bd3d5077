"""Sweep throughput (issue 8): a 50-point theory sweep run through the local process pool with
1 and 2 workers (and, for reference, in the driver process and on an in-process Dask
LocalCluster), each into a fresh results store.

Points: CNN/LCN theory (finite width and N = ∞) on a synthetic local teacher, P = 128 images
of 12×12 with 3×3 patches at stride 3 (Np = 16), T = 0.1, 5 widths × 5 data seeds × 2
architectures. Each row runs in a fresh interpreter with a fresh store, so every row pays its
own start-up (imports, fork server).

Columns: wall = whole `run_sweep` call (pool start-up included); points/s = 50 / wall; speed-up
= wall(1 worker) / wall; steady points/s = points between the first and the last record divided
by that time (start-up excluded); first s = time to the first recorded point; compute s = sum
of per-point run times; CPU s = sum of per-point CPU times of the computing processes (against
compute s: how much of a core each point really got on a shared machine); store ms = mean time
of one claim + record transaction pair, measured separately; peak MiB = largest worker
resident-memory high-water mark from the provenance.

    .venv/bin/python benchmarks/sweep.py            # the table in benchmarks/RESULTS.md
    .venv/bin/python benchmarks/sweep.py --quick    # 10 points, smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from krenorm.experiments.store import ResultsStore
from krenorm.experiments.sweep import run_sweep
from krenorm.experiments.sweep_config import load_sweep_config

CONFIG = """
name = "benchmark"
[execution]
threads_per_worker = 1
[data]
dataset = "local-teacher"
n_train = 128
n_test = 50
seed = {seeds}
options = {{ image_shape = [1, 12, 12], mask = 3, stride = 3, noise = 0.1 }}
[hyper]
width = [16, 32, 64, 256, 1024]
temperature = 0.1
[[architectures]]
kind = "cnn"
mask = 3
stride = 3
[[architectures]]
kind = "lcn"
mask = 3
stride = 3
"""


def store_transaction_ms(directory: Path, config, repeats: int = 200) -> float:
    """Mean wall time of claim + record (two write transactions) on a fresh store."""
    with ResultsStore(directory / "transactions.sqlite") as store:
        points = list(config.points) * (repeats // len(config.points) + 1)
        store.register("transactions", config.points)
        session = store.open_session("transactions", "benchmark")
        start = time.perf_counter()
        count = 0
        for spec in points[:repeats]:
            claim = store.claim(spec.content_hash, session)
            if claim is None:  # already done: reset it so the pair can be timed again
                store._connection.execute("UPDATE experiments SET status = 'pending' "
                                          "WHERE spec_hash = ?", (spec.content_hash,))
                claim = store.claim(spec.content_hash, session)
            store.record_result(claim, {"loss": 1.0}, {}, {}, 0.0)
            count += 1
        return (time.perf_counter() - start) / count * 1000


def measure(config, directory: Path, label: str, **executor) -> dict:
    db = directory / f"{label.replace(' ', '_')}.sqlite"
    start = time.time()
    result = run_sweep(config, db=db, progress=False, **executor)
    with ResultsStore(db) as store:
        records = store.records(status="done")
    finished = sorted(record.finished_at for record in records)
    steady = ((len(finished) - 1) / (finished[-1] - finished[0])
              if len(finished) > 1 and finished[-1] > finished[0] else float("nan"))
    peaks = [r.provenance.get("peak_rss_mib") or 0.0 for r in records]
    return {"label": label, "executor": result.executor, "points": result.completed,
            "wall": result.seconds, "rate": result.points_per_second, "steady": steady,
            "first": finished[0] - start, "compute": sum(r.seconds for r in records),
            "cpu": sum(r.diagnostics["cpu_seconds"] for r in records),
            "peak": max(peaks)}


ROWS = {"1 worker": {"workers": 1}, "2 workers": {"workers": 2}, "driver only": {"workers": 0},
        "dask": {}}


def run_row(label: str, quick: bool) -> dict:
    """One executor on a fresh store, in this (fresh) process."""
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        path = directory / "benchmark.toml"
        path.write_text(CONFIG.format(seeds=seeds))
        config = load_sweep_config(path)
        if label != "dask":
            return measure(config, directory, label, **ROWS[label])
        import distributed

        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      dashboard_address=None) as cluster:
            row = measure(config, directory, label, scheduler=cluster.scheduler_address)
        row["executor"] = "Dask LocalCluster in-process (1 worker, 2 threads)"
        row["transaction_ms"] = store_transaction_ms(directory, config)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 points, smoke run")
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.row:  # child: one measurement, JSON on the last line
        print(json.dumps(run_row(arguments.row, arguments.quick)))
        return
    rows = []
    for label in ROWS:
        # A fresh interpreter per row: each pays its own start-up (imports, fork server).
        command = [sys.executable, __file__, "--row", label] + (["--quick"] if arguments.quick
                                                                 else [])
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    base = rows[0]["wall"]
    print(f"{rows[0]['points']}-point theory sweep (CNN/LCN, P = 128, Np = 16, finite + "
          "infinite width), a fresh process and store per row\n")
    print("| executor | points | wall s | points/s | speed-up | steady points/s | first s | "
          "compute s | CPU s | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['executor']} | {row['points']} | {row['wall']:.1f} | {row['rate']:.2f} | "
              f"{base / row['wall']:.2f} | {row['steady']:.2f} | {row['first']:.1f} | "
              f"{row['compute']:.1f} | {row['cpu']:.1f} | {row['peak']:.0f} |")
    print(f"\nstore: claim + record = {rows[-1]['transaction_ms']:.2f} ms per point (WAL, "
          "synchronous = NORMAL)")


if __name__ == "__main__":
    main()
