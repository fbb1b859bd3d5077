"""Benchmark (issue 17): the deep effective theory on MNIST 0 vs 1 (docs/math/deep.md).

Cases (targets on the 2-core development machine):
- deep CNN, L = 2, erf, layer 1 mask 7 stride 3 (8×8 positions), layer 2 mask 2 stride 2
  (16 final positions), N = 50 channels per layer, T = 0.1, P = 1000: target < 2 min;
- deep FC, L = 2, erf, N = (100, 100), T = 0.1, P = 5000: target < 1 min.
Each times the kernels, the saddle point (with the default Hessian check) and the predictions on
500 test images separately (wall clock, and the process CPU time, which on a shared, overloaded
machine is the honest measure of the work), and prints the solver's diagnostics and the peak
RSS. There is no reference implementation of the deep CNN theory to compare with.

    KRENORM_SHARED_DATASETS=/work/shared/datasets PYTHONPATH=src python benchmarks/deep.py \
        [--threads 2] [--cnn-p 1000] [--fc-p 5000]
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import torch

from krenorm.data import load_dataset
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.kernels.patches import PatchGeometry
from krenorm.theory.deep_fit import fit_deep_theory

TEMPERATURE = 0.1
N_TEST = 500


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: DeepArchitectureSpec, n_train: int, widths: list[float]) -> dict:
    data = load_dataset("mnist", (0, 1), n_train=n_train, n_test=N_TEST, seed=0)
    x_train, y_train = data.x_train, data.y_train
    x_test, y_test = data.x_test, data.y_test
    if spec.kind == "fc":
        x_train, x_test = x_train.reshape(n_train, -1), x_test.reshape(len(x_test), -1)
    start, cpu_start = time.perf_counter(), time.process_time()
    fit = fit_deep_theory(x_train, y_train, spec, widths, TEMPERATURE,
                          [1.0] * (spec.depth + 1))
    fitted = time.perf_counter()
    loss = fit.test_loss(x_test, y_test)
    done, cpu_done = time.perf_counter(), time.process_time()
    infinite = fit_deep_theory(x_train, y_train, spec, math.inf, TEMPERATURE,
                               [1.0] * (spec.depth + 1)).test_loss(x_test, y_test)
    diagnostics = fit.diagnostics
    assert diagnostics is not None
    return {"case": f"deep {spec.kind} L={spec.depth}", "P": n_train,
            "fit_s": fitted - start, "predict_s": done - fitted, "total_s": done - start,
            "cpu_s": cpu_done - cpu_start,
            "peak_mb": peak_rss_mb(), "method": diagnostics.method,
            "iterations": diagnostics.iterations, "gradient_norm": diagnostics.gradient_norm,
            "min_hessian": diagnostics.min_hessian_eigenvalue, "converged": diagnostics.converged,
            "test_loss": loss.loss, "test_loss_nngp": infinite.loss,
            "scale": fit.total_scale if fit.total_scale is not None
            else float(torch.diagonal(fit.point.reshape(-1, fit.point.shape[-1])).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cnn-p", type=int, default=1000)
    parser.add_argument("--fc-p", type=int, default=5000)
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-fc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    if not args.skip_fc:
        rows.append(run(DeepArchitectureSpec("fc", "erf", 2), args.fc_p, [100.0, 100.0]))
        print(rows[-1], flush=True)
    if not args.skip_cnn:
        geometries = [PatchGeometry(7, 3, 0), PatchGeometry(2, 2, 0)]
        rows.append(run(DeepArchitectureSpec("cnn", "erf", 2, geometries), args.cnn_p,
                        [50.0, 50.0]))
        print(rows[-1], flush=True)
    print("| case | P | fit s | predict s | total s | CPU s | peak MB | method | iterations | ‖∇S‖ "
          "| min Hessian eig. | ε_g | ε_g (N=∞) | U or mean Q_ii |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['P']} | {r['fit_s']:.1f} | {r['predict_s']:.1f} | "
              f"{r['total_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} | {r['method']} | "
              f"{r['iterations']} | "
              f"{r['gradient_norm']:.1e} | {r['min_hessian']:.4g} | {r['test_loss']:.4f} | "
              f"{r['test_loss_nngp']:.4f} | {r['scale']:.4f} |")


if __name__ == "__main__":
    main()
