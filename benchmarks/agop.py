"""Benchmark (issue 5): patch-AGOP of CNN layers by hooks vs brute-force patch Jacobians, and
ConvRFM fit time against the number of training images.

AGOP: SmallCNN(1 → 16 → 32 → 64 channels, 3×3, later convs stride 2, 10 logits), float64, on
standardized Gaussian 28×28 images (the cost does not depend on pixel values). Per layer:
`patch_agop` exact (one backward per logit for the whole batch, vmapped over logits or a Python
loop over logits; G = WᵀΔW), `patch_agop` with 16 Gaussian probes per image, and
`brute_force_patch_agop` (explicit Jacobian of the logits with respect to every patch, image by
image) as the reference; relative error = max|G − G_ref| / max|G_ref| (worst layer). One
warm-up call on two images precedes each timing; the hooks see batches of 32 images.

ConvRFM: ConvRFMClassifier(kernel='ntk', mask 7, one AGOP round, ridge grid (1e-3, 1e-1),
20 % validation split, AGOP on up to 2000 training images, refit on all) on the star task
(3×32×32, 676 patch positions, d = 147), test accuracy on 500 fresh images.

Kernel ridge solve (issue 16): α = (K + λI)⁻¹Y for the RFM Laplace kernel (L = 10) on n standard
Gaussian vectors in R^20, 10 one-hot classes, λ = 1e-3, float64: Cholesky, preconditioned CG on
the stored Gram (pivoted-Cholesky rank 200), and matrix-free CG (PatchKernelOperator, the Gram
recomputed in 512-row blocks at every product; only up to --matrix-free-max points, since it
costs one Gram per CG iteration). Time and peak include building the Gram.

Deep ConvRFM: DeepConvRFMClassifier(ntk, mask 5, 32 filters, one AGOP round per level, ridge grid
(1e-3, 1e-1)) with 1–3 levels on the star task, n training images, test accuracy on 500.

Each case runs in a fresh subprocess: peak MB is the increase of getrusage's RSS high-water mark
over the case. Wall and CPU seconds (all threads) are reported; on a shared machine CPU seconds
are the steadier number.

    .venv/bin/python benchmarks/agop.py [--images 32] [--sizes 250,500,1000] [--threads 1]
        [--sections agop,convrfm,ridge,deep] [--ridge-sizes 5000,20000] [--deep-size 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

SEED = 0


def peak_rss_mb() -> float:
    """getrusage's peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def agop_case(method: str, n_images: int) -> dict:
    from krenorm.features.agop import brute_force_patch_agop, patch_agop
    from krenorm.features.small_cnn import SmallCNN

    model = SmallCNN(1, 10, (28, 28), widths=(16, 32, 64), kernel_size=3, seed=SEED).double()
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn(n_images, 1, 28, 28, generator=generator, dtype=torch.float64)
    images = (images - images.mean()) / images.std()
    layers = ["features.0", "features.2", "features.4"]

    def run(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if method == "brute-force":
            return {name: brute_force_patch_agop(model, name, batch) for name in layers}
        options = {
            "hooks-exact": dict(estimator="exact"),
            "hooks-exact-loop": dict(estimator="exact", vectorize=False),
            "hooks-probes": dict(estimator="probes", n_probes=16),
        }[method]
        hooked = patch_agop(model, batch, layers=layers, batch_size=32, **options)
        return {name: hooked[name].agop for name in layers}

    run(images[:2])  # warm-up: first-call costs (vmap set-up, allocator) are not the method's
    before = peak_rss_mb()
    result, wall, cpu = timed(lambda: run(images))
    peak = peak_rss_mb() - before
    exact = {name: brute_force_patch_agop(model, name, images) for name in layers}
    error = max(
        float((result[name] - exact[name]).abs().max() / exact[name].abs().max()) for name in layers
    )
    return {"method": method, "images": n_images, "wall": wall, "cpu": cpu, "peak_mb": peak,
            "error": error}  # fmt: skip


def convrfm_case(n_train: int, dtype: str) -> dict:
    from krenorm.features.convrfm import ConvRFMClassifier
    from krenorm.features.synthetic import star_task

    train, test = star_task(n_train, seed=SEED), star_task(500, seed=SEED + 1)
    estimator = ConvRFMClassifier(
        kernel="ntk", mask=7, n_rounds=1, ridge=(1e-3, 1e-1), agop_samples=2000, dtype=dtype
    )
    before = peak_rss_mb()
    _, wall, cpu = timed(lambda: estimator.fit(train.images, train.labels))
    peak = peak_rss_mb() - before
    accuracy = estimator.score(test.images, test.labels)
    scores = [record.validation_score for record in estimator.history_.rounds]
    return {"n_train": n_train, "dtype": dtype, "wall": wall, "cpu": cpu, "peak_mb": peak,
            "test_accuracy": accuracy, "validation_by_round": scores}  # fmt: skip


def ridge_case(method: str, n: int) -> dict:
    from krenorm.features.conv_kernels import MahalanobisPatchKernel
    from krenorm.features.ridge import PatchKernelOperator
    from krenorm.kernel_ridge_solvers import solve_ridge

    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, 20, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (n,), generator=generator)
    targets = torch.nn.functional.one_hot(labels, 10).to(torch.float64)
    kernel = MahalanobisPatchKernel("laplace", "aligned", None)
    metric = torch.eye(20, dtype=torch.float64)

    def run():
        if method == "cg-matrix-free":
            gram = PatchKernelOperator(kernel, x, metric, bandwidth=10.0)
            return solve_ridge(gram, targets, 1e-3, method="cg", preconditioner_rank=200)
        stored = kernel.gram(x, None, metric, 10.0)
        solver = "cholesky" if method == "cholesky" else "cg"
        return solve_ridge(stored, targets, 1e-3, method=solver, preconditioner_rank=200)

    before = peak_rss_mb()
    (_, info), wall, cpu = timed(run)
    return {"method": method, "n": n, "wall": wall, "cpu": cpu,
            "peak_mb": peak_rss_mb() - before, "iterations": info.iterations,
            "residual": info.relative_residual}  # fmt: skip


def deep_case(n_levels: int, n_train: int) -> dict:
    from krenorm.features.deep_convrfm import DeepConvRFMClassifier
    from krenorm.features.synthetic import star_task

    train, test = star_task(n_train, seed=SEED), star_task(500, seed=SEED + 1)
    estimator = DeepConvRFMClassifier(
        n_levels=n_levels, n_filters=32, kernel="ntk", mask=5, n_rounds=1, ridge=(1e-3, 1e-1),
        dtype="float32",
    )
    before = peak_rss_mb()
    _, wall, cpu = timed(lambda: estimator.fit(train.images, train.labels))
    return {"levels": n_levels, "n_train": n_train, "wall": wall, "cpu": cpu,
            "peak_mb": peak_rss_mb() - before,
            "test_accuracy": estimator.score(test.images, test.labels)}  # fmt: skip


def run_in_subprocess(arguments: list[str], threads: int) -> dict:
    command = [sys.executable, __file__, "--threads", str(threads), *arguments]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images for the AGOP cases")
    parser.add_argument("--sizes", default="250,500,1000", help="ConvRFM training set sizes")
    parser.add_argument("--dtypes", default="float32,float64", help="ConvRFM dtypes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--sections", default="agop,convrfm,ridge,deep", help="what to run")
    parser.add_argument("--ridge-sizes", default="5000,20000", help="kernel ridge solve sizes")
    parser.add_argument("--matrix-free-max", type=int, default=5000,
                        help="largest n for matrix-free CG (one Gram per iteration)")
    parser.add_argument("--deep-size", type=int, default=300, help="Deep ConvRFM training size")
    parser.add_argument("--agop-case", help=argparse.SUPPRESS)
    parser.add_argument("--ridge-case", help=argparse.SUPPRESS)
    parser.add_argument("--deep-case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--convrfm-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.agop_case:
        print(json.dumps(agop_case(args.agop_case, args.images)))
        return
    if args.convrfm_case:
        n_train, dtype = args.convrfm_case.split(":")
        print(json.dumps(convrfm_case(int(n_train), dtype)))
        return
    if args.ridge_case:
        method, n = args.ridge_case.split(":")
        print(json.dumps(ridge_case(method, int(n))))
        return
    if args.deep_case:
        print(json.dumps(deep_case(args.deep_case, args.deep_size)))
        return
    sections = set(args.sections.split(","))
    if "agop" in sections:
        agop_table(args)
    if "convrfm" in sections:
        convrfm_table(args)
    if "ridge" in sections:
        ridge_table(args)
    if "deep" in sections:
        deep_table(args)


def ridge_table(args: argparse.Namespace) -> None:
    print(f"\nKernel ridge solve, Laplace RFM kernel, R^20, 10 outputs, λ = 1e-3, float64, "
          f"torch threads {args.threads}")  # fmt: skip
    print("| n | method | wall s | CPU s | peak MB | CG iterations | rel. residual |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in (int(size) for size in args.ridge_sizes.split(",")):
        for method in ("cholesky", "cg-stored", "cg-matrix-free"):
            if method == "cg-matrix-free" and n > args.matrix_free_max:
                continue
            row = run_in_subprocess(["--ridge-case", f"{method}:{n}"], args.threads)
            print(f"| {n} | {method} | {row['wall']:.1f} | {row['cpu']:.1f} | "
                  f"{row['peak_mb']:.0f} | {row['iterations']} | {row['residual']:.1e} |",
                  flush=True)  # fmt: skip


def deep_table(args: argparse.Namespace) -> None:
    print(f"\nDeep ConvRFM (ntk, mask 5, 32 filters, 1 round per level), star task, "
          f"{args.deep_size} training images, float32, torch threads {args.threads}")
    print("| levels | fit wall s | fit CPU s | peak MB | test acc |")
    print("|---:|---:|---:|---:|---:|")
    for levels in (1, 2, 3):
        row = run_in_subprocess(["--deep-case", str(levels), "--deep-size", str(args.deep_size)],
                                args.threads)
        print(f"| {levels} | {row['wall']:.1f} | {row['cpu']:.1f} | {row['peak_mb']:.0f} | "
              f"{row['test_accuracy']:.3f} |", flush=True)  # fmt: skip


def agop_table(args: argparse.Namespace) -> None:
    """The patch-AGOP table."""
    print(f"patch-AGOP of 3 conv layers (d = 9, 144, 288), SmallCNN(16, 32, 64) float64, "
          f"{args.images} images, torch threads {args.threads}")  # fmt: skip
    print("| method | wall s | CPU s | brute-force CPU / CPU | peak MB | max rel. error |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {
        method: run_in_subprocess(["--agop-case", method, "--images", str(args.images)],
                                  args.threads)
        for method in ("brute-force", "hooks-exact", "hooks-exact-loop", "hooks-probes")
    }  # fmt: skip
    reference = rows["brute-force"]["cpu"]
    for method, row in rows.items():
        print(
            f"| {method} | {row['wall']:.3f} | {row['cpu']:.3f} | {reference / row['cpu']:.1f}× "
            f"| {row['peak_mb']:.0f} | {row['error']:.1e} |"
        )


def convrfm_table(args: argparse.Namespace) -> None:
    """The ConvRFM fit-time table."""
    print(f"\nConvRFM (ntk, mask 7, 1 round) on the star task, torch threads {args.threads}")
    print("| n train | dtype | fit wall s | fit CPU s | peak MB | test acc | val acc by round |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for n_train in (int(size) for size in args.sizes.split(",")):
        for dtype in args.dtypes.split(","):
            row = run_in_subprocess(["--convrfm-case", f"{n_train}:{dtype}"], args.threads)
            rounds = ", ".join(f"{score:.3f}" for score in row["validation_by_round"])
            print(
                f"| {n_train} | {dtype} | {row['wall']:.1f} | {row['cpu']:.1f} | "
                f"{row['peak_mb']:.0f} | {row['test_accuracy']:.3f} | {rounds} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
