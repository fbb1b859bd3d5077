"""Benchmark (issue 3): krenorm's effective theory vs deepbays 0.1.11 on the agreement case.

Case: MNIST 0 vs 1, 28×28, standardized (deepbays' preprocessing, raw labels 0/1), erf,
T = 0.1, N = 50, λ0 = λ1 = 1, mask = stride = 7 (16 patches), test set of `--n-test` images.
For each P, deepbays (FC_1HL and CONV_1HL, in .venv-ref, benchmarks/reference/deepbays_case.py)
runs first and saves its exact arrays; krenorm then runs on those same arrays in a fresh
subprocess. Both sides time the whole job (kernels + saddle point + test predictions) and report
their process's peak RSS (so both include the Python/torch runtime). Agreement: max relative
difference of Q̄ and relative difference of the test loss.

Then krenorm alone on MNIST 0 vs 1 through krenorm.data (balanced classes, ±1 labels):
P = 2000 with mask 7 (16 patches) and P = 1000 with mask 4 (49 patches).

    bash benchmarks/reference/setup.sh && .venv-ref/bin/python benchmarks/reference/prepare_mnist.py
    .venv/bin/python benchmarks/theory.py [--p 100 200 500] [--reuse] [--skip-large] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REFERENCE_PYTHON = Path(".venv-ref/bin/python")
REFERENCE_SCRIPT = Path("benchmarks/reference/deepbays_case.py")
WIDTH, TEMPERATURE, MASK = 50, 0.1, 7
LARGE_CASES = ((2000, 7), (1000, 4))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_on_arrays(data_path: Path, kind: str, hessian_check: bool = True) -> dict:
    """Fit and predict on deepbays' arrays; time everything after the arrays are in memory."""
    from krenorm.architectures import ArchitectureSpec
    from krenorm.theory import fit_theory

    arrays = np.load(data_path)
    x_train = torch.as_tensor(arrays["x_train"]).reshape(-1, 1, 28, 28)
    x_test = torch.as_tensor(arrays["x_test"]).reshape(-1, 1, 28, 28)
    y_train, y_test = torch.as_tensor(arrays["y_train"]), torch.as_tensor(arrays["y_test"])
    start, cpu_start = time.perf_counter(), time.process_time()
    fit = fit_theory(x_train, y_train, ArchitectureSpec(kind, "erf", MASK, MASK), WIDTH,
                     TEMPERATURE, hessian_check=hessian_check)
    loss = fit.test_loss(x_test, y_test)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    diagnostics = fit.diagnostics.to_dict()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb(),
            "q_bar": fit.q_bar.tolist(), "block_passes": diagnostics.get("block_passes"),
            "test_loss": loss.loss, "bias2": loss.bias2, "variance": loss.variance,
            "gradient_norm": diagnostics["gradient_norm"],
            "iterations": diagnostics["iterations"],
            "min_hessian_eigenvalue": diagnostics["min_hessian_eigenvalue"]}


def ours_large(n_train: int, mask: int, n_test: int) -> dict:
    from krenorm.architectures import ArchitectureSpec
    from krenorm.data import load_dataset
    from krenorm.theory import fit_theory

    data = load_dataset("mnist", classes=(0, 1), n_train=n_train, n_test=n_test, seed=0)
    start = time.perf_counter()
    fit = fit_theory(data.x_train, data.y_train, ArchitectureSpec("cnn", "erf", mask, mask),
                     WIDTH, TEMPERATURE)
    solved = time.perf_counter() - start
    loss = fit.test_loss(data.x_test, data.y_test)
    seconds = time.perf_counter() - start
    diagnostics = fit.diagnostics.to_dict()
    return {"seconds": seconds, "solve_seconds": solved, "peak_rss_mb": peak_rss_mb(),
            "n_patches": fit.q_bar.shape[0], "test_loss": loss.loss,
            "gradient_norm": diagnostics["gradient_norm"],
            "iterations": diagnostics["iterations"],
            "min_hessian_eigenvalue": diagnostics["min_hessian_eigenvalue"]}


def _subprocess(arguments: list[str]) -> dict:
    output = subprocess.run([sys.executable, __file__, *arguments], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _reference(out: Path, n_train: int, n_test: int, reuse: bool, threads: int) -> Path:
    case = out / f"P{n_train}"
    saved = [case / f"{kind}.json" for kind in ("fc", "cnn")]
    if not (reuse and all(path.exists() and json.loads(path.read_text())["P_test"] == n_test
                          for path in saved)):
        if not REFERENCE_PYTHON.exists():
            raise SystemExit("no .venv-ref: run benchmarks/reference/setup.sh and "
                             "prepare_mnist.py first (see the module docstring).")
        subprocess.run([str(REFERENCE_PYTHON), str(REFERENCE_SCRIPT), str(out), "--p",
                        str(n_train), "--n-test", str(n_test), "--threads", str(threads)],
                       check=True)
    return case


def relative_difference(ours, reference) -> float:
    ours, reference = np.asarray(ours, float), np.asarray(reference, float)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/deepbays_case"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on both sides (deepbays_case.py defaults to 1)")
    parser.add_argument("--reuse", action="store_true", help="reuse saved deepbays results")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--single", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.single:
        if args.single[0] == "arrays":
            print(json.dumps(ours_on_arrays(Path(args.single[1]), args.single[2],
                                            args.single[3] == "check")))
        else:
            print(json.dumps(ours_large(*(int(v) for v in args.single[1:]))))
        return

    rows = []
    for n_train in args.p:
        case = _reference(args.out, n_train, args.n_test, args.reuse, args.threads)
        for kind in ("fc", "cnn"):
            reference = json.loads((case / f"{kind}.json").read_text())
            ours = _subprocess(["--threads", str(args.threads), "--single", "arrays",
                                str(case / "data.npz"), kind, "check"])
            fast = _subprocess(["--threads", str(args.threads), "--single", "arrays",
                                str(case / "data.npz"), kind, "no-check"])
            rows.append((n_train, kind, reference, ours, fast))
    header = (f"{'P':>5} {'arch':>4} {'deepbays s':>11} {'ours s':>8} {'speed-up':>9} "
              f"{'no H-check s':>12} {'speed-up':>9} "
              f"{'deepbays MB':>12} {'ours MB':>8} {'ΔQ̄ rel':>9} {'Δε_g rel':>9} {'ε_g':>9} "
              f"{'CPU s d/o':>14} {'CPU ×':>6} {'passes':>6}")
    lines = [header, "-" * len(header)]
    for n_train, kind, reference, ours, fast in rows:
        lines.append(
            f"{n_train:>5} {kind:>4} {reference['seconds_total']:>11.2f} {ours['seconds']:>8.3f} "
            f"{reference['seconds_total'] / ours['seconds']:>8.0f}× "
            f"{fast['seconds']:>12.3f} {reference['seconds_total'] / fast['seconds']:>8.0f}× "
            f"{reference['peak_rss_mb']:>12.0f} {ours['peak_rss_mb']:>8.0f} "
            f"{relative_difference(ours['q_bar'], reference['q_bar']):>9.1e} "
            f"{abs(ours['test_loss'] - reference['test_loss']) / reference['test_loss']:>9.1e} "
            f"{ours['test_loss']:>9.5f} "
            f"{reference['cpu_seconds_total']:>7.2f}/{ours['cpu_seconds']:<6.3f} "
            f"{reference['cpu_seconds_total'] / ours['cpu_seconds']:>5.0f}× "
            f"{ours['block_passes']!s:>6}")
    print("\n".join(lines))
    if args.skip_large:
        return
    print(f"\nkrenorm alone (MNIST 0 vs 1, {args.n_test} test images, N = {WIDTH}, T = "
          f"{TEMPERATURE}):")
    header = (f"{'P':>5} {'patches':>7} {'total s':>8} {'solve s':>8} {'peak MB':>8} "
              f"{'iterations':>10} {'|∇S|':>8} {'min H eig':>9} {'ε_g':>8}")
    print(header)
    print("-" * len(header))
    for n_train, mask in LARGE_CASES:
        ours = _subprocess(["--threads", str(args.threads), "--single", "large", str(n_train),
                            str(mask), str(args.n_test)])
        print(f"{n_train:>5} {ours['n_patches']:>7} {ours['seconds']:>8.1f} "
              f"{ours['solve_seconds']:>8.1f} {ours['peak_rss_mb']:>8.0f} "
              f"{ours['iterations']:>10} {ours['gradient_norm']:>8.1e} "
              f"{ours['min_hessian_eigenvalue']:>9.3f} {ours['test_loss']:>8.5f}")


if __name__ == "__main__":
    main()
