"""Benchmark (issue 19): the CNN theory at scale — stored vs streamed vs float32 blocks, and
torch threads (docs/scale.md).

Each configuration runs in a fresh subprocess (so peak RSS, `ru_maxrss`, is its own), with
`--threads` torch threads, on MNIST 0 vs 1 (balanced, ±1 labels, krenorm.data) or CIFAR-10
(RGB, airplane vs automobile), erf, N = 50, T = 0.1, λ0 = λ1 = 1, mask = stride:

    python benchmarks/theory_scale.py engines --p 500 1000 --mask 4 [--modes stored float32]
    python benchmarks/theory_scale.py threads --p 100 --mask 7
    python benchmarks/theory_scale.py passes --p 500 --mask 4 --image 3 32   # CPU s per pass
    PYTHONPATH=old/src python benchmarks/theory_scale.py passes ...   # another version, same case
    python benchmarks/theory_scale.py engines --dataset cifar10 --p 2000 --mask 4 --modes streamed

Acceptance of issue 19, one part at a time (each run appends its row to --out, a JSON-lines
file), then everything side by side with the targets:

    python benchmarks/theory_scale.py acceptance --part a --out runs/acceptance.jsonl
    python benchmarks/theory_scale.py acceptance --part a --modes stored streamed ...  # a subset
    python benchmarks/theory_scale.py acceptance --part b --threads 2 --out runs/acceptance.jsonl
    python benchmarks/theory_scale.py acceptance --part c --threads 2 --out runs/acceptance.jsonl
    python benchmarks/theory_scale.py report --out runs/acceptance.jsonl

(a) MNIST 49 patches, P = 1000: stored float64, streamed, stored float32 (streamed within 3× of
stored; agreement 1e-10 streamed, float32 within its reported bound); (b) MNIST 49 patches,
P = 2000; (c) CIFAR-10 RGB 32×32, mask = stride = 4 (64 patches), P = 2000 — both `auto`
blocks under --memory-limit (default 7e9 bytes), 1000 test images, target < 15 min wall and
< 8 GiB peak. The load average before and after each run is recorded with it.

Reported per run: wall time (kernels + solve + 1 curvature check + test predictions), the
process's CPU time (less sensitive to other load than wall time on a shared machine), solve
time, passes over the blocks, iterations, peak RSS, Q̄ and test-loss differences against the
first mode of the list.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

WIDTH, TEMPERATURE = 50.0, 0.1
CLASSES = {"mnist": (0, 1), "cifar10": (0, 1)}


def single(dataset: str, n_train: int, n_test: int, mask: int, mode: str,
           memory_limit: float | None, device: str | None = None) -> dict:
    from krenorm.architectures import ArchitectureSpec
    from krenorm.data import load_dataset
    from krenorm.theory import fit_theory
    from krenorm.theory.blocks import BlockSettings

    data = load_dataset(dataset, classes=CLASSES[dataset], n_train=n_train, n_test=n_test,
                        seed=0)
    blocks = {"stored": BlockSettings(mode="stored"),
              "streamed": BlockSettings(mode="streamed"),
              "float32": BlockSettings(mode="stored", dtype="float32"),
              "auto": BlockSettings()}[mode]
    start = time.perf_counter()
    cpu_start = time.process_time()
    fit = fit_theory(data.x_train, data.y_train, ArchitectureSpec("cnn", "erf", mask, mask),
                     WIDTH, TEMPERATURE, blocks=blocks, device=device,
                     memory_limit=None if memory_limit is None else int(memory_limit))
    solved = time.perf_counter() - start
    loss = fit.test_loss(data.x_test, data.y_test)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    diagnostics = fit.summary().diagnostics
    return {"mode": mode, "plan": diagnostics.get("blocks", {}).get("mode"),
            "dataset": dataset, "n_test": n_test, "mask": mask,
            "kept_bytes": diagnostics.get("blocks", {}).get("keep_bytes"),
            "all_passes": fit.kernels.basis.passes,
            "min_hessian_eigenvalue": diagnostics.get("min_hessian_eigenvalue"),
            "seconds": seconds, "solve_seconds": solved, "cpu_seconds": cpu_seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "passes": diagnostics.get("block_passes"), "iterations": diagnostics["iterations"],
            "gradient_norm": diagnostics["gradient_norm"], "n_patches": fit.q_bar.shape[0],
            "q_bar": fit.q_bar.tolist(), "test_loss": loss.loss,
            "threads": torch.get_num_threads()}


def pass_costs(n_train: int, channels: int, size: int, mask: int, modes: list[str],
               batch: int = 1) -> None:
    """CPU seconds of one combine and one project pass per engine, on random images of the
    given shape (timing only; the values of the blocks do not matter for it); `batch` weights
    and matrices per pass (1: a solver evaluation; 9: a curvature-check product with its
    evaluation). The printed checksums let two code versions be compared entry by entry."""
    from krenorm.kernels.chunked_blocks import ChunkedGramBlocks

    x = torch.randn(n_train, channels, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    storage = {"streamed": None, "stored": torch.float64, "float32": torch.float32}
    for mode in modes:
        cpu = time.process_time()
        blocks = ChunkedGramBlocks(x, mask, mask, storage=storage[mode])
        build = time.process_time() - cpu
        n = blocks.n_patches
        generator = torch.Generator().manual_seed(1)
        raw = torch.randn(batch, n, n, dtype=torch.float64, generator=generator)
        weights = raw + raw.mT
        raw = torch.randn(batch, n_train, n_train, dtype=torch.float64, generator=generator)
        matrix = raw + raw.mT
        cpu = time.process_time()
        combined = blocks.contract(weights)
        combine = time.process_time() - cpu
        cpu = time.process_time()
        projected = blocks.frobenius(matrix)
        project = time.process_time() - cpu
        print(f"P={n_train} Np={n} pairs={blocks.n_pairs} batch={batch} {mode:>9}: build "
              f"{build:6.1f} s CPU, combine pass {combine:6.2f} s CPU, project pass "
              f"{project:6.2f} s CPU, held {blocks.stored_bytes() / 2**30:.2f} GiB; checksums "
              f"{float(combined.abs().sum()):.15e} {float(projected.abs().sum()):.15e}",
              flush=True)
        del blocks


def run_single(arguments: list[str], threads: int) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()
    started = time.strftime("%H:%M:%S", time.gmtime())
    output = subprocess.run([sys.executable, __file__, "single", *arguments, "--threads",
                             str(threads)], check=True, capture_output=True, text=True,
                            env=environment).stdout
    row = json.loads(output.strip().splitlines()[-1])
    row.update(load_before=load_before, load_after=os.getloadavg(), started_utc=started,
               ended_utc=time.strftime("%H:%M:%S", time.gmtime()))
    return row


#: The acceptance parts: (dataset, P, mask, modes).
ACCEPTANCE = {"a": ("mnist", 1000, 4, ["stored", "streamed", "float32"]),
              "b": ("mnist", 2000, 4, ["auto"]),
              "c": ("cifar10", 2000, 4, ["auto"])}
WALL_TARGET_S, PEAK_TARGET_GIB = 15 * 60, 8.0
DEFAULT_MODES = ["stored", "streamed", "float32"]


def acceptance(part: str, threads: int, memory_limit: float | None, out: str,
               modes: list[str] | None = None) -> None:
    """Run one acceptance part; `modes` runs only those engines of the part (e.g. stored and
    streamed of part a, when float32 storage did not change)."""
    dataset, n_train, mask, part_modes = ACCEPTANCE[part]
    modes = part_modes if modes is None else modes
    common = ["--dataset", dataset, "--n-test", "1000", "--mask", str(mask), "--p",
              str(n_train)]
    if part in ("b", "c"):
        common += ["--memory-limit", str(7e9 if memory_limit is None else memory_limit)]
    for mode in modes:
        row = {"part": part, "P": n_train, **run_single([*common, "--modes", mode], threads)}
        with open(out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps({key: value for key, value in row.items() if key != "q_bar"}),
              flush=True)


def report(out: str) -> None:
    """Every recorded acceptance row side by side, with the targets."""
    with open(out) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    print(f"{'part':>4} {'data':>7} {'P':>5} {'Np':>3} {'mode':>8} {'thr':>3} {'wall s':>7} "
          f"{'CPU s':>7} {'passes':>6} {'(all)':>5} {'iters':>5} {'peak GiB':>8} "
          f"{'load before/after':>17} {'max|ΔQ̄|':>9} {'Δε_g rel':>9} {'ε_g':>7}  verdict")
    stored = {row["P"]: row for row in rows if row["part"] == "a" and row["mode"] == "stored"}
    for row in rows:
        reference = stored.get(row["P"]) if row["part"] == "a" else None
        dq = dl = float("nan")
        verdict = ""
        if reference is not None and reference is not row:
            dq = float((torch.tensor(row["q_bar"]) - torch.tensor(reference["q_bar"])).abs()
                       .max())
            dl = abs(row["test_loss"] - reference["test_loss"]) / abs(reference["test_loss"])
            ratio = row["seconds"] / reference["seconds"]
            cpu_ratio = row["cpu_seconds"] / reference["cpu_seconds"]
            if row["mode"] == "streamed":
                agreement = f"ΔQ̄ {'≤' if dq <= 1e-10 else '>'} 1e-10"
            else:  # float32: its storage error, measured here (docs/scale.md §3)
                agreement = f"float32 storage error ΔQ̄ {dq:.1e}, Δε_g {dl:.1e}"
            verdict = f"{ratio:.2f}× stored wall ({cpu_ratio:.2f}× CPU), {agreement}"
        elif row["part"] in ("b", "c"):
            ok = row["seconds"] < WALL_TARGET_S and row["peak_rss_gib"] < PEAK_TARGET_GIB
            verdict = (f"{'meets' if ok else 'misses'} < {WALL_TARGET_S / 60:.0f} min and "
                       f"< {PEAK_TARGET_GIB:g} GiB")
        load = f"{row['load_before'][0]:.1f}/{row['load_after'][0]:.1f}"
        print(f"{row['part']:>4} {row['dataset']:>7} {row['P']:>5} {row['n_patches']:>3} "
              f"{row['mode']:>8} {row['threads']:>3} {row['seconds']:>7.1f} "
              f"{row['cpu_seconds']:>7.1f} {row['passes']!s:>6} {row['all_passes']!s:>5} "
              f"{row['iterations']:>5} {row['peak_rss_gib']:>8.2f} {load:>17} {dq:>9.2e} "
              f"{dl:>9.2e} {row['test_loss']:>7.4f}  {verdict}")


def table(rows: list[dict]) -> None:
    reference = rows[0]
    q_ref = torch.tensor(reference["q_bar"])
    print(f"{'P':>5} {'Np':>3} {'mode':>9} {'thr':>3} {'wall s':>8} {'CPU s':>8} {'solve s':>8} "
          f"{'passes':>6} "
          f"{'iters':>5} {'peak GiB':>8} {'max|ΔQ̄|':>9} {'Δε_g rel':>9} {'ε_g':>8}")
    for row in rows:
        dq = float((torch.tensor(row["q_bar"]) - q_ref).abs().max())
        dl = abs(row["test_loss"] - reference["test_loss"]) / abs(reference["test_loss"])
        print(f"{row['P']:>5} {row['n_patches']:>3} {row['mode']:>9} {row['threads']:>3} "
              f"{row['seconds']:>8.1f} {row.get('cpu_seconds', float('nan')):>8.1f} "
              f"{row['solve_seconds']:>8.1f} {row['passes']!s:>6} "
              f"{row['iterations']:>5} {row['peak_rss_gib']:>8.2f} {dq:>9.2e} {dl:>9.2e} "
              f"{row['test_loss']:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["engines", "threads", "passes", "single",
                                         "acceptance", "report"])
    parser.add_argument("--part", choices=sorted(ACCEPTANCE), default="a",
                        help="acceptance part (see the module docstring)")
    parser.add_argument("--out", default="runs/acceptance.jsonl",
                        help="JSON-lines file of the acceptance rows")
    parser.add_argument("--image", type=int, nargs=2, default=[1, 28],
                        help="channels and side of the random images of the 'passes' case")
    parser.add_argument("--dataset", default="mnist", choices=sorted(CLASSES))
    parser.add_argument("--p", type=int, nargs="+", default=[500])
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--mask", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1,
                        help="weights/matrices per pass in the 'passes' case")
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="bytes (auto mode streams above it)")
    parser.add_argument("--device", default=None, help="'cuda' for the GPU (same code path)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case == "single":
        print(json.dumps(single(args.dataset, args.p[0], args.n_test, args.mask, args.modes[0],
                                args.memory_limit, args.device)))
        return
    if args.case == "acceptance":
        acceptance(args.part, args.threads, args.memory_limit, args.out,
                   None if args.modes == DEFAULT_MODES else args.modes)
        return
    if args.case == "report":
        report(args.out)
        return
    if args.case == "passes":
        for n_train in args.p:
            pass_costs(n_train, args.image[0], args.image[1], args.mask, args.modes, args.batch)
        return
    common = ["--dataset", args.dataset, "--n-test", str(args.n_test), "--mask", str(args.mask)]
    if args.memory_limit is not None:
        common += ["--memory-limit", str(args.memory_limit)]
    if args.device is not None:
        common += ["--device", args.device]
    load = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores")
    for n_train in args.p:
        rows = []
        if args.case == "threads":
            for threads in (1, 2):
                rows.append({"P": n_train, **run_single(
                    ["--p", str(n_train), "--modes", args.modes[0], *common], threads)})
        else:
            for mode in args.modes:
                rows.append({"P": n_train, **run_single(
                    ["--p", str(n_train), "--modes", mode, *common], args.threads)})
        table(rows)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
