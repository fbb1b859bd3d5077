"""Decoded arrays kept as .npz files in <cache>/arrays, keyed by the SHA-256 of their source.

Decoding the MNIST pickle (≈1.5 s) or a CIFAR-10 class from JPEG (≈0.6 s) happens once per source
file; later loads read uncompressed .npz (allow_pickle=False, so a cache file cannot run code).
A missing, unreadable or stale cache file is simply rebuilt.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable

import numpy as np

from krenorm.data.integrity import write_atomically
from krenorm.data.locations import cache_dir

Arrays = dict[str, np.ndarray]


def cached_arrays(key: str, build: Callable[[], Arrays]) -> Arrays:
    """Arrays stored under `key`, built by `build()` and saved on first use."""
    if not key.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"cache key must be alphanumeric with - or _, got {key!r}.")
    path = cache_dir() / "arrays" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # corrupt cache file: rebuild it below
    arrays = build()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    # An unwritable cache only costs decoding again next time.
    with contextlib.suppress(OSError):
        write_atomically(path, buffer.getvalue())
    return arrays
