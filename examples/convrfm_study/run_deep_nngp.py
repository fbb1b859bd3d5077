"""ConvRFM with the multi-layer convolutional NNGP kernel (kernel="deep-nngp", issue 16): depth
1–3 of the ReLU CNN NNGP of krenorm.kernels.deep, fixed (M = I) vs AGOP rounds of the
first-layer patch metric (up to ROUNDS rounds), on the study's two tasks, with the study's
one-layer fixed CNTK as baseline. Every choice (ridge, round) on the validation split; test
accuracy ± binomial SE, and paired SEs of the differences to the depth-1 fixed kernel and of each
learned metric to its own fixed kernel. Geometry: first layer 4×4 stride 4, layers 2–3 2×2
stride 2 (non-overlapping, the cheap case of the recursion), flatten readout.

    KRENORM_SHARED_DATASETS=/work/shared/datasets python examples/convrfm_study/run_deep_nngp.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from krenorm.features import ConvRFMClassifier
from krenorm.features.convrfm_experiment import load_splits

HERE = Path(__file__).parent
N_FIT, N_VAL, N_TEST = 1000, 300, 1000
ROUNDS = 2
TASKS = {
    "CIFAR-10 (JPEG copy) automobile vs truck": ("cifar10", ["automobile", "truck"]),
    "noisy-frame MNIST 4 vs 9": ("noisy-frame-mnist", [4, 9]),
}
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)


def paired(correct: dict, name: str, reference: str) -> tuple[float, float]:
    """Mean and standard error of the per-image difference in correctness (same test images)."""
    difference = correct[name] - correct[reference]
    return float(difference.mean()), float(difference.std(ddof=1) / math.sqrt(len(difference)))


def main() -> None:
    torch.set_num_threads(1)
    results: dict = {}
    for title, (data, classes) in TASKS.items():
        splits = load_splits(data, N_FIT, N_VAL, N_TEST, classes=classes, seed=0)
        rows, correct = [], {}
        # The study's fixed-kernel baseline (REPORT.md): one-layer ReLU CNTK, 3×3 stride 1.
        baseline = ConvRFMClassifier(kernel="ntk", mask=3, n_rounds=0, ridge=RIDGES,
                                     refit=False, seed=0)
        started = time.perf_counter()
        baseline.fit(splits.x_fit, splits.y_fit, splits.x_val, splits.y_val)
        hits = np.asarray(baseline.predict(splits.x_test)) == np.asarray(splits.y_test)
        name = "one-layer CNTK 3×3 stride 1, fixed (study baseline)"
        correct[name] = hits.astype(float)
        accuracy = float(hits.mean())
        rows.append({"name": name, "depth": 1, "rounds": 0,
                     "validation_accuracy": float(baseline.validation_score_), "best_round": 0,
                     "ridge": float(baseline.ridge_), "test_accuracy": accuracy,
                     "test_stderr": math.sqrt(accuracy * (1 - accuracy) / len(hits)),
                     "seconds": time.perf_counter() - started})
        print(title, rows[-1], flush=True)
        for depth in (1, 2, 3):
            for rounds in (0, ROUNDS):
                model = ConvRFMClassifier(kernel="deep-nngp", mask=4, stride=4,
                                          deep_layers=(2,) * (depth - 1), n_rounds=rounds,
                                          ridge=RIDGES, agop_samples=150, refit=False, seed=0)
                started = time.perf_counter()
                model.fit(splits.x_fit, splits.y_fit, splits.x_val, splits.y_val)
                hits = np.asarray(model.predict(splits.x_test)) == np.asarray(splits.y_test)
                name = f"deep NNGP depth {depth}, " + ("fixed M = I" if rounds == 0
                                                        else f"ConvRFM ≤ {ROUNDS} rounds")
                correct[name] = hits.astype(float)
                accuracy = float(hits.mean())
                rows.append({"name": name, "depth": depth, "rounds": rounds,
                             "validation_accuracy": float(model.validation_score_),
                             "best_round": int(model.best_round_),
                             "ridge": float(model.ridge_), "test_accuracy": accuracy,
                             "test_stderr": math.sqrt(accuracy * (1 - accuracy) / len(hits)),
                             "seconds": time.perf_counter() - started})
                print(title, rows[-1], flush=True)
        for row in rows:
            row["paired_difference"], row["paired_stderr"] = paired(
                correct, row["name"], "deep NNGP depth 1, fixed M = I")
            if row["rounds"]:  # the learned metric against its own fixed kernel
                row["vs_fixed_same_depth"] = paired(
                    correct, row["name"], f"deep NNGP depth {row['depth']}, fixed M = I")
        chosen = max(rows, key=lambda row: row["validation_accuracy"])  # first maximum wins
        results[title] = {"description": splits.description, "rows": rows,
                          "selected_on_validation": chosen["name"]}
    (HERE / "deep_nngp_results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
