"""CIFAR-10 sources: python batches (folder or tar.gz) and the JPEG layout (zip or folder).

Python batches are pickles of {'data': uint8 (10000, 3072) channel-major, 'labels': [...]},
read with the numpy-only unpickler. The JPEG layout is `train/<class>/NNNN.jpg` (5000 per class)
and `test/<class>/NNNN.jpg` (1000 per class); sorted names give the original order. Only the
requested classes are decoded (Pillow, converted to RGB) and cached per class.

A source file is hashed from its bytes whenever it is decoded and must still have the digest its
cache key was made from; cached arrays are checked against the manifest written with them
(krenorm.data.array_cache).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from krenorm.data.array_cache import cached_arrays
from krenorm.data.catalog import (
    CIFAR10_BATCHES_DIR,
    CIFAR10_JPEG_LABEL,
    CIFAR10_JPEG_ZIP_SHA256,
    CIFAR10_OFFICIAL_MD5,
    CIFAR10_TARBALL,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    CLASS_NAMES,
)
from krenorm.data.errors import DatasetUnavailableError
from krenorm.data.integrity import (
    file_digest,
    read_verified_bytes,
    require_file_sha256,
    require_sha256,
    sha256_bytes,
    sha256_file,
)
from krenorm.data.locations import shared_cifar10_zip
from krenorm.data.raw import RawImages, SourceRecord, in_memory_loader
from krenorm.data.safe_pickle import restricted_loads

_SIDE = 32
_CHANNELS = 3
_CHANGED_REMEDY = "It changed after it was located; load again, or restore the original file."
_JPEG_NOTE = (
    f"{CIFAR10_JPEG_LABEL}: JPEG-compressed pixels, mean absolute error about 5.8/255 against "
    "the original; results on it must say so"
)

# ---------------------------------------------------------------------------------------------
# Python batches


def _decode_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    content = restricted_loads(data)
    if not isinstance(content, dict):
        raise ValueError(f"{what} is not a CIFAR-10 batch (no dict inside).")
    keyed = {key.decode("latin1") if isinstance(key, bytes) else key: value
             for key, value in content.items()}
    pixels, labels = keyed.get("data"), keyed.get("labels")
    if not isinstance(pixels, np.ndarray) or labels is None:
        raise ValueError(f"{what} lacks 'data' and 'labels'; it is not a CIFAR-10 batch.")
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim != 2 or pixels.shape[1] != _CHANNELS * _SIDE * _SIDE:
        raise ValueError(f"{what}: data has shape {pixels.shape}, expected (n, 3072).")
    labels_array = np.asarray(labels, dtype=np.int64)
    if labels_array.shape != (pixels.shape[0],) or labels_array.min(initial=0) < 0 or (
        labels_array.max(initial=0) > 9
    ):
        raise ValueError(f"{what}: labels must be n integers in 0..9.")
    images = pixels.reshape(-1, _CHANNELS, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels_array


def _assemble_batches(read: Callable[[str], bytes]) -> dict[str, np.ndarray]:
    train = [_decode_batch(read(name), name) for name in CIFAR10_TRAIN_BATCHES]
    test_images, test_labels = _decode_batch(read(CIFAR10_TEST_BATCH), CIFAR10_TEST_BATCH)
    return {
        "train_images": np.concatenate([images for images, _ in train]),
        "train_labels": np.concatenate([labels for _, labels in train]),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def batches_folder(folder: Path) -> Path | None:
    """`folder` or `folder/cifar-10-batches-py` if it holds all six batch files."""
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    for candidate in (folder, folder / CIFAR10_BATCHES_DIR):
        if all((candidate / name).is_file() for name in names):
            return candidate
    return None


def _combined_key(prefix: str, digests: Iterable[str]) -> str:
    return f"{prefix}-{sha256_bytes(''.join(digests).encode())[:16]}"


def cifar_from_batches(folder: Path) -> RawImages:
    """CIFAR-10 from a cifar-10-batches-py folder."""
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    hashes = tuple((name, sha256_file(folder / name)) for name in names)
    verified = all(
        file_digest(folder / name, "md5") == CIFAR10_OFFICIAL_MD5[name] for name in names
    )
    expected = dict(hashes)
    arrays = cached_arrays(
        _combined_key("cifar10-batches", (digest for _, digest in hashes)),
        lambda: _assemble_batches(
            lambda name: read_verified_bytes(folder / name, expected[name], _CHANGED_REMEDY)),
    )
    notes = () if verified else ("batch files differ from the official CIFAR-10 MD5 values",)
    record = SourceRecord("user-dir", str(folder), hashes, verified, notes=notes)
    return RawImages("cifar10", record, in_memory_loader(arrays))


def _read_tarball(path: Path, digest: str) -> dict[str, np.ndarray]:
    require_file_sha256(path, digest, _CHANGED_REMEDY)
    with tarfile.open(path, "r:gz") as archive:
        members = {Path(member.name).name: member for member in archive.getmembers()
                   if member.isfile()}

        def read(name: str) -> bytes:
            if name not in members:
                raise ValueError(f"{path} has no {name}; it is not cifar-10-python.tar.gz.")
            handle = archive.extractfile(members[name])
            if handle is None:
                raise ValueError(f"{path}: cannot read {name}.")
            return handle.read()

        return _assemble_batches(read)


def cifar_from_tarball(path: Path) -> RawImages:
    """CIFAR-10 from cifar-10-python.tar.gz, read in place (nothing is extracted to disk)."""
    digest = sha256_file(path)
    verified = file_digest(path, "md5") == CIFAR10_OFFICIAL_MD5[CIFAR10_TARBALL]
    arrays = cached_arrays(f"cifar10-tarball-{digest[:16]}", lambda: _read_tarball(path, digest))
    notes = () if verified else ("archive differs from the official CIFAR-10 MD5 value",)
    record = SourceRecord("user-dir", str(path), ((path.name, digest),), verified, notes=notes)
    return RawImages("cifar10", record, in_memory_loader(arrays))


# ---------------------------------------------------------------------------------------------
# JPEG layout


def _decode_jpegs(blobs: Iterable[bytes]) -> np.ndarray:
    images = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    if not images:
        return np.zeros((0, _SIDE, _SIDE, _CHANNELS), dtype=np.uint8)
    return np.stack(images)


def _jpeg_split_loader(
    read_class: Callable[[str, str], np.ndarray],
) -> Callable[[str, tuple[int, ...]], tuple[np.ndarray, np.ndarray]]:
    names = CLASS_NAMES["cifar10"]

    def load(split: str, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        # Classes in label order, so the result keeps the official split order within a label.
        parts = [(label, read_class(split, names[label])) for label in sorted(classes)]
        if not parts:
            return np.zeros((0, _SIDE, _SIDE, _CHANNELS), np.uint8), np.zeros(0, np.int64)
        images = np.concatenate([images for _, images in parts])
        labels = np.concatenate([np.full(len(images), label, np.int64) for label, images in parts])
        return images, labels

    return load


def _zip_class_reader(path: Path, digest: str) -> Callable[[str, str], np.ndarray]:
    rehashed = False

    def decode_checked(split: str, class_name: str) -> dict[str, np.ndarray]:
        # The zip is hashed from its bytes before its first member is decoded (≈0.1 s for the
        # 62 MB copy, once per located source rather than once per class).
        nonlocal rehashed
        if not rehashed:
            require_file_sha256(path, digest, _CHANGED_REMEDY)
            rehashed = True
        return decode(split, class_name)

    def decode(split: str, class_name: str) -> dict[str, np.ndarray]:
        prefix = f"{split}/{class_name}/"
        with zipfile.ZipFile(path) as archive:
            members = sorted(name for name in archive.namelist()
                             if name.startswith(prefix) and name.endswith(".jpg"))
            if not members:
                raise ValueError(f"{path} has no {prefix}*.jpg; it is not the JPEG layout.")
            return {"images": _decode_jpegs(archive.read(name) for name in members)}

    def read_class(split: str, class_name: str) -> np.ndarray:
        key = f"cifar10-jpeg-{digest[:16]}-{split}-{class_name}"
        return cached_arrays(key, lambda: decode_checked(split, class_name))["images"]

    return read_class


def cifar_from_jpeg_zip(path: Path, kind: str) -> RawImages:
    """CIFAR-10 from a zip in the JPEG layout; the shared copy must match its pinned SHA-256."""
    digest = sha256_file(path)
    verified = digest == CIFAR10_JPEG_ZIP_SHA256
    if kind == "shared-zip":
        require_sha256(
            digest, CIFAR10_JPEG_ZIP_SHA256, f"shared CIFAR-10 zip {path}",
            "Restore ../shared/datasets/cifar10_jpeg.zip from the project's shared folder.",
        )  # fmt: skip
    record = SourceRecord(
        kind, str(path), ((path.name, digest),), verified, jpeg_copy=True, notes=(_JPEG_NOTE,)
    )
    return RawImages("cifar10", record, _jpeg_split_loader(_zip_class_reader(path, digest)))


def jpeg_folder(folder: Path) -> bool:
    """True when `folder` has the JPEG layout (train/airplane/ and test/airplane/ exist)."""
    first = CLASS_NAMES["cifar10"][0]
    return (folder / "train" / first).is_dir() and (folder / "test" / first).is_dir()


def cifar_from_jpeg_folder(folder: Path) -> RawImages:
    """CIFAR-10 from an unpacked JPEG layout; decoded on every load (no source hash to key on)."""

    def read_class(split: str, class_name: str) -> np.ndarray:
        files = sorted((folder / split / class_name).glob("*.jpg"))
        return _decode_jpegs(file.read_bytes() for file in files)

    record = SourceRecord(
        "user-dir", str(folder), (), checksums_verified=False, jpeg_copy=True, notes=(_JPEG_NOTE,)
    )
    return RawImages("cifar10", record, _jpeg_split_loader(read_class))


def shared_cifar10() -> RawImages:
    """CIFAR-10 (JPEG copy) from ../shared/datasets/cifar10_jpeg.zip."""
    path = shared_cifar10_zip()
    if path is None:
        raise DatasetUnavailableError(
            "cifar10_jpeg.zip not found in ../shared/datasets next to the repository; set "
            "$KRENORM_SHARED_DATASETS to the folder that holds it."
        )
    return cifar_from_jpeg_zip(path, "shared-zip")
