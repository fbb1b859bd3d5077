"""Benchmark (issue 6): time and peak memory of full hypercube spectra by the fast WHT.

For d = 16, 20, 22 and two architectures — a 2-hidden-layer ReLU MLP (NNGP) and a hierarchical
ReLU CNN with biases (patches of 2, windows of 2 up to one position; NTK) — it times the three
phases of `krenorm.spectra`: the kernel values g(z) on all 2^d points (chunked tree recursion),
the in-place Walsh–Hadamard transform, and the grouping of the 2^d eigenvalues by (frequency,
cyclic extent). Reference: at d = 12 the dense route (Gram matrix of all 4096 points, LAPACK
eigvalsh) against ours, with the largest eigenvalue difference.

Each case runs in a fresh subprocess, so its peak memory is its own: the peak RSS increase is
getrusage's high-water mark after the case minus the mark just before it. Times are the best of
`--repeats` runs, wall clock and CPU (process) time. `--threads` sets torch's intra-op threads
(default 1: on a shared, oversubscribed machine two threads spin-wait on each other and an
elementwise op can take 100× longer).

    .venv/bin/python benchmarks/spectra.py [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from krenorm.spectra.comparison import standard_architectures
from krenorm.spectra.dual import tree_kernel
from krenorm.spectra.grouping import group_by_frequency_and_extent
from krenorm.spectra.hypercube import (
    HypercubeSpectrum,
    hypercube_kernel_values,
    hypercube_spectrum,
    walsh_hadamard_transform,
)

DIMENSIONS = (16, 20, 22)
ARCHITECTURES = (("mlp-2", "nngp"), ("deep-cnn", "ntk"))
REFERENCE_DIMENSION = 12


def peak_rss_mb() -> float:
    """getrusage's peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_for(name: str, dimension: int):
    return standard_architectures(dimension, "relu", bias_variance=0.1, patch_size=2)[name]


def run_case(dimension: int, name: str, kind: str, repeats: int) -> dict:
    """Best-of-`repeats` phase times and the peak RSS increase of one full spectrum."""
    tree = tree_for(name, dimension)
    hypercube_spectrum(tree_for(name, 8), kind)  # first-call overheads
    baseline = peak_rss_mb()
    phases: dict[str, list[float]] = {"kernel": [], "wht": [], "grouping": []}
    cpu_seconds = []
    for _ in range(repeats):
        cpu_start = time.process_time()
        start = time.perf_counter()
        values = hypercube_kernel_values(tree, kind)
        after_kernel = time.perf_counter()
        eigenvalues = walsh_hadamard_transform(values, inplace=True).div_(values.numel())
        after_wht = time.perf_counter()
        spectrum = HypercubeSpectrum(eigenvalues, dimension, kind, tree.name)
        groups = group_by_frequency_and_extent(spectrum, cyclic=True)
        after_grouping = time.perf_counter()
        phases["kernel"].append(after_kernel - start)
        phases["wht"].append(after_wht - after_kernel)
        phases["grouping"].append(after_grouping - after_wht)
        cpu_seconds.append(time.process_time() - cpu_start)
        del values, eigenvalues, spectrum
    best = {phase: min(times) for phase, times in phases.items()}
    return {
        "d": dimension,
        "architecture": name,
        "kind": kind,
        "nodes": len(tree.nodes),
        "groups": len(groups),
        **{f"{phase}_seconds": seconds for phase, seconds in best.items()},
        "total_seconds": sum(best.values()),
        "cpu_seconds": min(cpu_seconds),
        "peak_rss_increase_mb": peak_rss_mb() - baseline,
        "eigenvalue_mb": 8 * 2**dimension / 2**20,
        "torch_threads": torch.get_num_threads(),
    }


def run_reference(repeats: int) -> dict:
    """Dense Gram (kernel on every pair of points) + eigvalsh vs WHT at d = REFERENCE_DIMENSION
    (deep CNN, NTK)."""
    dimension = REFERENCE_DIMENSION
    tree = tree_for("deep-cnn", dimension)
    masks = torch.arange(1 << dimension)
    points = 1.0 - 2.0 * ((masks[:, None] >> torch.arange(dimension)) & 1).to(torch.float64)
    dense_seconds, ours_seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        gram = torch.empty(1 << dimension, 1 << dimension, dtype=torch.float64)
        for first in range(0, 1 << dimension, 256):  # row blocks bound the pair temporaries
            rows = points[first : first + 256]
            overlaps = torch.stack(
                [
                    rows[:, list(tree.nodes[v].coordinates)]
                    @ points[:, list(tree.nodes[v].coordinates)].T
                    / len(tree.nodes[v].coordinates)
                    for v in tree.leaves
                ],
                -1,
            )
            gram[first : first + 256] = tree_kernel(
                tree, overlaps.reshape(-1, len(tree.leaves)), "ntk"
            ).reshape(rows.shape[0], -1)
        dense = torch.linalg.eigvalsh(gram) / gram.shape[0]
        dense_seconds.append(time.perf_counter() - start)
        del gram
        start = time.perf_counter()
        ours = hypercube_spectrum(tree, "ntk").eigenvalues.sort().values
        ours_seconds.append(time.perf_counter() - start)
    return {
        "d": dimension,
        "dense_seconds": min(dense_seconds),
        "wht_seconds": min(ours_seconds),
        "speedup": min(dense_seconds) / min(ours_seconds),
        "max_abs_difference": float((dense - ours).abs().max()),
        "largest_eigenvalue": float(ours[-1]),
    }


def run_in_subprocess(arguments: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], check=True, capture_output=True, text=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", nargs=3, metavar=("D", "ARCH", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.single:
        dimension, name, kind = args.single
        print(json.dumps(run_case(int(dimension), name, kind, args.repeats)))
        return
    if args.reference:
        print(json.dumps(run_reference(args.repeats)))
        return
    header = (
        f"{'d':>3} {'architecture':>12} {'kind':>5} {'nodes':>5} {'kernel s':>9} {'WHT s':>7} "
        f"{'group s':>8} {'total s':>8} {'CPU s':>6} {'peak MB':>8} {'λ MB':>6}"
    )
    options = ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    print(f"torch threads: {args.threads}, best of {args.repeats}")
    print(header)
    for dimension in DIMENSIONS:
        for name, kind in ARCHITECTURES:
            row = run_in_subprocess(["--single", str(dimension), name, kind, *options])
            print(
                f"{row['d']:>3} {row['architecture']:>12} {row['kind']:>5} {row['nodes']:>5} "
                f"{row['kernel_seconds']:>9.3f} {row['wht_seconds']:>7.3f} "
                f"{row['grouping_seconds']:>8.3f} {row['total_seconds']:>8.3f} "
                f"{row['cpu_seconds']:>6.2f} "
                f"{row['peak_rss_increase_mb']:>8.0f} {row['eigenvalue_mb']:>6.0f}"
            )
    reference = run_in_subprocess(["--reference", *options])
    print(
        f"\nreference d = {reference['d']} (deep CNN NTK, 4096 points): dense Gram + eigvalsh "
        f"{reference['dense_seconds']:.2f} s, WHT {reference['wht_seconds']:.4f} s, speed-up "
        f"{reference['speedup']:.0f}×, max |Δλ| = {reference['max_abs_difference']:.1e} "
        f"(largest λ {reference['largest_eigenvalue']:.3f})"
    )


if __name__ == "__main__":
    main()
