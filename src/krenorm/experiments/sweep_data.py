"""The data of a sweep point: dataset names a sweep may use, the keyword options each accepts,
loading a `DataSpec` and a fingerprint of the arrays actually used (ARCHITECTURE.md "Data
without a network"; docs/data.md)."""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable

import torch

from krenorm.data import Dataset, fc_teacher, linear_teacher, load_dataset, local_teacher
from krenorm.experiments.config import ConfigError
from krenorm.experiments.spec import DataSpec

#: Arguments a DataSpec sets itself (n_train, n_test, seed) or that a sweep may not set
#: (machine-specific paths, in-memory images).
_RESERVED = frozenset({"name", "n_train", "n_test", "seed", "data_dir", "allow_fetch", "images"})


def _real(name: str) -> Callable[..., Dataset]:
    def load(**arguments) -> Dataset:
        return load_dataset(name, **arguments)

    load.__signature__ = inspect.signature(load_dataset)  # the options are load_dataset's
    return load


#: Dataset name in a sweep config → function (n_train=, n_test=, seed=, **options) → Dataset.
DATASET_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": _real("mnist"),
    "fashion-mnist": _real("fashion-mnist"),
    "cifar10": _real("cifar10"),
    "linear-teacher": linear_teacher,
    "fc-teacher": fc_teacher,
    "local-teacher": local_teacher,
}


def dataset_options(dataset: str) -> tuple[str, ...]:
    """Names a sweep may set under [data.options] for this dataset."""
    parameters = inspect.signature(DATASET_LOADERS[dataset]).parameters
    return tuple(name for name in parameters if name not in _RESERVED)


def check_data_spec(spec: DataSpec, where: str = "data") -> None:
    """Refuse an unknown dataset or option, naming the field (`where`.dataset / .options.X)."""
    if spec.dataset not in DATASET_LOADERS:
        raise ConfigError(f"{where}.dataset must be one of {sorted(DATASET_LOADERS)}, got "
                          f"{spec.dataset!r}.")
    allowed = dataset_options(spec.dataset)
    for key, _ in spec.options:
        if key not in allowed:
            raise ConfigError(f"{where}.options.{key} is not an option of dataset "
                              f"{spec.dataset!r}; allowed: {sorted(allowed)}.")


@functools.lru_cache(maxsize=4)
def load_point_data(spec: DataSpec) -> Dataset:
    """The Dataset of a spec. Memoised per process: consecutive points of a sweep usually share
    their data, and loading is a pure function of the (frozen) spec."""
    check_data_spec(spec)
    try:
        return DATASET_LOADERS[spec.dataset](n_train=spec.n_train, n_test=spec.n_test,
                                             seed=spec.seed, **spec.option_dict())
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data ({spec.dataset}, P={spec.n_train}, seed={spec.seed}): "
                          f"{error}") from error


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over shapes and float64 bytes of x_train, y_train, x_test, y_test: identifies the
    exact arrays a result was computed on, for synthetic and real data alike."""
    digest = hashlib.sha256()
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array = tensor.detach().to("cpu", torch.float64).contiguous().numpy()
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
