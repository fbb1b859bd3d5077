"""Decoded arrays kept as .npz files in <cache>/arrays, keyed by the SHA-256 of their source.

Decoding the MNIST pickle (≈1.5 s) or a CIFAR-10 class from JPEG (≈0.6 s) happens once per source
file; later loads read uncompressed .npz (allow_pickle=False, so a cache file cannot run code).

A cache file is trusted for its content, never for its name, size or date. Every load hashes
the arrays it returns (≈30 ms for the 47 MB of MNIST training images) and compares them with
- the caller's own check when there is one (MNIST: the pinned SHA-256 of the canonical arrays,
  so a cache file edited by anyone is refused), else
- the manifest of digests written into the file when it was built (this catches truncation,
  bit rot and edits that do not also rewrite the manifest).
A file that fails its check is reported with a `CacheIntegrityWarning` and rebuilt from the
source, which the builder verifies again; a file that cannot be read, or was written without a
manifest by an older version, is rebuilt silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from krenorm.data.integrity import sha256_array, write_atomically
from krenorm.data.locations import cache_dir

Arrays = dict[str, np.ndarray]
#: A content check of loaded arrays: True when they are the ones the source decodes to.
ArrayCheck = Callable[[Arrays], bool]

#: Name of the manifest entry inside each cache file (not a valid name for a cached array).
MANIFEST_ENTRY = "__krenorm_manifest__"


class CacheIntegrityWarning(RuntimeWarning):
    """A cache file's content failed its integrity check; it was discarded and rebuilt."""


def array_digest(array: np.ndarray) -> str:
    """SHA-256 over an array's dtype, shape and raw bytes (so a reshaped or recast array with
    the same bytes does not pass for the original)."""
    header = f"{np.dtype(array.dtype).str}{tuple(array.shape)}:"
    return f"{header}{sha256_array(array)}"


def manifest(arrays: Arrays) -> dict[str, str]:
    """Digest of every array, by name."""
    return {name: array_digest(array) for name, array in sorted(arrays.items())}


def cache_path(key: str) -> Path:
    """<cache>/arrays/<key>.npz, refusing keys that could leave that folder."""
    if not key.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"cache key must be alphanumeric with - or _, got {key!r}.")
    return cache_dir() / "arrays" / f"{key}.npz"


def _read(path: Path) -> tuple[Arrays, dict[str, str] | None] | None:
    """The arrays and the stored manifest of a cache file; None when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files if name != MANIFEST_ENTRY}
            recorded = (json.loads(str(stored[MANIFEST_ENTRY][()]))
                        if MANIFEST_ENTRY in stored.files else None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if recorded is not None and not isinstance(recorded, dict):
        return None
    return arrays, recorded


def _failed_check(arrays: Arrays, recorded: dict[str, str] | None,
                  check: ArrayCheck | None) -> str | None:
    """Why the loaded arrays cannot be used (None when they can)."""
    if check is not None:
        return None if check(arrays) else "its arrays differ from the pinned SHA-256 values"
    if recorded is None:
        return "it has no manifest (written by an older version)"
    if manifest(arrays) != recorded:
        return "its arrays differ from the digests recorded when it was built"
    return None


def write_cache_file(path: Path, arrays: Arrays) -> None:
    """Store arrays with their manifest, atomically; an unwritable cache is not an error (it
    only costs decoding again next time)."""
    if MANIFEST_ENTRY in arrays:
        raise ValueError(f"{MANIFEST_ENTRY!r} is reserved for the cache manifest.")
    buffer = io.BytesIO()
    contents = {**arrays, MANIFEST_ENTRY: np.array(json.dumps(manifest(arrays)))}
    np.savez(buffer, allow_pickle=False, **contents)
    with contextlib.suppress(OSError):
        write_atomically(path, buffer.getvalue())


def cached_arrays(key: str, build: Callable[[], Arrays], *,
                  check: ArrayCheck | None = None) -> Arrays:
    """Arrays stored under `key`, built by `build()` and saved on first use.

    check: a content check of the arrays (e.g. against pinned hashes); it replaces the stored
    manifest as the test of a cache file. Built arrays are the builder's responsibility (it
    verifies its source), so they are stored as returned.
    """
    path = cache_path(key)
    if path.is_file():
        loaded = _read(path)
        if loaded is not None:
            arrays, recorded = loaded
            reason = _failed_check(arrays, recorded, check)
            if reason is None:
                return arrays
            if recorded is not None or check is not None:
                warnings.warn(
                    f"cache file {path} is not trusted: {reason}. It is discarded and rebuilt "
                    "from the verified source.", CacheIntegrityWarning, stacklevel=2,
                )  # fmt: skip
    arrays = build()
    write_cache_file(path, arrays)
    return arrays
