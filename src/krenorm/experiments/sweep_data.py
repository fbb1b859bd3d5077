"""The data of an experiment: loading a `DataSpec`, a fingerprint of the arrays actually used,
and the checks a config can only make with the data in hand — done once per distinct data set
in the driver, before any work (docs/architecture.md "Data without a network"; docs/data.md).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

import torch

from krenorm.data import Dataset
from krenorm.experiments.datasets import DATASET_LOADERS, dataset_options
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.spec import DataSpec, ExperimentSpec

__all__ = ["DATASET_LOADERS", "check_points_data", "data_fingerprint", "dataset_options",
           "load_point_data"]


def _loader_message(dataset: str, error: Exception) -> str:
    """A loader's message, as ``options.<name> …`` when it starts with one of its options."""
    message = str(error)
    for name in dataset_options(dataset):
        if message.startswith(name):
            return f"options.{message}"
    return message


@functools.lru_cache(maxsize=4)
def load_point_data(spec: DataSpec) -> Dataset:
    """The Dataset of a spec. Memoised per process: consecutive points usually share their data,
    and loading is a pure function of the (frozen) spec. A loader's refusal of its arguments
    becomes a ConfigError (``data.options.<name> …`` when the loader names the option)."""
    try:
        return DATASET_LOADERS[spec.dataset](n_train=spec.n_train, n_test=spec.n_test,
                                             seed=spec.seed, **spec.option_dict())
    except (TypeError, ValueError) as error:
        message = _loader_message(spec.dataset, error)
        if message.startswith("options."):
            raise ConfigError(f"data.{message}") from error
        raise ConfigError(f"data ({spec.dataset}, P={spec.n_train}, seed={spec.seed}): "
                          f"{message}") from error


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over shapes and float64 bytes of x_train, y_train, x_test, y_test: identifies the
    exact arrays a result was computed on, for synthetic and real data alike."""
    digest = hashlib.sha256()
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array = tensor.detach().to("cpu", torch.float64).contiguous().numpy()
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_points_data(points: Iterable[tuple[ExperimentSpec, str, str]]) -> None:
    """Load each distinct data spec once and check that every architecture fits its inputs
    (images for convolutional kinds, mask within the padded image).

    points: (spec, where its data came from, where its architecture came from), the `where`s
    naming config fields (``data``, ``points[2].data``, ``architectures[1]``)."""
    shapes: dict[DataSpec, tuple[int, ...]] = {}
    for spec, data_where, architecture_where in points:
        if spec.data not in shapes:
            try:
                dataset = load_point_data(spec.data)
            except ConfigError as error:  # name the config's own data table
                raise ConfigError(f"{data_where}{str(error).removeprefix('data')}") from error
            except Exception as error:  # missing files, checksum mismatch: say which data
                raise ConfigError(f"{data_where}.dataset = {spec.data.dataset!r} cannot be "
                                  f"loaded: {error}") from error
            shapes[spec.data] = tuple(dataset.x_train.shape[1:])
        shape = shapes[spec.data]
        architecture = spec.architecture
        if architecture.is_convolutional:
            if len(shape) != 3:
                raise ConfigError(f"{architecture_where}.kind = {architecture.kind!r} needs "
                                  f"images (c, H, W) but {data_where}.dataset = "
                                  f"{spec.data.dataset!r} gives inputs of shape {shape}.")
            try:
                architecture.output_grid((shape[0], shape[1], shape[2]))
            except ValueError as error:
                raise ConfigError(f"{architecture_where}.mask on {data_where}.dataset = "
                                  f"{spec.data.dataset!r} images {shape}: {error}") from error
