"""Datasets (MNIST, Fashion-MNIST, CIFAR-10, synthetic tasks) loaded without run-time downloads,
preprocessing and label maps (docs/architecture.md "Data without a network"; docs/data.md)."""

from krenorm.data.array_cache import CacheIntegrityWarning
from krenorm.data.catalog import CIFAR10_JPEG_LABEL, CLASS_NAMES, DATASET_NAMES
from krenorm.data.dataset import Dataset, Provenance
from krenorm.data.errors import ChecksumMismatchError, DatasetUnavailableError, UnsafePickleError
from krenorm.data.loader import load_dataset
from krenorm.data.raw import SourceRecord
from krenorm.data.safe_pickle import restricted_loads
from krenorm.data.sources import locate
from krenorm.data.status import SourceStatus, data_status
from krenorm.data.synthetic import (
    fc_teacher,
    hypercube_task,
    linear_teacher,
    local_teacher,
    walsh_target,
)

__all__ = [
    "CIFAR10_JPEG_LABEL",
    "CLASS_NAMES",
    "DATASET_NAMES",
    "CacheIntegrityWarning",
    "ChecksumMismatchError",
    "Dataset",
    "DatasetUnavailableError",
    "Provenance",
    "SourceRecord",
    "SourceStatus",
    "UnsafePickleError",
    "data_status",
    "fc_teacher",
    "hypercube_task",
    "linear_teacher",
    "load_dataset",
    "local_teacher",
    "locate",
    "restricted_loads",
    "walsh_target",
]
