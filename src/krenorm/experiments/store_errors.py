"""Storage faults of the results store as one clear error (docs/sweeps.md "Failure modes").

SQLite reports a read-only file, a full disk (or a file-size limit), a locked database and a
damaged file as `sqlite3.Error`s (sometimes as a bare `OSError`) whose text names neither the
file nor a remedy. `store_fault` turns each into a `StoreError` that names the file, says what
happened and what to do. Every change of the store is one committed transaction, so whatever
was recorded before the fault is intact; the message says so.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path


class StoreError(RuntimeError):
    """The results store cannot be read or written. `path` is the database file, `kind` one of
    'read-only', 'disk-full', 'locked', 'corrupted', 'unreadable', 'schema', 'other'."""

    def __init__(self, message: str, *, path: Path, kind: str):
        super().__init__(message)
        self.path = path
        self.kind = kind


#: Text SQLite uses for each kind of fault (lower case), and the advice given for it.
_KINDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("read-only", ("readonly", "read-only", "read only"),
     "the file (or its folder, which must hold the -wal and -shm files) is read-only. Make it "
     "writable, or copy the store to a writable place and pass --db; `krenorm report` reads a "
     "read-only store as it is."),
    ("disk-full", ("database or disk is full", "disk i/o error", "file too large"),
     "the disk (or a file-size limit) is full. Free space or move the store (--db), then rerun "
     "the same command: it resumes, and no finished point is run again."),
    ("locked", ("database is locked", "database table is locked"),
     "another process held the write lock longer than the busy timeout. Rerun the command; if "
     "it persists, look for a stuck process using the store."),
    ("corrupted", ("file is not a database", "malformed", "file is encrypted"),
     "the file is damaged or is not a krenorm results store. Restore it from a copy, or salvage "
     "it with `sqlite3 FILE .recover | sqlite3 NEW.sqlite` and pass --db NEW.sqlite."),
    ("unreadable", ("unable to open database file",),
     "the file or its folder cannot be opened (missing folder, permissions). Check the path "
     "given to --db."),
)


def classify(error: BaseException) -> tuple[str, str]:
    """(kind, advice) of a storage error."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return _KINDS[1][0], _KINDS[1][2]
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return _KINDS[0][0], _KINDS[0][2]
    text = str(error).lower()
    for kind, needles, advice in _KINDS:
        if any(needle in text for needle in needles):
            return kind, advice
    return "other", "see the SQLite message above; finished points are kept."


def store_fault(path: Path, action: str, error: BaseException) -> StoreError:
    """A StoreError for `error`, raised while `action` (e.g. 'recording a result')."""
    kind, advice = classify(error)
    return StoreError(f"results store {path}: {action} failed ({type(error).__name__}: {error}): "
                      f"{advice} Points recorded before this are intact (each result is its "
                      "own committed transaction).", path=path, kind=kind)


#: Errors `store_fault` translates.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
