"""Raw images as a source holds them: uint8 arrays (N, H, W, C) and integer labels per split.

A `RawImages` knows where it came from (`SourceRecord`) and returns the images of requested
classes in the official order of the split; selection, scaling and labels happen later
(krenorm.data.preprocess).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")

#: kinds of source, in the order they are searched (docs/architecture.md "Data without a network").
SOURCE_KINDS: tuple[str, ...] = ("user-dir", "pypi-wheel", "debian", "shared-zip")


@dataclass(frozen=True)
class SourceRecord:
    """Where raw images came from.

    kind: one of SOURCE_KINDS; location: file or folder read; file_sha256: (file name, SHA-256)
    of every file read; checksums_verified: True when they (or the decoded arrays) equal pinned
    values; jpeg_copy: True for CIFAR-10 JPEG files (pixels differ from the original by JPEG
    compression); notes: anything a reader of results must know.
    """

    kind: str
    location: str
    file_sha256: tuple[tuple[str, str], ...]
    checksums_verified: bool
    jpeg_copy: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be one of {SOURCE_KINDS}, got {self.kind!r}.")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "location": self.location,
            "file_sha256": dict(self.file_sha256),
            "checksums_verified": self.checksums_verified,
            "jpeg_copy": self.jpeg_copy,
            "notes": list(self.notes),
        }


SplitLoader = Callable[[str, tuple[int, ...]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RawImages:
    """A located source of one data set; `split` decodes only what is asked for."""

    dataset: str
    record: SourceRecord
    loader: SplitLoader

    def split(self, split: str, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, H, W, C) uint8 and labels (n,) int64 of `classes`, in official order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        images, labels = self.loader(split, tuple(classes))
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"source {self.record.location} returned images {images.dtype} {images.shape} "
                f"and labels {labels.shape}; expected uint8 (n, H, W, C) and (n,)."
            )
        return images, labels


def filter_classes(
    images: np.ndarray, labels: np.ndarray, classes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label is in `classes`, keeping their original order."""
    keep = np.isin(labels, np.asarray(classes, dtype=labels.dtype))
    return images[keep], labels[keep].astype(np.int64)


def in_memory_loader(arrays: dict[str, np.ndarray]) -> SplitLoader:
    """Loader over fully decoded arrays with keys {split}_images (N, H, W, C), {split}_labels."""

    def load(split: str, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        return filter_classes(arrays[f"{split}_images"], arrays[f"{split}_labels"], classes)

    return load
