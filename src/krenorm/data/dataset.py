"""The result type of every loader and generator: `Dataset` with its `Provenance`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from krenorm.data.raw import SourceRecord


@dataclass(frozen=True)
class Provenance:
    """How a data set was made, enough to reproduce it and to label results honestly.

    description: the name results must carry ("MNIST", "CIFAR-10 (JPEG copy)", "synthetic …");
    source: the raw source (None for synthetic tasks); classes/class_names: selected labels in the
    order used for targets; preprocessing: each step applied, in order, with its statistics;
    parameters: the arguments that made it; image_sha256: SHA-256 of the selected uint8 images
    per split before preprocessing (real data only).
    """

    dataset: str
    description: str
    source: SourceRecord | None
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    seed: int
    preprocessing: tuple[str, ...]
    parameters: tuple[tuple[str, Any], ...] = ()
    image_sha256: tuple[tuple[str, str], ...] = ()

    @property
    def jpeg_copy(self) -> bool:
        """True when the pixels come from the CIFAR-10 JPEG copy."""
        return self.source is not None and self.source.jpeg_copy

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "description": self.description,
            "source": None if self.source is None else self.source.to_dict(),
            "jpeg_copy": self.jpeg_copy,
            "classes": list(self.classes),
            "class_names": list(self.class_names),
            "seed": self.seed,
            "preprocessing": list(self.preprocessing),
            "parameters": {key: _plain(value) for key, value in self.parameters},
            "image_sha256": dict(self.image_sha256),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Dataset:
    """Training and test sets, float64 torch tensors.

    x_*: (P, c, H, W) images or (P, D) vectors; y_*: (P,) targets ('pm1', synthetic), (P,) int64
    class labels ('raw') or (P, k) one-hot. teacher holds a synthetic task's hidden weights
    (empty for real data); treat it as read-only.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    provenance: Provenance
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim not in (2, 4) or y.ndim not in (1, 2) or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{split} inputs {tuple(x.shape)} and targets {tuple(y.shape)} do not fit: "
                    "inputs must be (P, c, H, W) or (P, D), targets (P,) or (P, k)."
                )

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def to_dict(self) -> dict:
        """Shapes, dtypes and provenance (the arrays themselves are not serialised)."""
        return {
            "name": self.name,
            "x_train_shape": list(self.x_train.shape),
            "y_train_shape": list(self.y_train.shape),
            "x_test_shape": list(self.x_test.shape),
            "y_test_shape": list(self.y_test.shape),
            "x_dtype": str(self.x_train.dtype).replace("torch.", ""),
            "y_dtype": str(self.y_train.dtype).replace("torch.", ""),
            "teacher": sorted(self.teacher),
            "provenance": self.provenance.to_dict(),
        }
