"""SHA-256 of files and arrays, with a small cache of already-hashed files.

Hashing is lazy: a file is hashed the first time a loader needs it, and the result is kept in
<cache>/verified_sha256.json so that later loads skip re-reading large archives (the 62 MB
CIFAR-10 zip). An entry is trusted only while the file's fingerprint is unchanged: size,
modification time, *status-change time* and inode. The status-change time (ctime) is set by the
kernel on every write and on every `touch`/`os.utime`, so a file altered and then given back its
size and modification time has a new ctime and is hashed again; a file copied or moved to the
path has a new inode. (On Windows st_ctime is the creation time, so there the fingerprint is
weaker.) Loaders that decode a file hash it again from its bytes (`use_cache=False`) and check the
decoded arrays themselves (krenorm.data.array_cache), so the entry only ever saves a re-hash, it
never vouches for content that is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from krenorm.data.errors import ChecksumMismatchError
from krenorm.data.locations import cache_dir

_HASH_CACHE_NAME = "verified_sha256.json"
_READ_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's C-ordered raw bytes (dtype and shape are not included).

    Hashes the buffer in place (no copy when the array is already C-contiguous): ≈30 ms for the
    60000×28×28 uint8 MNIST training images."""
    contiguous = np.ascontiguousarray(array)
    return hashlib.sha256(contiguous.reshape(-1).view(np.uint8).data).hexdigest()


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_hash_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def file_fingerprint(path: Path) -> list[int]:
    """[size, mtime_ns, ctime_ns, inode, device]: what must be unchanged for a remembered digest
    to be reused. ctime cannot be set back by a user (os.utime itself updates it)."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def file_digest(path: Path, algorithm: str = "sha256", use_cache: bool = True) -> str:
    """Hex digest of a file; remembered per path and `file_fingerprint` when use_cache is True.

    algorithm is 'sha256' (our pins) or 'md5' (the only digests CIFAR-10 publishes).
    use_cache=False always reads the file (loaders do so for a file they are about to decode).
    """
    if algorithm not in ("sha256", "md5"):
        raise ValueError(f"algorithm must be 'sha256' or 'md5', got {algorithm!r}.")
    path = Path(path).resolve()
    key = f"{algorithm}:{path}"
    fingerprint = file_fingerprint(path)
    cache_file = cache_dir() / _HASH_CACHE_NAME
    if use_cache:
        entry = _read_hash_cache(cache_file).get(key)
        if entry and entry.get("fingerprint") == fingerprint:
            return entry["digest"]
    value = _hash_file(path, algorithm)
    if use_cache:
        table = _read_hash_cache(cache_file)
        table[key] = {"fingerprint": fingerprint, "digest": value}
        # An unwritable cache only costs re-hashing next time.
        with contextlib.suppress(OSError):
            write_atomically(cache_file, json.dumps(table, indent=1, sort_keys=True).encode())
    return value


def sha256_file(path: Path, use_cache: bool = True) -> str:
    """Hex SHA-256 of a file (see file_digest)."""
    return file_digest(path, "sha256", use_cache)


def require_sha256(actual: str, expected: str, what: str, remedy: str) -> None:
    """Refuse data whose SHA-256 is not the pinned one."""
    if actual != expected:
        raise ChecksumMismatchError(
            f"SHA-256 of {what} is {actual}, expected {expected}: the file was altered, "
            f"truncated or replaced. {remedy}"
        )


def read_verified_bytes(path: Path, expected: str, remedy: str, what: str | None = None
                        ) -> bytes:
    """The bytes of a file about to be decoded, refused unless their SHA-256 is `expected`
    (the digest the caller keyed its cache on, or a pin): what is decoded is what was checked.
    `what` names the file in the error (default: its path)."""
    data = Path(path).read_bytes()
    require_sha256(sha256_bytes(data), expected, what or str(path), remedy)
    return data


def require_file_sha256(path: Path, expected: str, remedy: str) -> None:
    """Hash a file from its bytes (never the remembered digest) and refuse it unless it is
    `expected`; for archives that are decoded member by member."""
    require_sha256(sha256_file(path, use_cache=False), expected, str(path), remedy)
