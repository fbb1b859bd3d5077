"""The experiment behind `krenorm convrfm` (docs/math/features.md §5, §6): a (Deep) ConvRFM
against its fixed convolutional kernel on one data set, with every choice (ridge, bandwidth,
round, per level) made on a validation split and the test split touched once at the end.

Data: the synthetic tasks of synthetic.py ("star", "bars", "noisy-frame-mnist") or a real data
set through krenorm.data.load_dataset ("mnist", "fashion-mnist", "cifar10", with `classes`).
Three disjoint splits: n_train fitting images, n_val validation images, n_test test images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from krenorm.features.convrfm import ConvRFMClassifier
from krenorm.features.deep_convrfm import DeepConvRFMClassifier
from krenorm.features.synthetic import LabelledImages, bars_task, noisy_frame_mnist, star_task

SYNTHETIC_TASKS = ("star", "bars", "noisy-frame-mnist")
DATASETS = ("mnist", "fashion-mnist", "cifar10")


@dataclass(frozen=True)
class Splits:
    """Fitting, validation and test images (P, c, H, W) with integer labels."""

    description: str
    x_fit: torch.Tensor
    y_fit: np.ndarray
    x_val: torch.Tensor
    y_val: np.ndarray
    x_test: torch.Tensor
    y_test: np.ndarray


def load_splits(
    data: str,
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    classes: Sequence[int | str] | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> Splits:
    """Three disjoint seeded splits of `data` (module docstring)."""
    if min(n_train, n_val, n_test) < 2:
        raise ValueError("n_train, n_val and n_test must each be >= 2.")
    if data in SYNTHETIC_TASKS:
        def draw(n: int, offset: int) -> LabelledImages:
            if data == "star":
                return star_task(n, seed=seed + offset)
            if data == "bars":
                return bars_task(n, seed=seed + offset)
            return noisy_frame_mnist(n, seed=seed + offset, classes=tuple(
                int(c) for c in classes) if classes else None,
                data_dir=None if data_dir is None else str(data_dir))  # fmt: skip

        # Noisy-frame MNIST draws its digits by seed from one training split: different seeds
        # can repeat a digit in a different frame position, which is what the task means.
        parts = [draw(n, offset) for offset, n in enumerate((n_train, n_val, n_test))]
        arrays = [(part.images, part.labels.numpy()) for part in parts]
        description = f"{data} (synthetic, seeds {seed}, {seed + 1}, {seed + 2})"
    elif data in DATASETS:
        from krenorm.data import load_dataset

        loaded = load_dataset(
            data, classes=classes, n_train=n_train + n_val, n_test=n_test, labels="raw",
            seed=seed, data_dir=data_dir,
        )  # fmt: skip
        order = torch.randperm(n_train + n_val, generator=torch.Generator().manual_seed(seed))
        fit, val = order[:n_train], order[n_train:]
        labels = loaded.y_train.numpy()
        arrays = [
            (loaded.x_train[fit], labels[fit.numpy()]),
            (loaded.x_train[val], labels[val.numpy()]),
            (loaded.x_test, loaded.y_test.numpy()),
        ]
        description = loaded.provenance.description
    else:
        raise ValueError(f"data must be one of {SYNTHETIC_TASKS + DATASETS}, got {data!r}.")
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = arrays
    return Splits(description, x_fit.float(), y_fit, x_val.float(), y_val, x_test.float(), y_test)


@dataclass(frozen=True)
class ConvRFMRun:
    """One estimator's selected validation accuracy and test accuracy ± binomial SE."""

    name: str
    validation_accuracy: float
    test_accuracy: float
    test_stderr: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "validation_accuracy": self.validation_accuracy,
            "test_accuracy": self.test_accuracy,
            "test_stderr": self.test_stderr,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class ConvRFMExperiment:
    description: str
    settings: dict
    baseline: ConvRFMRun
    learned: ConvRFMRun
    levels: tuple[dict, ...]
    metrics: tuple[torch.Tensor, ...]
    patch_shapes: tuple[tuple[int, int, int], ...]

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "settings": self.settings,
            "baseline": self.baseline.to_dict(),
            "learned": self.learned.to_dict(),
            "levels": list(self.levels),
        }


def _binomial_stderr(accuracy: float, n: int) -> float:
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def _timed_fit(estimator: ConvRFMClassifier | DeepConvRFMClassifier, splits: Splits) -> float:
    import time

    started = time.perf_counter()
    estimator.fit(splits.x_fit, splits.y_fit, splits.x_val, splits.y_val)
    return time.perf_counter() - started


def run_convrfm_experiment(
    splits: Splits,
    *,
    depth: int = 1,
    rounds: int = 1,
    kernel: str = "ntk",
    mask: int | tuple[int, int] | list = 3,
    n_filters: int = 32,
    ridges: Sequence[float] = (1e-3, 1e-2, 1e-1),
    agop_samples: int = 1000,
    seed: int = 0,
    dtype: str = "float32",
    deep_layers: Sequence[int | tuple[int, int]] = (),
    readout: str = "flatten",
) -> ConvRFMExperiment:
    """Fixed kernel (ConvRFM with no metric update, first level's geometry) and the learned
    ConvRFM of `depth` levels with `rounds` AGOP rounds per level; both select on the validation
    split and are scored once on the test split. With kernel='deep-nngp', `deep_layers` (masks
    of layers 2..L, stride = mask) and `readout` ('flatten' or 'gap') give the multi-layer
    convolutional NNGP of each level (docs/math/features.md §6)."""
    if depth < 1 or rounds < 0:
        raise ValueError("depth must be >= 1 and rounds >= 0.")
    first_mask = mask[0] if isinstance(mask, list) else mask
    ridge_grid = tuple(ridges)
    layers = tuple(deep_layers)
    baseline = ConvRFMClassifier(kernel=kernel, mask=first_mask, ridge=ridge_grid, n_rounds=0,
                                 agop_samples=agop_samples, seed=seed, dtype=dtype,
                                 refit=False, deep_layers=layers, readout=readout)  # fmt: skip
    learned = DeepConvRFMClassifier(
        n_levels=depth, n_filters=n_filters, kernel=kernel, mask=mask, ridge=ridge_grid,
        n_rounds=rounds, agop_samples=agop_samples, seed=seed, dtype=dtype, refit=False,
        deep_layers=layers, readout=readout,
    )
    runs = []
    estimators: tuple[tuple[str, ConvRFMClassifier | DeepConvRFMClassifier], ...] = (
        ("fixed kernel", baseline), (f"ConvRFM depth {depth}", learned))
    for name, estimator in estimators:
        seconds = _timed_fit(estimator, splits)
        accuracy = float(estimator.score(splits.x_test, splits.y_test))
        validation = (estimator.validation_score_ if hasattr(estimator, "validation_score_")
                      else estimator.final_.validation_score_)  # fmt: skip
        runs.append(ConvRFMRun(name, float(validation), accuracy,
                               _binomial_stderr(accuracy, len(splits.y_test)), seconds))
    levels = tuple(level.to_dict() for level in learned.levels_)
    shapes = []
    channels = splits.x_fit.shape[1]
    for level, record in enumerate(learned.levels_):
        channels = record.input_shape[0]
        shapes.append(learned._level_estimator(level).geometry().patch_shape(channels))
    settings = dict(depth=depth, rounds=rounds, kernel=kernel, mask=str(mask), n_filters=n_filters,
                    ridges=list(ridges), agop_samples=agop_samples, seed=seed, dtype=dtype,
                    deep_layers=[str(layer) for layer in deep_layers], readout=readout,
                    n_fit=len(splits.y_fit), n_val=len(splits.y_val),
                    n_test=len(splits.y_test))  # fmt: skip
    return ConvRFMExperiment(
        splits.description, settings, runs[0], runs[1], levels,
        tuple(level.metric for level in learned.levels_), tuple(shapes),
    )


def write_convrfm_outputs(experiment: ConvRFMExperiment, directory: str | Path
                          ) -> dict[str, Path]:
    """convrfm.json and, per level, metric_level{ℓ}.png (top eigenvectors of the learned patch
    metric as filters)."""
    from krenorm.features.figures import plot_metric_eigenvectors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"json": directory / "convrfm.json"}
    files["json"].write_text(json.dumps(experiment.to_dict(), indent=1))
    for level, (metric, shape) in enumerate(zip(experiment.metrics, experiment.patch_shapes,
                                                strict=True)):  # fmt: skip
        figure = plot_metric_eigenvectors(metric.to(torch.float64), shape,
                                          n_vectors=min(6, metric.shape[0]),
                                          max_channels=8)  # fmt: skip
        figure.suptitle(f"level {level + 1}: top eigenvectors of the learned patch metric M "
                        f"({shape[0]}×{shape[1]}×{shape[2]})", fontsize=9)  # fmt: skip
        path = directory / f"metric_level{level + 1}.png"
        figure.savefig(path, dpi=110)
        files[f"level {level + 1}"] = path
    return files
