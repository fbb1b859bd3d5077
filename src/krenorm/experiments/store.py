"""SQLite results store of sweeps (docs/architecture.md "Scale"; schema in docs/sweeps.md).

One row per experiment (keyed by the spec's content hash) with its spec JSON, status, attempts,
metrics, diagnostics, provenance and last error; one row per attempt (who ran it, how it
ended); one row per driver session (host, pid, heartbeat). Every change is one
`BEGIN IMMEDIATE … COMMIT` transaction, the database runs in WAL mode with a busy timeout, so
several processes (drivers of the same or of different sweeps) may write at once.

Exactly-once bookkeeping: a point is claimed (pending/failed → running, owned by a session,
attempts + 1) and recorded (running → done) in single transactions, and a record is accepted
only while the recording session still owns the claim. A point therefore finishes at most once;
a claim left 'running' by a session that died (SIGKILL, lost node) is handed back by
`reclaim_abandoned` and run again by the next sweep, so no point is lost either.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from krenorm.experiments.processes import process_alive

if TYPE_CHECKING:  # the store needs only content_hash, label and canonical_json of a spec,
    # so processes that only read or write results do not import torch.
    from krenorm.experiments.spec import ExperimentSpec

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
#: How an attempt ended: done (recorded), failed (the run raised), lost (its worker process
#: died), abandoned (its driver session died; reclaimed later), released (the driver stopped
#: before the result came), rejected (a result arrived after the claim had been reclaimed).
OUTCOMES = ("running", "done", "failed", "lost", "abandoned", "released", "rejected")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    spec_hash TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {STATUSES}),
    attempts INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    created_at REAL NOT NULL,
    claimed_at REAL,
    finished_at REAL,
    seconds REAL,
    metrics_json TEXT,
    diagnostics_json TEXT,
    provenance_json TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS experiments_by_status ON experiments (status);
CREATE TABLE IF NOT EXISTS sweep_members (
    sweep TEXT NOT NULL,
    spec_hash TEXT NOT NULL REFERENCES experiments (spec_hash),
    position INTEGER NOT NULL,
    PRIMARY KEY (sweep, spec_hash)
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    executor TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    ended_at REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec_hash TEXT NOT NULL REFERENCES experiments (spec_hash),
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES}),
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_spec ON attempts (spec_hash);
"""


@dataclass(frozen=True)
class Claim:
    """A point this session owns until it records or releases it."""

    spec_hash: str
    session_id: str
    attempt_id: int
    number: int


@dataclass(frozen=True)
class ExperimentRecord:
    """One row of the experiments table, JSON columns decoded."""

    spec_hash: str
    label: str
    spec: dict
    status: str
    attempts: int
    seconds: float | None
    metrics: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    error: str | None = None
    finished_at: float | None = None

    def to_dict(self) -> dict:
        return {"spec_hash": self.spec_hash, "label": self.label, "spec": self.spec,
                "status": self.status, "attempts": self.attempts, "seconds": self.seconds,
                "metrics": self.metrics, "diagnostics": self.diagnostics,
                "provenance": self.provenance, "error": self.error,
                "finished_at": self.finished_at}


@dataclass(frozen=True)
class AttemptRecord:
    """One row of the attempts table."""

    attempt_id: int
    spec_hash: str
    session_id: str
    number: int
    outcome: str
    error: str | None
    started_at: float
    ended_at: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _dumps(value: object) -> str:
    # Infinite widths/losses are legitimate values; json writes them as Infinity and reads
    # them back.
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _loads(text: str | None) -> dict:
    return {} if text is None else json.loads(text)


class ResultsStore:
    """The SQLite results store at `path` (created with its schema on first use).

    busy_timeout_s: how long a writer waits for another process's transaction to finish before
    giving up with sqlite3.OperationalError ('database is locked').
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below opens its own
        # BEGIN IMMEDIATE, which takes the write lock up front so two writers never deadlock.
        self._connection = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                           isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = self._enter_wal_mode(busy_timeout_s)
        if mode.lower() != "wal":
            raise ValueError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the "
                             "store on a local file system (not NFS or a read-only mount).")
        # In WAL mode NORMAL loses no committed transaction when a process is killed; only a
        # power cut can drop the last ones.
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute("PRAGMA foreign_keys = ON")
        self._create_schema()

    # -- plumbing -------------------------------------------------------------------------------

    def _enter_wal_mode(self, busy_timeout_s: float) -> str:
        """Switch the file to WAL and return the journal mode SQLite reports.

        Why the retry: the switch needs an exclusive lock, and when two processes open a fresh
        store at the same moment SQLite can answer SQLITE_BUSY at once, without calling the busy
        handler (seen in CI as 'database is locked' from the PRAGMA itself). We retry until
        the same busy timeout as every other statement has passed.
        """
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.005
        while True:
            try:
                return str(self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.2)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cursor = self._connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def _create_schema(self) -> None:
        with self._transaction() as cursor:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cursor.execute(statement)
            row = cursor.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                cursor.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise ValueError(f"{self.path} has results-store schema {row[0]}, this krenorm "
                                 f"writes schema {SCHEMA_VERSION}; use a new --db path.")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sweeps and sessions --------------------------------------------------------------------

    def register(self, sweep: str, specs: Iterable[ExperimentSpec]) -> int:
        """Add the sweep's points (pending unless already known) in one transaction; returns how
        many experiments were new to the store."""
        now = time.time()
        new = 0
        with self._transaction() as cursor:
            for position, spec in enumerate(specs):
                spec_hash = spec.content_hash
                cursor.execute(
                    "INSERT OR IGNORE INTO experiments (spec_hash, label, spec_json, status, "
                    "created_at) VALUES (?, ?, ?, 'pending', ?)",
                    (spec_hash, spec.label, spec.canonical_json(), now))
                new += cursor.rowcount
                cursor.execute("INSERT OR IGNORE INTO sweep_members VALUES (?, ?, ?)",
                               (sweep, spec_hash, position))
        return new

    def open_session(self, sweep: str, executor: str) -> str:
        """Start a driver session (this host and pid) and return its id."""
        session_id = uuid.uuid4().hex
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute("INSERT INTO sessions (session_id, sweep, host, pid, executor, "
                           "started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (session_id, sweep, socket.gethostname(), os.getpid(), executor,
                            now, now))
        return session_id

    def heartbeat(self, session_id: str) -> None:
        """Tell other drivers this session is alive."""
        with self._transaction() as cursor:
            cursor.execute("UPDATE sessions SET heartbeat_at = ? WHERE session_id = ?",
                           (time.time(), session_id))

    def close_session(self, session_id: str, reason: str = "finished") -> None:
        """End a session; claims it still holds go back to pending."""
        now = time.time()
        with self._transaction() as cursor:
            self._hand_back(cursor, session_id, "released", now)
            cursor.execute("UPDATE sessions SET ended_at = ?, end_reason = ? "
                           "WHERE session_id = ?", (now, reason, session_id))

    def reclaim_abandoned(self, stale_after_s: float = 120.0) -> int:
        """Hand back the claims of dead sessions: ended ones; on this host, those whose process
        no longer exists; on other hosts, those silent (no heartbeat) for stale_after_s.
        Returns how many points went back to pending."""
        now = time.time()
        host = socket.gethostname()
        reclaimed = 0
        with self._transaction() as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT s.session_id, s.host, s.pid, s.heartbeat_at, s.ended_at "
                "FROM experiments e JOIN sessions s ON e.session_id = s.session_id "
                "WHERE e.status = 'running'").fetchall()
            for row in rows:
                silent_s = now - row["heartbeat_at"]
                if row["ended_at"] is not None:
                    dead = True
                elif row["host"] == host:
                    # The process table is the truth here (a driver busy running a long point
                    # in-process does not heartbeat); silence far beyond the limit only
                    # matters if the process id was reused.
                    dead = not process_alive(row["pid"]) or silent_s > 10 * stale_after_s
                else:
                    dead = silent_s > stale_after_s
                if dead:
                    reclaimed += self._hand_back(cursor, row["session_id"], "abandoned", now)
                    cursor.execute("UPDATE sessions SET ended_at = COALESCE(ended_at, ?), "
                                   "end_reason = COALESCE(end_reason, 'died') "
                                   "WHERE session_id = ?", (now, row["session_id"]))
        return reclaimed

    @staticmethod
    def _hand_back(cursor: sqlite3.Cursor, session_id: str, outcome: str, now: float) -> int:
        cursor.execute("UPDATE attempts SET outcome = ?, ended_at = ? "
                       "WHERE session_id = ? AND outcome = 'running'", (outcome, now, session_id))
        cursor.execute("UPDATE experiments SET status = 'pending', session_id = NULL "
                       "WHERE session_id = ? AND status = 'running'", (session_id,))
        return cursor.rowcount

    # -- claims and records ---------------------------------------------------------------------

    def claim(self, spec_hash: str, session_id: str) -> Claim | None:
        """Take a pending or failed point for this session (attempts + 1); None when it is done
        or running elsewhere."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE experiments SET status = 'running', session_id = ?, claimed_at = ?, "
                "attempts = attempts + 1 WHERE spec_hash = ? AND status IN ('pending', 'failed')",
                (session_id, now, spec_hash))
            if cursor.rowcount != 1:
                return None
            number = cursor.execute("SELECT attempts FROM experiments WHERE spec_hash = ?",
                                    (spec_hash,)).fetchone()[0]
            cursor.execute("INSERT INTO attempts (spec_hash, session_id, number, started_at, "
                           "outcome) VALUES (?, ?, ?, ?, 'running')",
                           (spec_hash, session_id, number, now))
            attempt_id = cursor.lastrowid
            if attempt_id is None:  # sqlite3 sets it after every INSERT; never None here
                raise RuntimeError("SQLite did not report the attempt's row id.")
            return Claim(spec_hash, session_id, attempt_id, number)

    def record_result(self, claim: Claim, metrics: dict, diagnostics: dict, provenance: dict,
                      seconds: float) -> bool:
        """Store a finished point if this claim still owns it (else the attempt is marked
        'rejected' and False returned, so a point is never recorded twice)."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE experiments SET status = 'done', finished_at = ?, seconds = ?, "
                "metrics_json = ?, diagnostics_json = ?, provenance_json = ?, error = NULL, "
                "session_id = NULL WHERE spec_hash = ? AND status = 'running' AND "
                "session_id = ?",
                (now, seconds, _dumps(metrics), _dumps(diagnostics), _dumps(provenance),
                 claim.spec_hash, claim.session_id))
            accepted = cursor.rowcount == 1
            cursor.execute("UPDATE attempts SET outcome = ?, ended_at = ? WHERE attempt_id = ?",
                           ("done" if accepted else "rejected", now, claim.attempt_id))
        return accepted

    def record_failure(self, claim: Claim, error: str, outcome: str = "failed") -> None:
        """The run raised (outcome 'failed') or its worker died ('lost'): keep the error text
        on the point and the attempt; the point becomes 'failed' (claimable for a retry)."""
        if outcome not in ("failed", "lost"):
            raise ValueError(f"outcome must be 'failed' or 'lost', got {outcome!r}.")
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute("UPDATE experiments SET status = 'failed', error = ?, "
                           "finished_at = ?, session_id = NULL WHERE spec_hash = ? AND "
                           "status = 'running' AND session_id = ?",
                           (error, now, claim.spec_hash, claim.session_id))
            cursor.execute("UPDATE attempts SET outcome = ?, error = ?, ended_at = ? "
                           "WHERE attempt_id = ?", (outcome, error, now, claim.attempt_id))

    def release(self, claim: Claim) -> None:
        """Give a claim back unrun (the driver is stopping)."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute("UPDATE experiments SET status = 'pending', session_id = NULL "
                           "WHERE spec_hash = ? AND status = 'running' AND session_id = ?",
                           (claim.spec_hash, claim.session_id))
            cursor.execute("UPDATE attempts SET outcome = 'released', ended_at = ? "
                           "WHERE attempt_id = ?", (now, claim.attempt_id))

    # -- reading --------------------------------------------------------------------------------

    def sweeps(self) -> list[str]:
        """Names of the sweeps registered in this store."""
        rows = self._connection.execute("SELECT DISTINCT sweep FROM sweep_members ORDER BY sweep")
        return [row[0] for row in rows]

    def status(self, spec_hash: str) -> str | None:
        """The status of one experiment (None when the store does not know it)."""
        row = self._connection.execute("SELECT status FROM experiments WHERE spec_hash = ?",
                                       (spec_hash,)).fetchone()
        return None if row is None else row[0]

    def statuses(self, sweep: str | None = None) -> dict[str, str]:
        """spec_hash → status, for one sweep or the whole store."""
        query = "SELECT e.spec_hash, e.status FROM experiments e"
        arguments: tuple = ()
        if sweep is not None:
            query += " JOIN sweep_members m ON m.spec_hash = e.spec_hash WHERE m.sweep = ?"
            arguments = (sweep,)
        return {row[0]: row[1] for row in self._connection.execute(query, arguments)}

    def counts(self, sweep: str | None = None) -> dict[str, int]:
        """Number of points per status (every status present, zero if none)."""
        out = dict.fromkeys(STATUSES, 0)
        for status in self.statuses(sweep).values():
            out[status] += 1
        return out

    def records(self, sweep: str | None = None, status: str | None = None
                ) -> list[ExperimentRecord]:
        """Experiments (in sweep order when a sweep is given, else by hash), JSON decoded."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")
        query = "SELECT e.* FROM experiments e"
        conditions, arguments = [], []
        if sweep is not None:
            query += " JOIN sweep_members m ON m.spec_hash = e.spec_hash"
            conditions.append("m.sweep = ?")
            arguments.append(sweep)
        if status is not None:
            conditions.append("e.status = ?")
            arguments.append(status)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY m.position" if sweep is not None else " ORDER BY e.spec_hash"
        return [ExperimentRecord(
            row["spec_hash"], row["label"], json.loads(row["spec_json"]), row["status"],
            row["attempts"], row["seconds"], _loads(row["metrics_json"]),
            _loads(row["diagnostics_json"]), _loads(row["provenance_json"]), row["error"],
            row["finished_at"]) for row in self._connection.execute(query, arguments)]

    def attempts(self, spec_hash: str | None = None) -> list[AttemptRecord]:
        """The attempt log (all points, or one), oldest first."""
        query = "SELECT * FROM attempts"
        arguments: tuple = ()
        if spec_hash is not None:
            query += " WHERE spec_hash = ?"
            arguments = (spec_hash,)
        query += " ORDER BY attempt_id"
        return [AttemptRecord(row["attempt_id"], row["spec_hash"], row["session_id"],
                              row["number"], row["outcome"], row["error"], row["started_at"],
                              row["ended_at"])
                for row in self._connection.execute(query, arguments)]

    def results_table(self, sweep: str | None = None) -> list[dict]:
        """Finished points as {spec_hash, label, metrics}, sorted by hash: what two runs of the
        same sweep must agree on, whatever executed them."""
        rows = [{"spec_hash": record.spec_hash, "label": record.label,
                 "metrics": record.metrics}
                for record in self.records(sweep, status="done")]
        return sorted(rows, key=lambda row: row["spec_hash"])

