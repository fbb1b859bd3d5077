"""Run deepbays 0.1.11 (FC_1HL and CONV_1HL) on the agreement case of issue 3 and save everything.

Case: MNIST classes (0, 1), 28×28, standardized as deepbays does it, erf, T = 0.1, N = 50,
mask = stride = 7 (16 patches), λ0 = λ1 = 1 (deepbays' defaults), data seed 1234 (deepbays'
default), test set of `--n-test` images. Runs inside .venv-ref (benchmarks/reference/setup.sh)
from the repository root, after benchmarks/reference/prepare_mnist.py.

deepbays builds its data with torchvision (a stand-in in .venv-ref). The only torchvision steps
on this path are reading the IDX files and the transform Resize(28) → ToTensor → Grayscale, which
for 28×28 single-channel MNIST is exactly uint8 → float32 / 255 (Resize to the same size and
Grayscale of one channel return the image unchanged). This script does that step itself and then
calls deepbays' own `filter_by_label` and `normalizeDataset`, so the arrays are deepbays' arrays.
They are fed to deepbays as float64 (an exact widening), so every deepbays computation is float64.

Each (P, architecture) runs in a fresh subprocess so peak RSS belongs to that run alone, with
`--threads` intra-op threads for torch and numpy's BLAS (default 1: deepbays issues many small
torch operations, and with 2 threads on a busy 2-core machine they spin-wait — the CONV_1HL run
at P = 200 took 2406 s instead of 136 s).
Output per P in OUT/P{P}/:
  data.npz      x_train (P, 784) float64, y_train (P,), x_test (Pt, 784), y_test (Pt,) exactly as
                fed to deepbays; train_index / test_index into the official MNIST splits
  fc.json       Q̄ (scalar), test loss, bias², variance, times, peak RSS
  cnn.json      Q̄ (16×16 list), its asymmetry, deepbays' gradient at Q̄, converged flag, losses …

    .venv-ref/bin/python benchmarks/reference/deepbays_case.py OUT [--p 100 200 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = (0, 1)
WIDTH = 50
TEMPERATURE = 0.1
MASK = 7
STRIDE = 7
ACTIVATION = "erf"
DATA_SEED = 1234  # deepbays' mnist_dataset default
SOLVER_NOISE_SEED = 0  # CONV_1HL.optimize retries with unseeded np.random noise; seeded here


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_idx(path: Path) -> np.ndarray:
    """Array stored in an IDX file (uint8 payload), as torchvision's MNIST reader returns it."""
    data = path.read_bytes()
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def deepbays_mnist(root: Path, n_train: int, n_test: int):
    """deepbays' `mnist_dataset(784, [0, 1]).make_data(P, Ptest)` with torchvision's part inlined.

    Returns float32 tensors (P, 1, 28, 28), int64 labels (P, 1) as deepbays returns them, and the
    indices of the chosen images in the official train/test splits.
    """
    import torch
    from deepbays.tasks import classic_tasks

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
        # ToTensor: uint8 → float32 / 255 with a leading channel axis; the DataLoader's single batch
        # (batch 60000 / 10000 covers the whole split) stacks them in file order.
        pixels = torch.from_numpy(images.copy()).to(torch.float32).div(255).unsqueeze(1)
        splits[split] = (pixels, torch.from_numpy(labels.astype(np.int64)))

    def chosen(targets: torch.Tensor, count: int) -> np.ndarray:
        # The same selection as filter_by_label: class mask in file order, seeded permutation.
        candidates = np.flatnonzero(np.isin(targets.numpy(), CLASSES))
        return candidates[np.random.RandomState(DATA_SEED).permutation(len(candidates))[:count]]

    data, labels = classic_tasks.filter_by_label([splits["train"]], list(CLASSES), n_train,
                                                 DATA_SEED)
    test_data, test_labels = classic_tasks.filter_by_label([splits["test"]], list(CLASSES),
                                                           n_test, DATA_SEED)
    train_index, test_index = chosen(splits["train"][1], n_train), chosen(splits["test"][1], n_test)
    if not (torch.equal(splits["train"][0][train_index], data)
            and torch.equal(splits["test"][0][test_index], test_data)):
        raise RuntimeError("index bookkeeping disagrees with deepbays' filter_by_label")
    data, test_data = classic_tasks.normalizeDataset(data, test_data)
    return data, labels.unsqueeze(1), test_data, test_labels.unsqueeze(1), train_index, test_index


def _count_calls(model, method: str) -> list[int]:
    """Count calls of one method of the model (the objective/gradient the solver evaluates);
    the wrapper is set on the instance, which is where scipy's solver looks it up."""
    counter = [0]
    original = getattr(model, method)

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    setattr(model, method, counted)
    return counter


def run_single(architecture: str, n_train: int, n_test: int, out: Path, root: Path) -> dict:
    """One deepbays fit + prediction in this process; writes and returns its record."""
    import deepbays
    import torch

    data, labels, test_data, test_labels, train_index, test_index = deepbays_mnist(
        root, n_train, n_test
    )
    x_train = data.reshape(n_train, -1).double().numpy()
    x_test = test_data.reshape(n_test, -1).double().numpy()
    y_train = labels.double().numpy()  # (P, 1), values 0/1 = the raw digit labels
    y_test = test_labels.double().numpy()
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "data.npz",
        x_train=x_train, y_train=y_train[:, 0], x_test=x_test, y_test=y_test[:, 0],
        train_index=train_index, test_index=test_index,
    )
    rss_before = peak_rss_mb()
    model_type = "FC" if architecture == "fc" else "CONV"
    model = deepbays.RKGP(1, WIDTH, 1, TEMPERATURE, [1.0, 1.0], act=ACTIVATION,
                          model_type=model_type, mask=MASK, stride=STRIDE)
    evaluations = _count_calls(model, "computeActionGrad" if model_type == "CONV"
                               else "effectiveAction")
    np.random.seed(SOLVER_NOISE_SEED)
    start, cpu_start = time.perf_counter(), time.process_time()
    # CONV_1HL.preprocess needs labels as a torch tensor (it calls .to()); FC_1HL takes arrays.
    model.preprocess(x_train, torch.from_numpy(y_train) if model_type == "CONV" else y_train)
    preprocessed = time.perf_counter()
    model.optimize()
    solved = time.perf_counter()
    rss_after_solve = peak_rss_mb()
    model.predict(x_test)
    # CONV_1HL's prediction comes back as a torch tensor (numpy wraps the matmul with the tensor
    # labels), so its test labels must be a tensor too, as deepbays' make_data returns them.
    loss, bias2, variance = model.averageLoss(
        torch.from_numpy(y_test) if model_type == "CONV" else y_test
    )
    predicted = time.perf_counter()
    cpu_seconds = time.process_time() - cpu_start
    record = {
        "architecture": architecture,
        "deepbays_class": type(model).__name__,
        "P": n_train, "P_test": n_test, "N": WIDTH, "T": TEMPERATURE, "lambda0": model.l0,
        "lambda1": model.l1, "activation": ACTIVATION, "classes": list(CLASSES),
        "data_seed": DATA_SEED,
        "test_loss": float(loss), "bias2": float(bias2), "variance": float(variance),
        "seconds_preprocess": preprocessed - start, "seconds_optimize": solved - preprocessed,
        "seconds_predict": predicted - solved, "seconds_total": predicted - start,
        "cpu_seconds_total": cpu_seconds,
        "peak_rss_mb_before_solve": rss_before, "peak_rss_mb_after_solve": rss_after_solve,
        "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads(),
        "solver_evaluations": evaluations[0],
        "torch": torch.__version__, "numpy": np.__version__,
    }
    if architecture == "fc":
        record["q_bar"] = float(model.optQ)
    else:
        q_bar = np.asarray(model.optQ)
        record |= {
            "mask": MASK, "stride": STRIDE, "n_patches": int(model.numPatches),
            "q_bar": q_bar.tolist(),
            "q_bar_asymmetry_max": float(np.abs(q_bar - q_bar.T).max()),
            "deepbays_gradient_max": float(np.abs(model.grad).max()),
            "converged": bool(model.converged),
            "solver_seed_for_retries": SOLVER_NOISE_SEED,
        }
    (out / f"{architecture}.json").write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--p", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--arch", nargs="+", choices=["fc", "cnn"], default=["fc", "cnn"])
    parser.add_argument("--root", type=Path, default=Path("data"), help="has MNIST/raw/")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per run")
    parser.add_argument("--single", action="store_true", help="one (P, arch) in this process")
    args = parser.parse_args()
    if args.single:
        run_single(args.arch[0], args.p[0], args.n_test, args.out, args.root)
        return
    # Read by torch and by numpy's BLAS when the child process starts.
    thread_variables = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    child_env = os.environ | dict.fromkeys(thread_variables, str(args.threads))
    print(f"{'arch':5} {'P':>5} {'Q̄ (FC) / tr Q̄/Np (CNN)':>24} {'test loss':>12} "
          f"{'bias²':>10} {'variance':>10} {'solve+predict s':>16} {'CPU s':>8} {'peak MB':>9}")
    for n_train in args.p:
        for architecture in args.arch:
            out = args.out / f"P{n_train}"
            subprocess.run(
                [sys.executable, __file__, str(args.out / f"P{n_train}"), "--single", "--p",
                 str(n_train), "--n-test", str(args.n_test), "--arch", architecture,
                 "--root", str(args.root)],
                check=True, stdout=subprocess.DEVNULL, env=child_env,
            )
            record = json.loads((out / f"{architecture}.json").read_text())
            q_bar = np.asarray(record["q_bar"])
            summary = q_bar if q_bar.ndim == 0 else np.trace(q_bar) / q_bar.shape[0]
            print(f"{architecture:5} {n_train:>5} {float(summary):>24.10f} "
                  f"{record['test_loss']:>12.8f} {record['bias2']:>10.6f} "
                  f"{record['variance']:>10.6f} {record['seconds_total']:>16.2f} "
                  f"{record['cpu_seconds_total']:>8.2f} "
                  f"{record['peak_rss_mb']:>9.0f}")


if __name__ == "__main__":
    main()
