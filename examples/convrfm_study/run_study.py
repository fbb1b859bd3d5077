"""ConvRFM study (issue 16): fixed convolutional kernel vs ConvRFM of depth 1–3 vs a trained small
CNN on CIFAR-10 (JPEG copy) automobile vs truck and on noisy-frame MNIST 4 vs 9 (a binary pair
keeps it small), every choice made on a validation split, test accuracy ± binomial standard
error. Small enough for < 10 min on a loaded 2-core machine.

    KRENORM_SHARED_DATASETS=/work/shared/datasets python examples/convrfm_study/run_study.py
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from krenorm.features.convrfm_experiment import load_splits, run_convrfm_experiment
from krenorm.features.small_cnn import SmallCNN, classification_accuracy, train_classifier

HERE = Path(__file__).parent
N_FIT, N_VAL, N_TEST = 300, 100, 500
TASKS = {
    "CIFAR-10 (JPEG copy) automobile vs truck": ("cifar10", ["automobile", "truck"]),
    "noisy-frame MNIST 4 vs 9": ("noisy-frame-mnist", [4, 9]),
}


def small_cnn_accuracy(splits, seed: int = 0) -> dict:
    """SmallCNN(16, 32, 3×3), Adam 3e-3; the epoch count (5, 10, 20) chosen on validation."""
    labels = {name: torch.as_tensor(getattr(splits, name)).long()
              for name in ("y_fit", "y_val", "y_test")}
    classes = torch.unique(labels["y_fit"])
    index = {int(c): i for i, c in enumerate(classes)}

    def remap(y: torch.Tensor) -> torch.Tensor:
        return torch.tensor([index[int(v)] for v in y])

    y_fit, y_val, y_test = (remap(labels[n]) for n in ("y_fit", "y_val", "y_test"))
    shape = tuple(splits.x_fit.shape[2:])
    model = SmallCNN(splits.x_fit.shape[1], len(classes), shape, (16, 32), 3, seed)
    best, done, started = None, 0, time.perf_counter()
    for epochs in (5, 10, 20):
        train_classifier(model, splits.x_fit, y_fit, epochs=epochs - done, learning_rate=3e-3,
                         seed=seed + epochs)
        done = epochs
        validation = classification_accuracy(model, splits.x_val, y_val)
        if best is None or validation > best[0]:
            best = (validation, epochs, copy.deepcopy(model))
    validation, epochs, chosen = best
    accuracy = classification_accuracy(chosen, splits.x_test, y_test)
    return {"name": "small CNN (trained)", "validation_accuracy": validation,
            "test_accuracy": accuracy,
            "test_stderr": math.sqrt(accuracy * (1 - accuracy) / len(y_test)),
            "seconds": time.perf_counter() - started, "epochs": epochs}


def main() -> None:
    torch.set_num_threads(1)
    results = {}
    for title, (data, classes) in TASKS.items():
        splits = load_splits(data, N_FIT, N_VAL, N_TEST, classes=classes, seed=0)
        rows = []
        for depth in (1, 2, 3):
            experiment = run_convrfm_experiment(
                splits, depth=depth, rounds=1, kernel="ntk", mask=3, n_filters=8,
                ridges=(1e-3, 1e-2, 1e-1), agop_samples=300, seed=0,
            )
            if depth == 1:
                rows.append(experiment.baseline.to_dict())
            rows.append({**experiment.learned.to_dict(),
                         "best_rounds": [level["best_round"] for level in experiment.levels]})
            print(title, rows[-1], flush=True)
        rows.append(small_cnn_accuracy(splits))
        print(title, rows[-1], flush=True)
        results[title] = {"description": splits.description, "rows": rows}
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    figure, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False)
    for axis, (title, result) in zip(axes[0], results.items(), strict=True):
        rows = result["rows"]
        names = [row["name"] for row in rows]
        axis.barh(names, [row["test_accuracy"] for row in rows],
                  xerr=[row["test_stderr"] for row in rows], color="tab:blue", capsize=3)
        axis.set_xlim(0.4, 1.0)
        axis.axvline(0.5, color="gray", linestyle=":", label="chance")
        axis.set_xlabel(f"test accuracy (± 1 s.e., {N_TEST} images)")
        axis.set_title(title, fontsize=9)
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(HERE / "accuracy.png", dpi=110)
    print("wrote", HERE / "results.json", HERE / "accuracy.png", file=sys.stderr)


if __name__ == "__main__":
    main()
