"""Dataset names an experiment may use and the keyword options each accepts (docs/data.md).

A data set of an experiment is named by a string and built by one loader function
``loader(n_train=, n_test=, seed=, **options)``; this module is the registry of those loaders.
It loads nothing itself (see `sweep_data.load_point_data`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from krenorm.data import Dataset, fc_teacher, linear_teacher, load_dataset, local_teacher

#: Arguments an experiment's data spec sets itself (n_train, n_test, seed) or that a config may
#: not set (machine-specific paths, in-memory images).
_RESERVED = frozenset({"name", "n_train", "n_test", "seed", "data_dir", "allow_fetch", "images"})


def _real(name: str) -> Callable[..., Dataset]:
    def load(**arguments: Any) -> Dataset:
        return load_dataset(name, **arguments)

    load.__signature__ = inspect.signature(load_dataset)  # type: ignore[attr-defined]
    return load


#: Dataset name in a config → function (n_train=, n_test=, seed=, **options) → Dataset.
DATASET_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": _real("mnist"),
    "fashion-mnist": _real("fashion-mnist"),
    "cifar10": _real("cifar10"),
    "linear-teacher": linear_teacher,
    "fc-teacher": fc_teacher,
    "local-teacher": local_teacher,
}

#: Options holding a list of values (not a sweep axis): they must be written as a list.
LIST_OPTIONS = frozenset({"classes", "image_shape"})


def dataset_options(dataset: str) -> tuple[str, ...]:
    """Names a config may set as options of this dataset."""
    parameters = inspect.signature(DATASET_LOADERS[dataset]).parameters
    return tuple(name for name in parameters if name not in _RESERVED)
