"""Benchmark (issue 2): time and peak memory to build all CNN local blocks K_ij, i ≤ j.

`krenorm.kernels.compute_local_blocks` (float64, erf) on MNIST-sized 28×28 single-channel images:
mask = stride = 7 (16 patches) at P = 500 and 2000, mask = stride = 4 (49 patches) at P = 500.
The images are random Gaussian pixels standardized to zero mean and unit variance over the whole
set: the cost of the blocks depends only on P, the patch grid and the activation, not on the
pixel values, so no data set is needed.

Each case runs in a fresh subprocess, so its peak memory is its own: the peak RSS increase is
getrusage's high-water mark after the build minus the mark just before it (images, imports and
the torch runtime excluded). Times are the best of `--repeats` builds: wall seconds, and CPU
seconds of the process (all threads; less sensitive to other jobs on a shared machine).

    .venv/bin/python benchmarks/kernels.py [--repeats 3] [--threads N] [--profile]

`--threads` sets torch's intra-op threads in each case (default: torch's own choice).

`--profile` adds a torch.profiler table of the aten operators of one P = 2000, mask 7 build.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from krenorm.kernels import compute_local_blocks

#: (mask = stride, P): the cases of issue 2.
CASES = ((7, 500), (7, 2000), (4, 500))
SIDE = 28
SEED = 0


def peak_rss_mb() -> float:
    """getrusage's peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def standardized_images(n_samples: int, seed: int = SEED) -> torch.Tensor:
    """(P, 1, 28, 28) float64 Gaussian pixels, standardized globally (mean 0, std 1)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_samples, 1, SIDE, SIDE, generator=generator, dtype=torch.float64)
    return (images - images.mean()) / images.std()


def run_case(mask: int, n_samples: int, repeats: int) -> dict:
    """Build the blocks `repeats` times in this process; best time, peak RSS increase, sizes."""
    images = standardized_images(n_samples)
    compute_local_blocks(images[:2], mask, mask)  # first-call overheads (dispatch, allocator)
    baseline = peak_rss_mb()
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        blocks = compute_local_blocks(images, mask, mask, activation="erf", lambda0=1.0)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        peak = peak_rss_mb()
        result_bytes = blocks.pairs.numel() * blocks.pairs.element_size()
        n_pairs, n_patches = blocks.pairs.shape[0], blocks.n_patches
        del blocks
    return {
        "mask": mask, "stride": mask, "P": n_samples, "n_patches": n_patches, "pairs": n_pairs,
        "seconds": min(seconds), "seconds_all": seconds, "cpu_seconds": min(cpu_seconds),
        "peak_rss_increase_mb": peak - baseline, "result_bytes": result_bytes,
        "ns_per_entry": min(seconds) / (n_pairs * n_samples**2) * 1e9,
        "torch_threads": torch.get_num_threads(),
    }


def profile_case(mask: int, n_samples: int) -> str:
    """torch.profiler table (self CPU time per aten operator) of one build."""
    images = standardized_images(n_samples)
    compute_local_blocks(images[:2], mask, mask)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        compute_local_blocks(images, mask, mask)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--single", nargs=2, type=int, metavar=("MASK", "P"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.single:
        print(json.dumps(run_case(*args.single, args.repeats)))
        return
    print(f"{'P':>5} {'mask':>4} {'Np':>3} {'pairs':>5} {'seconds':>8} {'CPU s':>7} "
          f"{'ns/entry':>8} {'peak MB':>8} {'result MB':>9}")
    for mask, n_samples in CASES:
        completed = subprocess.run(
            [sys.executable, __file__, "--single", str(mask), str(n_samples),
             "--repeats", str(args.repeats)]
            + ([] if args.threads is None else ["--threads", str(args.threads)]),
            check=True, capture_output=True, text=True,
        )
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"{row['P']:>5} {row['mask']:>4} {row['n_patches']:>3} {row['pairs']:>5} "
              f"{row['seconds']:>8.2f} {row['cpu_seconds']:>7.2f} {row['ns_per_entry']:>8.2f} "
              f"{row['peak_rss_increase_mb']:>8.0f} {row['result_bytes'] / 2**20:>9.0f}")
    if args.profile:
        print(profile_case(7, 2000))


if __name__ == "__main__":
    main()
