"""Results store: exactly-once claims and records, reclaiming the claims of dead drivers, and
concurrent writers from two processes (docs/architecture.md "Scale"; docs/sweeps.md)."""

import json
import os
import subprocess
import sys
import textwrap
import time

from krenorm.experiments.store import ResultsStore, SessionHeartbeat
from krenorm.experiments.sweep_config import parse_sweep_config

RAW = {
    "name": "store",
    "data": {"dataset": "linear-teacher", "n_train": 4, "n_test": 2,
             "seed": list(range(30)), "options": {"dimension": 2}},
    "hyper": {"width": [1, 2]},
    "architectures": [{"kind": "fc"}],
}


def _points():
    return parse_sweep_config(RAW).points


def test_claim_record_once_and_reject_after_reclaim(tmp_path):
    points = _points()[:3]
    with ResultsStore(tmp_path / "s.sqlite") as store:
        assert store.register("store", points) == 3
        assert store.register("store", points) == 0  # idempotent
        first = store.open_session("store", "test")
        claim = store.claim(points[0].content_hash, first)
        assert claim is not None and claim.number == 1
        assert store.claim(points[0].content_hash, first) is None  # already running
        # A live session on this host keeps its claims, however quiet it is.
        assert store.reclaim_abandoned(stale_after_s=3600.0) == 0
        # A session on another host that stopped heartbeating is presumed dead: another driver
        # reclaims and reruns the point.
        store._connection.execute("UPDATE sessions SET host = 'elsewhere', heartbeat_at = "
                                  "heartbeat_at - 10 WHERE session_id = ?", (first,))
        assert store.reclaim_abandoned(stale_after_s=60.0) == 0
        assert store.reclaim_abandoned(stale_after_s=5.0) == 1
        second = store.open_session("store", "test")
        again = store.claim(points[0].content_hash, second)
        assert again is not None and again.number == 2
        assert store.record_result(again, {"loss": 1.0}, {}, {}, 0.1)
        # The first claim's late result is refused: the point is recorded once.
        assert not store.record_result(claim, {"loss": 2.0}, {}, {}, 0.1)
        assert store.claim(points[0].content_hash, second) is None  # done stays done
        record = store.records(status="done")[0]
        assert record.metrics == {"loss": 1.0} and record.attempts == 2
        outcomes = [attempt.outcome for attempt in store.attempts(points[0].content_hash)]
        assert outcomes == ["rejected", "done"]
        # A failure keeps its error and leaves the point claimable for a retry.
        failing = store.claim(points[1].content_hash, second)
        store.record_failure(failing, "ValueError: boom")
        assert store.records(status="failed")[0].error == "ValueError: boom"
        assert store.claim(points[1].content_hash, second) is not None
        assert store.counts("store") == {"pending": 1, "running": 1, "done": 1, "failed": 0}
        store.close_session(second)
        assert store.counts("store")["running"] == 0  # closing hands claims back


def test_claims_of_a_killed_process_are_reclaimed_at_once(tmp_path):
    """Same host, process gone: no need to wait for the heartbeat to go stale."""
    db = tmp_path / "s.sqlite"
    points = _points()[:2]
    with ResultsStore(db) as store:
        store.register("store", points)
    code = textwrap.dedent(f"""
        import os, signal
        from krenorm.experiments.store import ResultsStore, SessionHeartbeat
        store = ResultsStore({str(db)!r})
        session = store.open_session("store", "doomed")
        store.claim({points[0].content_hash!r}, session)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], check=False)
    with ResultsStore(db) as store:
        assert store.status(points[0].content_hash) == "running"
        assert store.reclaim_abandoned(stale_after_s=3600.0) == 1
        assert store.status(points[0].content_hash) == "pending"
        assert [a.outcome for a in store.attempts()] == ["abandoned"]


WRITER = textwrap.dedent("""
    import json, os, sys, time
    from krenorm.experiments.store import ResultsStore, SessionHeartbeat

    class Stored:  # what the store reads of a spec; keeps torch out of these processes
        def __init__(self, row):
            self.content_hash, self.label, self.text = row
        def canonical_json(self):
            return self.text

    db, go, specs_path, ready = sys.argv[1:5]
    specs = [Stored(row) for row in json.load(open(specs_path))]
    store = ResultsStore(db, busy_timeout_s=60)
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.002)
    store.register("store", specs)  # both register the same points at the same time
    session = store.open_session("store", f"writer {os.getpid()}")
    mine = []
    for spec in specs:
        claim = store.claim(spec.content_hash, session)
        if claim is not None:
            time.sleep(0.005)  # "work" outside any transaction: the other writer gets a turn
            store.heartbeat(session)
            assert store.record_result(claim, {"writer": os.getpid()}, {}, {}, 0.0)
            mine.append(spec.content_hash)
    store.close_session(session)
    print(json.dumps(mine))
""")


def test_two_processes_writing_at_once(tmp_path):
    """Two processes register, claim and record the same 60 points concurrently (both try
    every point; up to ~180 write transactions each): no 'database is locked', every point
    recorded exactly once, by the process that claimed it."""
    points = _points()
    specs_path = tmp_path / "specs.json"
    specs_path.write_text(json.dumps([(p.content_hash, p.label, p.canonical_json())
                                      for p in points]))
    db, go = tmp_path / "s.sqlite", tmp_path / "go"
    ready = [tmp_path / f"ready{index}" for index in range(2)]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(go),
                                 str(specs_path), str(flag)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for flag in ready]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start writing together once both have opened the store
    outputs = [writer.communicate(timeout=120) for writer in writers]
    for writer, (_, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
    claimed = [json.loads(stdout) for stdout, _ in outputs]
    assert not set(claimed[0]) & set(claimed[1])
    # Both took part (each holds its claims ~5 ms outside transactions, so the other writer
    # gets the lock in between): the interleaved case is the one exercised.
    assert claimed[0] and claimed[1]
    assert sorted(claimed[0] + claimed[1]) == sorted(p.content_hash for p in points)
    with ResultsStore(db) as store:
        records = store.records("store")
        assert len(records) == len(points) and all(r.status == "done" for r in records)
        assert all(r.attempts == 1 for r in records)
        by_writer = {r.spec_hash: r.metrics["writer"] for r in records}
        for writer, hashes in zip(writers, claimed, strict=True):
            assert all(by_writer[h] == writer.pid for h in hashes)
        assert len(store.attempts()) == len(points)
    assert os.path.getsize(db) > 0


def test_a_busy_driver_on_this_host_keeps_its_claim_however_long_it_is_silent(tmp_path):
    """The regression: a driver running one point in its own process (--workers 0) for
    33 minutes wrote no heartbeat; a second driver started on the same host took it for dead
    after 10 × 120 s of silence, reclaimed the point, and the finished result was refused.
    On this host only the process table (and the process's start time, against a reused id)
    decides."""
    points = _points()[:2]
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.register("store", points)
        busy = store.open_session("store", "inline (driver process)")
        claim = store.claim(points[0].content_hash, busy)
        store._connection.execute("UPDATE sessions SET heartbeat_at = heartbeat_at - 2000 "
                                  "WHERE session_id = ?", (busy,))
        assert store.reclaim_abandoned(stale_after_s=120.0) == 0
        assert store.record_result(claim, {"loss": 1.0}, {}, {}, 1980.0)
        # A process with the driver's id that started after the session is not its driver:
        # the session (opened, say, a day before this process started) is dead.
        stale = store.open_session("store", "inline (driver process)")
        store.claim(points[1].content_hash, stale)
        store._connection.execute("UPDATE sessions SET started_at = started_at - 86400 "
                                  "WHERE session_id = ?", (stale,))
        assert store.reclaim_abandoned(stale_after_s=120.0) == 1
        assert [a.outcome for a in store.attempts(points[1].content_hash)] == ["abandoned"]


def test_session_heartbeat_beats_while_the_driver_thread_is_busy(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite") as store:
        session = store.open_session("store", "test")
        store._connection.execute("UPDATE sessions SET heartbeat_at = 0 WHERE session_id = ?",
                                  (session,))
        with SessionHeartbeat(store.path, session, 0.05):
            time.sleep(0.5)  # the driver's thread busy in one point, writing nothing
        (beat,) = store._connection.execute(
            "SELECT heartbeat_at FROM sessions WHERE session_id = ?", (session,)).fetchone()
        assert time.time() - 5.0 < beat <= time.time()
        # After the block the thread has stopped: no more beats.
        store._connection.execute("UPDATE sessions SET heartbeat_at = 0 WHERE session_id = ?",
                                  (session,))
        time.sleep(0.2)
        (after,) = store._connection.execute(
            "SELECT heartbeat_at FROM sessions WHERE session_id = ?", (session,)).fetchone()
        assert after == 0
