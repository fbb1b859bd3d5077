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

Faults of the store itself (read-only file, full disk, damaged file, lock timeout) surface as one
`StoreError` naming the file and the remedy (store_errors.py); `ResultsStore(path,
read_only=True)` opens a store for reading only (SQLite URI mode=ro), so a report works on a
read-only copy. Non-finite floats are stored as JSON null with a flag and restored on reading, so
every JSON column stays valid JSON for SQLite's json functions (docs/sweeps.md "Store schema").
A sweep is identified by its content: the set of its points' hashes (`sweep_identity`); a name
reused for other points is refused unless the caller extends the sweep explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from krenorm.experiments.errors import ConfigError
from krenorm.experiments.processes import process_alive, process_started_at
from krenorm.experiments.store_errors import STORE_ERRORS, StoreError, store_fault

if TYPE_CHECKING:  # the store needs only content_hash, label and canonical_json of a spec,
    # so processes that only read or write results do not import torch.
    from krenorm.experiments.spec import ExperimentSpec

SCHEMA_VERSION = 2
#: Why the driver wrote an event (events table): a point handed back without using its retry
#: budget because its worker died, stalled or the scheduler went away; a point stopped at its
#: time limit; a sweep extended with new points.
EVENT_KINDS = ("requeued", "timed-out", "interrupted", "extended")
STATUSES = ("pending", "running", "done", "failed")
#: How an attempt ended: done (recorded), failed (the run raised), lost (its worker process
#: died), abandoned (its driver session died; reclaimed later), released (the driver stopped
#: before the result came), rejected (a result arrived after the claim had been reclaimed).
OUTCOMES = ("running", "done", "failed", "lost", "abandoned", "released", "rejected")
#: A driver's process starts before it opens its session; its start time (to the clock tick,
#: boot time to the second) may still read up to about a second later. A process that started
#: more than this after the session is not the session's driver.
PID_START_SLACK_S = 2.0

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
    error TEXT,
    non_finite_json TEXT
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
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    sweep TEXT,
    spec_hash TEXT,
    session_id TEXT,
    detail TEXT NOT NULL
);
"""

def _guarded(action: str) -> Any:
    """Turn sqlite3 and OS errors of a store method into a StoreError naming the file."""
    def decorate(method: Any) -> Any:
        @functools.wraps(method)
        def wrapper(self: ResultsStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except STORE_ERRORS as error:
                raise store_fault(self.path, action, error) from error
        return wrapper
    return decorate


class SweepChangedError(ConfigError):
    """A sweep name already in the store holds other points than the config now asks for."""


def sweep_identity(spec_hashes: Iterable[str]) -> str:
    """The content hash of a sweep: SHA-256 over its points' sorted, distinct hashes."""
    return hashlib.sha256("\n".join(sorted(set(spec_hashes))).encode()).hexdigest()


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
    #: Paths ('metrics/theory.test_loss', …) of values that were NaN or ±∞ (stored as null).
    non_finite: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"spec_hash": self.spec_hash, "label": self.label, "spec": self.spec,
                "status": self.status, "attempts": self.attempts, "seconds": self.seconds,
                "metrics": self.metrics, "diagnostics": self.diagnostics,
                "provenance": self.provenance, "error": self.error,
                "finished_at": self.finished_at, "non_finite": list(self.non_finite)}


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


@dataclass(frozen=True)
class EventRecord:
    """One row of the events table."""

    event_id: int
    at: float
    kind: str
    sweep: str | None
    spec_hash: str | None
    session_id: str | None
    detail: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _finite(value: Any, path: list, flags: list) -> Any:
    """`value` with every NaN/±∞ float replaced by None; their paths and texts go to flags."""
    if isinstance(value, float) and not math.isfinite(value):
        flags.append([path, repr(value)])  # 'nan', 'inf', '-inf'
        return None
    if isinstance(value, dict):
        return {key: _finite(item, [*path, key], flags) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item, [*path, index], flags) for index, item in enumerate(value)]
    return value


def _dumps(value: object, flags: list | None = None) -> str:
    """Strict JSON (SQLite's json functions reject NaN and Infinity): non-finite floats become
    null and are listed in `flags` as [path, 'nan' | 'inf' | '-inf'] for `_restore`."""
    found: list = []
    text = json.dumps(_finite(value, [], found), sort_keys=True, allow_nan=False)
    if flags is not None:
        flags.extend(found)
    elif found:
        raise ValueError(f"non-finite values at {[path for path, _ in found]} need flags")
    return text


def _restore(value: Any, flags: list) -> Any:
    """Put the flagged non-finite floats back (inverse of `_finite`)."""
    for path, text in flags:
        container = value
        for key in path[:-1]:
            container = container[key]
        container[path[-1]] = float(text)
    return value


def _loads(text: str | None, flags: list | None = None) -> dict:
    value = {} if text is None else json.loads(text)
    return _restore(value, flags) if flags else value


class ResultsStore:
    """The SQLite results store at `path` (created with its schema on first use).

    busy_timeout_s: how long a writer waits for another process's transaction to finish before
    giving up with sqlite3.OperationalError ('database is locked').
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0, *,
                 read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        try:
            if read_only:
                self._connection = self._open_read_only()
            else:
                self._open_for_writing(busy_timeout_s)
        except STORE_ERRORS as error:
            raise store_fault(self.path, "opening the store"
                              + (" read-only" if read_only else ""), error) from error

    def _open_for_writing(self, busy_timeout_s: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below opens its own
        # BEGIN IMMEDIATE, which takes the write lock up front so two writers never deadlock.
        self._connection = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                           isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = self._enter_wal_mode(busy_timeout_s)
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the "
                             "store on a local file system (not NFS or a read-only mount).",
                             path=self.path, kind="other")
        # In WAL mode NORMAL loses no committed transaction when a process is killed; only a
        # power cut can drop the last ones.
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute("PRAGMA foreign_keys = ON")
        self._create_schema()

    def _open_read_only(self) -> sqlite3.Connection:
        """mode=ro: SQLite never writes the file. A WAL store in a folder we cannot write needs
        its -shm file; when SQLite cannot create it, open the file as immutable (nobody can be
        writing it then, or we could write there too)."""
        if not self.path.is_file():
            raise StoreError(f"no results store at {self.path}; run `krenorm sweep` first.",
                             path=self.path, kind="unreadable")
        base = f"file:{quote(str(self.path.resolve()))}"
        for uri in (f"{base}?mode=ro", f"{base}?mode=ro&immutable=1"):
            connection = sqlite3.connect(uri, uri=True, isolation_level=None)
            connection.row_factory = sqlite3.Row
            try:
                row = connection.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            except sqlite3.OperationalError as error:
                connection.close()
                if "unable to open" in str(error) or "readonly" in str(error):
                    continue
                if "no such table" in str(error):
                    raise StoreError(f"{self.path} is not a krenorm results store (no meta "
                                     "table).", path=self.path, kind="corrupted") from error
                raise
            if row is None or int(row[0]) > SCHEMA_VERSION:
                connection.close()
                raise StoreError(f"{self.path} has results-store schema "
                                 f"{None if row is None else row[0]}; this krenorm reads up to "
                                 f"{SCHEMA_VERSION}.", path=self.path, kind="schema")
            self._schema_version = int(row[0])
            return connection
        raise StoreError(f"results store {self.path} cannot be opened read-only (SQLite could "
                         "neither read its WAL index nor open it as immutable); copy it to a "
                         "writable folder.", path=self.path, kind="unreadable")

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
        if self.read_only:
            raise StoreError(f"results store {self.path} was opened read-only; it cannot be "
                             "written.", path=self.path, kind="read-only")
        cursor = self._connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            # After a disk-full or I/O error SQLite may have rolled back already.
            with contextlib.suppress(sqlite3.Error):
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
            elif int(row[0]) == 1:
                # Schema 1 → 2: the non-finite flags column (the events table was created
                # above); nothing else changed, every row stays as it was.
                cursor.execute("ALTER TABLE experiments ADD COLUMN non_finite_json TEXT")
                cursor.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                               (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has results-store schema {row[0]}, this krenorm "
                                 f"writes schema {SCHEMA_VERSION}; use a new --db path.",
                                 path=self.path, kind="schema")
        self._schema_version = SCHEMA_VERSION

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sweeps and sessions --------------------------------------------------------------------

    @_guarded("registering the sweep's points")
    def register(self, sweep: str, specs: Iterable[ExperimentSpec], *,
                 extend: bool = True) -> int:
        """Add the sweep's points (pending unless already known) in one transaction; returns how
        many experiments were new to the store.

        extend=False: the sweep is identified by its content (`sweep_identity` of its points).
        When `sweep` already exists with other points, SweepChangedError says how many points
        differ and offers the two choices: a new sweep name, or extending this one on purpose.
        extend=True adds the new points to the sweep (its other points stay; an 'extended'
        event records it)."""
        specs = list(specs)
        now = time.time()
        new = 0
        with self._transaction() as cursor:
            existing = {row[0] for row in cursor.execute(
                "SELECT spec_hash FROM sweep_members WHERE sweep = ?", (sweep,))}
            wanted = {spec.content_hash for spec in specs}
            if existing and existing != wanted:
                added, removed = len(wanted - existing), len(existing - wanted)
                if not extend:
                    raise SweepChangedError(
                        f"sweep {sweep!r} in {self.path} holds other points than this config: "
                        f"the store has {len(existing)} (content {sweep_identity(existing)[:12]}), "
                        f"the config {len(wanted)} (content {sweep_identity(wanted)[:12]}; "
                        f"{added} new, {removed} not in the config). Give the config a new "
                        f"`name` to start a separate sweep, or pass --extend to add the new "
                        f"points to {sweep!r} (its {removed} other points stay in it).")
                if added:
                    cursor.execute(
                        "INSERT INTO events (at, kind, sweep, detail) VALUES (?, 'extended', ?, "
                        "?)", (now, sweep, f"{added} points added to {len(existing)}; "
                                           f"{removed} earlier points not in the config kept"))
            offset = 0 if not existing else 1 + cursor.execute(
                "SELECT MAX(position) FROM sweep_members WHERE sweep = ?", (sweep,)).fetchone()[0]
            for position, spec in enumerate(specs):
                spec_hash = spec.content_hash
                cursor.execute(
                    "INSERT OR IGNORE INTO experiments (spec_hash, label, spec_json, status, "
                    "created_at) VALUES (?, ?, ?, 'pending', ?)",
                    (spec_hash, spec.label, spec.canonical_json(), now))
                new += cursor.rowcount
                cursor.execute("INSERT OR IGNORE INTO sweep_members VALUES (?, ?, ?)",
                               (sweep, spec_hash, offset + position))
        return new

    @_guarded("opening a driver session")
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

    @_guarded("writing the driver's heartbeat")
    def heartbeat(self, session_id: str) -> None:
        """Tell other drivers this session is alive."""
        with self._transaction() as cursor:
            cursor.execute("UPDATE sessions SET heartbeat_at = ? WHERE session_id = ?",
                           (time.time(), session_id))

    @_guarded("closing the driver session")
    def close_session(self, session_id: str, reason: str = "finished") -> None:
        """End a session; claims it still holds go back to pending."""
        now = time.time()
        with self._transaction() as cursor:
            self._hand_back(cursor, session_id, "released", now)
            cursor.execute("UPDATE sessions SET ended_at = ?, end_reason = ? "
                           "WHERE session_id = ?", (now, reason, session_id))

    @_guarded("handing back claims of dead drivers")
    def reclaim_abandoned(self, stale_after_s: float = 120.0) -> int:
        """Hand back the claims of dead sessions: ended ones; on this host, those whose process
        no longer exists; on other hosts, those silent (no heartbeat) for stale_after_s.
        Returns how many points went back to pending."""
        now = time.time()
        host = socket.gethostname()
        reclaimed = 0
        with self._transaction() as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT s.session_id, s.host, s.pid, s.started_at, s.heartbeat_at, "
                "s.ended_at "
                "FROM experiments e JOIN sessions s ON e.session_id = s.session_id "
                "WHERE e.status = 'running'").fetchall()
            for row in rows:
                silent_s = now - row["heartbeat_at"]
                if row["ended_at"] is not None:
                    dead = True
                elif row["host"] == host:
                    # The process table is the truth here, never silence: a live driver may be
                    # busy for hours. A process with the driver's id that started after the
                    # session did is another process reusing a dead driver's id. Only where
                    # the start time is unknown (no /proc) does silence far beyond the limit
                    # stand in for that check.
                    started = process_started_at(row["pid"])
                    reused = (silent_s > 10 * stale_after_s if started is None else
                              started > row["started_at"] + PID_START_SLACK_S)
                    dead = not process_alive(row["pid"]) or reused
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

    @_guarded("claiming a point")
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

    @_guarded("recording a result")
    def record_result(self, claim: Claim, metrics: dict, diagnostics: dict, provenance: dict,
                      seconds: float) -> bool:
        """Store a finished point if this claim still owns it (else the attempt is marked
        'rejected' and False returned, so a point is never recorded twice)."""
        now = time.time()
        flags: dict[str, list] = {"metrics": [], "diagnostics": [], "provenance": []}
        texts = {name: _dumps(value, flags[name]) for name, value in
                 (("metrics", metrics), ("diagnostics", diagnostics),
                  ("provenance", provenance))}
        non_finite = _dumps(flags) if any(flags.values()) else None
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE experiments SET status = 'done', finished_at = ?, seconds = ?, "
                "metrics_json = ?, diagnostics_json = ?, provenance_json = ?, error = NULL, "
                "non_finite_json = ?, session_id = NULL WHERE spec_hash = ? AND "
                "status = 'running' AND session_id = ?",
                (now, seconds, texts["metrics"], texts["diagnostics"], texts["provenance"],
                 non_finite, claim.spec_hash, claim.session_id))
            accepted = cursor.rowcount == 1
            cursor.execute("UPDATE attempts SET outcome = ?, ended_at = ? WHERE attempt_id = ?",
                           ("done" if accepted else "rejected", now, claim.attempt_id))
        return accepted

    @_guarded("recording a failure")
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

    @_guarded("releasing a claim")
    def release(self, claim: Claim) -> None:
        """Give a claim back unrun (the driver is stopping)."""
        with self._transaction() as cursor:
            _return_to_pending(cursor, claim, "released", None, time.time())

    @_guarded("handing a point back")
    def requeue(self, claim: Claim, reason: str, kind: str = "requeued") -> None:
        """Hand a point back to pending without charging its retry budget: its worker died or
        stalled, or the scheduler went away (infrastructure, not the point). The attempt ends
        'lost' with `reason`; an event (kind 'requeued' or 'interrupted') records why."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {kind!r}.")
        now = time.time()
        with self._transaction() as cursor:
            _return_to_pending(cursor, claim, "lost", reason, now)
            cursor.execute("INSERT INTO events (at, kind, spec_hash, session_id, detail) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (now, kind, claim.spec_hash, claim.session_id, reason))

    @_guarded("recording an event")
    def add_event(self, kind: str, detail: str, *, spec_hash: str | None = None,
                  session_id: str | None = None, sweep: str | None = None) -> None:
        """Append one row to the events table (why something happened to a point or sweep)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {kind!r}.")
        with self._transaction() as cursor:
            cursor.execute("INSERT INTO events (at, kind, sweep, spec_hash, session_id, detail) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (time.time(), kind, sweep, spec_hash, session_id, detail))

    @_guarded("reading the events")
    def events(self, spec_hash: str | None = None) -> list[EventRecord]:
        """The events log (all, or one point's), oldest first; empty for a schema-1 store."""
        if self._schema_version < 2:
            return []
        query = "SELECT * FROM events"
        arguments: tuple = ()
        if spec_hash is not None:
            query += " WHERE spec_hash = ?"
            arguments = (spec_hash,)
        return [EventRecord(row["event_id"], row["at"], row["kind"], row["sweep"],
                            row["spec_hash"], row["session_id"], row["detail"])
                for row in self._connection.execute(query + " ORDER BY event_id", arguments)]

    # -- reading --------------------------------------------------------------------------------

    @_guarded("reading the sweeps")
    def sweeps(self) -> list[str]:
        """Names of the sweeps registered in this store."""
        rows = self._connection.execute("SELECT DISTINCT sweep FROM sweep_members ORDER BY sweep")
        return [row[0] for row in rows]

    @_guarded("reading a point's status")
    def status(self, spec_hash: str) -> str | None:
        """The status of one experiment (None when the store does not know it)."""
        row = self._connection.execute("SELECT status FROM experiments WHERE spec_hash = ?",
                                       (spec_hash,)).fetchone()
        return None if row is None else row[0]

    @_guarded("reading the statuses")
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

    @_guarded("reading the results")
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
        return [self._record(row) for row in self._connection.execute(query, arguments)]

    def _record(self, row: sqlite3.Row) -> ExperimentRecord:
        flags: dict[str, list] = {}
        if self._schema_version >= 2 and row["non_finite_json"] is not None:
            flags = json.loads(row["non_finite_json"])
        # Schema-1 rows may hold NaN/Infinity literals, which Python's json reads back.
        return ExperimentRecord(
            row["spec_hash"], row["label"], json.loads(row["spec_json"]), row["status"],
            row["attempts"], row["seconds"],
            _loads(row["metrics_json"], flags.get("metrics")),
            _loads(row["diagnostics_json"], flags.get("diagnostics")),
            _loads(row["provenance_json"], flags.get("provenance")), row["error"],
            row["finished_at"],
            tuple(f"{name}/{'/'.join(map(str, path))}" for name, entries in sorted(flags.items())
                  for path, _ in entries))

    @_guarded("reading the attempt log")
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


def _return_to_pending(cursor: sqlite3.Cursor, claim: Claim, outcome: str, error: str | None,
                       now: float) -> None:
    """A claimed point goes back to pending (only if this session still holds it) and its
    attempt ends with `outcome` — 'released' (the driver stops) or 'lost' (infrastructure)."""
    cursor.execute("UPDATE experiments SET status = 'pending', session_id = NULL "
                   "WHERE spec_hash = ? AND status = 'running' AND session_id = ?",
                   (claim.spec_hash, claim.session_id))
    cursor.execute("UPDATE attempts SET outcome = ?, error = ?, ended_at = ? "
                   "WHERE attempt_id = ?", (outcome, error, now, claim.attempt_id))


class SessionHeartbeat:
    """Writes a driver session's heartbeat every `every_s` seconds from a thread of its own,
    with its own connection to the store, for as long as the `with` block runs.

    Why a thread: a point run in the driver's own process (`--workers 0`) holds the driver's
    loop for its whole run, minutes to hours; a heartbeat written only between points would let
    another driver take the session for dead and reclaim its claim
    (`ResultsStore.reclaim_abandoned`), and the finished result would then be refused. A fault
    of the store in the thread stops the heartbeat quietly: the driver's own next write reports
    the same fault."""

    def __init__(self, path: str | Path, session_id: str, every_s: float):
        if not every_s > 0:
            raise ValueError(f"every_s must be positive, got {every_s!r}.")
        self.path = Path(path)
        self.session_id = session_id
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="krenorm-heartbeat",
                                        daemon=True)

    def _beat(self) -> None:
        with contextlib.suppress(StoreError), ResultsStore(self.path) as store:
            while not self._stop.wait(self.every_s):
                store.heartbeat(self.session_id)

    def __enter__(self) -> SessionHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
