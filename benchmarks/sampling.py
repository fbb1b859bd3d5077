"""Sampler throughput, wall time to a 1 % test-loss estimate, and the unadjusted Langevin bias.

Part 1 — throughput: replica-steps per second of every sampler (unadjusted Langevin, MALA,
collapsed, HMC, collapsed HMC) for FC and CNN (mask = stride = 7) networks of width N on P
MNIST-sized 28×28 inputs, with R = 1, 16, 64 replicas batched in one pass. A fixed, stable step
size is used (timing only); an HMC step costs L = 10 gradient evaluations, the others one.

Part 2 — sampling time (burn-in included, summaries not) until the posterior test loss has a
standard error of 1 % of its value (ArviZ MCSE), per sampler, with a time cap; with the
autocorrelation time τ = nR/ESS (in records) and the ESS.

Part 3 — bias of unadjusted Langevin on small nonlinear posteriors (erf FC, synthetic ±1
labels): test loss and train error at the default settings (step size adapted to 0.98 of the
would-be acceptance) and at the fixed default step size, against the collapsed sampler (exact),
as deviation ± combined standard error.

Part 4 — time to answer (`--parts answer`): per sampler and architecture (FC, CNN, LCN with
mask = stride = 7), the wall and CPU time until the test loss has a 1 % standard error (ArviZ
MCSE) and a rank-normalised R̂ ≤ 1.1 over at least 20 records, checked every `--check-every`
records; steps per second, τ in steps, ESS, R̂, the load average, the adapted step and the
acceptance. 'collapsed' runs at its default settings (float64, 16 replicas); the split sampler
with `--answer-replicas` replicas and `--split-burn-in`.

    .venv/bin/python benchmarks/sampling.py --parts answer --n-train 1000 --width 1000 \
        --architectures fc --answer-samplers "collapsed-split-hmc L=1" --answer-replicas 4

Reference: `reference_throughput(loop, task)` times any external Langevin loop on `task` (same
network, data, T, λ0, λ1, η); `run_throughput(..., reference=loop)` adds its single-chain steps
per second and the ratio ours/reference to the table. `deepbays_loop` is such a loop: it saves
the task to an .npz and runs benchmarks/reference/deepbays_langevin.py --task in .venv-ref
(made by benchmarks/reference/setup.sh) with the same torch thread count as ours.

    .venv/bin/python benchmarks/sampling.py                  # full run (MNIST 0 vs 1)
    .venv/bin/python benchmarks/sampling.py --quick          # smoke run
    .venv/bin/python benchmarks/sampling.py --no-reference   # without the deepbays column
    .venv/bin/python benchmarks/sampling.py --parts bias     # part 3 only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.networks import (
    SAMPLERS,
    PosteriorRun,
    PosteriorSummary,
    SamplerSettings,
    build_network,
    make_generator,
    sample_posterior,
)


@dataclass(frozen=True)
class ReferenceTask:
    """One throughput measurement handed to a reference loop: the same network (docs/math/theory.md
    §1 parameterisation), data, posterior (T, λ0, λ1) and step size η (θ ← θ − η∇L + √(2ηT)ξ with
    L = ½Σ(f − y)² + ½λT|θ|², deepbays' convention and ours). x_train is (P, 1, 28, 28) float32;
    the loop flattens it for FC. y_train is (P, 1) float32."""

    architecture: str
    width: int
    mask: int
    stride: int
    activation: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    temperature: float
    lambda0: float
    lambda1: float
    step_size: float
    n_steps: int


#: A reference Langevin loop: returns replica-steps per second on the task.
ReferenceLoop = Callable[[ReferenceTask], float]


def reference_throughput(loop: ReferenceLoop, task: ReferenceTask) -> float:
    """Replica-steps per second of an external loop on `task` (checked to be positive)."""
    rate = float(loop(task))
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"reference loop returned {rate!r}; it must return steps per second.")
    return rate


REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PYTHON = REPOSITORY_ROOT / ".venv-ref" / "bin" / "python"
REFERENCE_SCRIPT = REPOSITORY_ROOT / "benchmarks" / "reference" / "deepbays_langevin.py"


def deepbays_loop(threads: int) -> ReferenceLoop | None:
    """A reference loop running deepbays' Langevin (one chain) in .venv-ref with `threads` torch
    threads, or None (after saying how to set it up) when .venv-ref is absent."""
    if not REFERENCE_PYTHON.exists():
        print("deepbays reference not set up: run benchmarks/reference/setup.sh")
        return None

    def loop(task: ReferenceTask) -> float:
        # deepbays needs its own interpreter (.venv-ref), so the task crosses as an .npz file.
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "task.npz"
            np.savez(
                path, x_train=task.x_train.numpy(), y_train=task.y_train.numpy(),
                architecture=task.architecture, width=task.width, mask=task.mask,
                stride=task.stride, activation=task.activation, temperature=task.temperature,
                lambda0=task.lambda0, lambda1=task.lambda1, step_size=task.step_size,
                n_steps=task.n_steps,
            )
            completed = subprocess.run(
                [str(REFERENCE_PYTHON), str(REFERENCE_SCRIPT), "--task", str(path),
                 "--threads", str(threads)],
                capture_output=True, text=True, check=False,
            )
        if completed.returncode != 0:
            raise RuntimeError(f"deepbays reference failed:\n{completed.stderr.strip()}")
        # The script prints one JSON line; anything deepbays prints on import comes before it.
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        return float(result["steps_per_second"])

    return loop


def load_data(n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    """MNIST 0 vs 1 (±1 labels, global standardisation); a CNN-teacher task on N(0, 1) pixels
    when MNIST is not available offline."""
    from krenorm.data import DatasetUnavailableError, load_dataset, local_teacher

    try:
        data = load_dataset("mnist", (0, 1), n_train=n_train, n_test=n_test)
        source = "MNIST 0 vs 1"
    except DatasetUnavailableError:
        data = local_teacher(n_train, n_test, mask=7, stride=7, seed=0)
        source = "synthetic CNN teacher (MNIST unavailable)"
    return data.x_train, data.y_train, data.x_test, data.y_test, source


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec(architecture: str, activation: str) -> ArchitectureSpec:
    """FC, or CNN/LCN with mask = stride = 7 (16 patches on 28×28 images)."""
    return ArchitectureSpec(architecture, activation, mask=7, stride=7)


def measure_throughput(
    sampler: str, architecture: str, width: int, x: torch.Tensor, y: torch.Tensor,
    n_replicas: int, n_steps: int, temperature: float, step_size: float, dtype: torch.dtype,
    device: str, activation: str = "erf",
) -> float:
    """Replica-steps per second of `sampler` after 2 untimed warm-up steps."""
    generator = make_generator(0, device)
    model = build_network(_spec(architecture, activation), width, tuple(x.shape[1:]),
                          n_replicas, generator=generator, dtype=dtype, device=device)
    chain = SAMPLERS[sampler](model, x, y, temperature, 1.0, 1.0, step_size, generator)
    for _ in range(2):
        chain.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_steps):
        chain.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n_replicas * n_steps / (time.perf_counter() - start)


def run_throughput(
    x: torch.Tensor, y: torch.Tensor, width: int, replicas: list[int], n_steps: int,
    temperature: float, step_size: float, dtype: torch.dtype, device: str,
    reference: ReferenceLoop | None = None,
) -> list[dict]:
    """Part 1 table rows; with `reference`, its single-chain rate and the ratio ours/reference."""
    rows = []
    for architecture in ("fc", "cnn"):
        reference_rate = None
        if reference is not None:
            task = ReferenceTask(
                architecture, width, 7, 7, "erf", x.float().cpu(), y.float().cpu()[:, None],
                temperature, 1.0, 1.0, step_size, n_steps,
            )
            reference_rate = reference_throughput(reference, task)
        for sampler in SAMPLERS:
            for n_replicas in replicas:
                rate = measure_throughput(sampler, architecture, width, x, y, n_replicas,
                                          n_steps, temperature, step_size, dtype, device)
                rows.append({
                    "architecture": architecture, "sampler": sampler, "R": n_replicas,
                    "replica_steps_per_s": rate, "reference": reference_rate,
                    "ratio": None if reference_rate is None else rate / reference_rate,
                    "peak_rss_mib": peak_rss_mib(),
                })
                print(_format_throughput(rows[-1]), flush=True)
    return rows


def _format_throughput(row: dict) -> str:
    reference = "—" if row["reference"] is None else f"{row['reference']:.1f}"
    ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
    return (f"| {row['architecture']} | {row['sampler']} | {row['R']} | "
            f"{row['replica_steps_per_s']:.1f} | {reference} | {ratio} | "
            f"{row['peak_rss_mib']:.0f} |")


def time_to_precision(
    sampler: str, architecture: str, width: int, data: tuple[torch.Tensor, ...],
    temperature: float, n_replicas: int, burn_in: int, thin: int, relative_error: float,
    time_cap_s: float, dtype: torch.dtype, device: str, check_every: int = 50,
    leapfrog_steps: int = 10, max_rhat: float = math.inf, min_records: int = 20, seed: int = 0,
) -> dict:
    """Part 2: advance one chain set until stderr ≤ relative_error·test loss (and the
    test-loss R̂ ≤ max_rhat) or the time cap; wall time includes burn-in and the step-size
    adaptation in its first half. `check_every` records between checks (the summary's cost is
    not counted, in wall or CPU time); at least `min_records` records."""
    x_train, y_train, x_test, y_test = data
    settings = SamplerSettings(sampler=sampler, n_replicas=n_replicas, n_steps=10**7,
                               burn_in=burn_in, thin=thin, seed=seed,
                               dtype=str(dtype).removeprefix("torch."), kernel_records=0,
                               leapfrog_steps=leapfrog_steps)
    run = PosteriorRun(
        _spec(architecture, "erf"), width, x_train, y_train, x_test, y_test, temperature, 1.0,
        1.0, settings=settings, device=device,
    )
    start = time.perf_counter()
    cpu_start = time.process_time()
    cpu_in_summaries = 0.0
    summary = None

    def done(summary: PosteriorSummary | None) -> bool:
        return summary is not None and (
            summary.test_loss_stderr <= relative_error * summary.test_loss
            and summary.test_loss_estimate.rhat <= max_rhat)

    last_check = 0
    first_se: tuple[float, float, int] | None = None  # wall, CPU, steps at the first SE ≤ 1 %
    while time.perf_counter() - start < time_cap_s:
        run.advance(until_step=run.step + thin)
        records = run.accumulator.n_records
        if records - last_check < check_every and time.perf_counter() - start < time_cap_s:
            continue
        last_check = records
        if records >= min_records:
            cpu_before = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                summary = run.summary()
            cpu_in_summaries += time.process_time() - cpu_before
            if first_se is None and (summary.test_loss_stderr
                                     <= relative_error * summary.test_loss):
                first_se = (run.wall_time, time.process_time() - cpu_start - cpu_in_summaries,
                            run.step)
            if done(summary):
                break
    reached = done(summary)
    return {
        "architecture": architecture, "sampler": sampler, "R": n_replicas, "steps": run.step,
        "seconds": run.wall_time, "reached": reached, "leapfrog_steps": leapfrog_steps,
        "burn_in": burn_in, "dtype": str(dtype).removeprefix("torch."),
        "records": run.accumulator.n_records,
        "cpu_seconds": time.process_time() - cpu_start - cpu_in_summaries,
        "load": os.getloadavg()[0], "first_se": first_se,
        "test_loss": None if summary is None else summary.test_loss,
        "stderr": None if summary is None else summary.test_loss_stderr,
        "tau": None if summary is None else summary.test_loss_estimate.tau,
        "rhat": None if summary is None else summary.test_loss_estimate.rhat,
        "ess": None if summary is None else summary.ess,
        "acceptance": None if summary is None else summary.acceptance,
        "step_size": float(run.sampler.step_size.median()),
        "excluded": None if summary is None else len(summary.excluded_replicas),
    }


def _format_precision(row: dict) -> str:
    loss = "—" if row["test_loss"] is None else f"{row['test_loss']:.4f} ± {row['stderr']:.4f}"
    acceptance = "—" if row["acceptance"] is None else f"{row['acceptance']:.2f}"
    tau = "—" if row["tau"] is None else f"{row['tau']:.1f}"
    ess = "—" if row["ess"] is None else f"{row['ess']:.0f}"
    status = "" if row["reached"] else " (cap, not reached)"
    return (f"| {row['architecture']} | {row['sampler']} | {row['R']} | {row['steps']} | "
            f"{row['seconds']:.1f}{status} | {loss} | {tau} | {ess} | {acceptance} | "
            f"{row['step_size']:.3g} | {row['excluded']} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per throughput row")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--throughput-step-size", type=float, default=1e-4)
    parser.add_argument("--precision-replicas", type=int, default=16)
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds per sampler")
    parser.add_argument("--parts", nargs="+", default=["throughput", "precision"],
                        choices=("throughput", "precision", "bias", "answer"))
    parser.add_argument("--architectures", nargs="+", default=["fc", "cnn", "lcn"],
                        choices=("fc", "cnn", "lcn"), help="part 4 architectures")
    parser.add_argument("--answer-samplers", nargs="+", default=list(ANSWER_SCHEDULES),
                        choices=list(ANSWER_SCHEDULES), help="part 4 samplers")
    parser.add_argument("--answer-dtype", default="float64", choices=("float32", "float64"),
                        help="part 4 dtype (float64 is the sampler default)")
    parser.add_argument("--answer-replicas", type=int, default=None,
                        help="part 4: replicas of the split sampler (default --precision-"
                        "replicas)")
    parser.add_argument("--split-burn-in", type=int, default=None,
                        help="part 4: burn-in of the split sampler (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="part 4: sampler seed")
    parser.add_argument("--other-cap", type=float, default=None,
                        help="part 4: time cap of the samplers other than collapsed and split "
                        "(default --time-cap)")
    parser.add_argument("--check-every", type=int, default=10,
                        help="part 4: records between standard-error checks")
    parser.add_argument("--bias-replicas", type=int, default=64)
    parser.add_argument("--bias-langevin-steps", type=int, default=100_000)
    parser.add_argument("--bias-reference-steps", type=int, default=20_000)
    parser.add_argument("--bias-control-only", action="store_true",
                        help="part 3: only the fixed-step positive control")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared, oversubscribed machine)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip deepbays' Langevin loop (the reference column stays empty)")
    args = parser.parse_args(argv)
    if args.quick:
        args.replicas, args.steps, args.time_cap = [1, 4], 3, 20.0
        args.n_train, args.n_test, args.precision_replicas = 40, 40, 4
        args.bias_replicas, args.bias_langevin_steps, args.bias_reference_steps = 8, 2000, 1000
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if "bias" in args.parts:
        run_bias(args)
        if args.parts == ["bias"]:
            print(f"\npeak RSS {peak_rss_mib():.0f} MiB")
            return
    x_train, y_train, x_test, y_test, source = load_data(args.n_train, args.n_test)
    print(f"data: {source}, P = {args.n_train}, Pt = {args.n_test}, N = {args.width}, "
          f"T = {args.temperature}, λ0 = λ1 = 1, erf, {args.dtype}, device {args.device}, "
          f"{torch.get_num_threads()} torch threads")
    if "throughput" in args.parts:
        reference = None if args.no_reference else deepbays_loop(args.threads)
        print("\n### Throughput (ours: replica-steps per second; deepbays: one-chain steps per "
              "second)\n")
        print("| arch | sampler | R | ours | deepbays | ratio | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        run_throughput(x_train, y_train, args.width, args.replicas, args.steps,
                       args.temperature, args.throughput_step_size, dtype, args.device,
                       reference=reference)
    if "precision" in args.parts:
        run_precision(args, (x_train, y_train, x_test, y_test), dtype)
    if "answer" in args.parts:
        run_answer(args, (x_train, y_train, x_test, y_test))
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB")


def run_precision(args: argparse.Namespace, data: tuple[torch.Tensor, ...],
                  dtype: torch.dtype) -> None:
    """Part 2 table: each sampler, FC and CNN, until a 1 % standard error or the time cap."""
    print("\n### Wall time to a test-loss estimate with 1 % standard error\n")
    print("| arch | sampler | R | steps | seconds | test loss | τ (records) | ESS | acceptance | "
          "step (median) | excluded |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    schedule = {"collapsed": (100, 1), "mala": (400, 2), "langevin": (400, 2), "hmc": (200, 1),
                "collapsed-hmc": (100, 1)}
    for architecture in ("fc", "cnn"):
        for sampler, (burn_in, thin) in schedule.items():
            row = time_to_precision(
                sampler, architecture, args.width, data, args.temperature,
                args.precision_replicas, burn_in, thin, 0.01, args.time_cap, dtype, args.device,
            )
            print(_format_precision(row), flush=True)


#: Part 4 (time to answer): label → (sampler, burn-in, thin, leapfrog steps). 'collapsed' is
#: today's default sampler at its default settings (float64, MALA on W with per-replica dual
#: averaging) with the burn-in of part 2; the split sampler adapts in its first 10 trajectories.
ANSWER_SCHEDULES: dict[str, tuple[str, int, int, int]] = {
    "collapsed": ("collapsed", 100, 1, 1), "mala": ("mala", 400, 2, 1),
    "langevin": ("langevin", 400, 2, 1), "hmc": ("hmc", 200, 1, 10),
    "collapsed-hmc": ("collapsed-hmc", 100, 1, 10),
    "collapsed-split-hmc L=1": ("collapsed-split-hmc", 20, 1, 1),
    "collapsed-split-hmc L=3": ("collapsed-split-hmc", 20, 1, 3),
}


def run_answer(args: argparse.Namespace, data: tuple[torch.Tensor, ...]) -> list[dict]:
    """Part 4 table: wall time to a 1 % test-loss standard error with R̂ ≤ 1.1, per sampler
    and architecture, with steps/s, τ in steps, ESS, R̂, MCSE, CPU seconds and the load."""
    dtype = getattr(torch, args.answer_dtype)
    print(f"\n### Time to answer: 1 % standard error and R̂ ≤ 1.1 (P = {args.n_train}, "
          f"N = {args.width}, R = {args.precision_replicas}, {args.answer_dtype}, cap "
          f"{args.time_cap:.0f} s)\n")
    print("| arch | sampler | R | L | burn-in | steps | steps/s | τ (steps) | ESS | R̂ | "
          "test loss ± MCSE | wall s | CPU s | load | step | acceptance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for architecture in args.architectures:
        for label in args.answer_samplers:
            sampler, burn_in, thin, leapfrog = ANSWER_SCHEDULES[label]
            if label.startswith("collapsed-split") and args.split_burn_in is not None:
                burn_in = args.split_burn_in
            headline = label == "collapsed" or label.startswith("collapsed-split")
            cap = args.time_cap if headline or args.other_cap is None else args.other_cap
            replicas = (args.answer_replicas if args.answer_replicas and label.startswith(
                "collapsed-split") else args.precision_replicas)
            row = time_to_precision(
                sampler, architecture, args.width, data, args.temperature, replicas, burn_in,
                thin, 0.01, cap, dtype, args.device, check_every=args.check_every,
                leapfrog_steps=leapfrog, max_rhat=1.1, seed=args.seed,
            )
            rows.append(row)
            print(_format_answer(row, thin), flush=True)
    return rows


def _format_answer(row: dict, thin: int) -> str:
    acceptance = "—" if row["acceptance"] is None else f"{row['acceptance']:.2f}"
    if row["test_loss"] is None:
        loss = tau = ess = rhat = "—"
    else:
        loss = f"{row['test_loss']:.4f} ± {row['stderr']:.4f}"
        tau, ess = f"{row['tau'] * thin:.1f}", f"{row['ess']:.0f}"
        rhat = f"{row['rhat']:.3f}"
    wall = f"{row['seconds']:.1f}" + ("" if row["reached"] else " (cap, not reached)")
    first = row["first_se"]
    wall += "" if first is None else (f" [SE ≤ 1 % first at {first[0]:.1f} s, {first[1]:.1f} "
                                      f"CPU s, step {first[2]}]")
    return (f"| {row['architecture']} | {row['sampler']} | {row['R']} | "
            f"{row['leapfrog_steps']} | "
            f"{row['burn_in']} | {row['steps']} | {row['steps'] / row['seconds']:.2f} | {tau} | "
            f"{ess} | {rhat} | {loss} | {wall} | {row['cpu_seconds']:.1f} | "
            f"{row['load']:.1f} | {row['step_size']:.3g} | {acceptance} |")


@dataclass(frozen=True)
class BiasToy:
    """A small nonlinear posterior: erf FC of width N on P Gaussian inputs in D dimensions with
    labels sign(x₀ + x₁/2), temperature T, λ0 = λ1 = 1, Pt test points."""

    n_train: int
    n_test: int
    input_dim: int
    width: int
    temperature: float

    def data(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.n_train, self.input_dim, generator=generator, dtype=torch.float64)
        x_test = torch.randn(self.n_test, self.input_dim, generator=generator,
                             dtype=torch.float64)
        label = lambda z: torch.sign(z[:, 0] + 0.5 * z[:, 1])  # noqa: E731
        return x, label(x), x_test, label(x_test)


#: The posteriors of part 3: small enough that every sampler mixes (R̂ ≤ 1.02 at 20 000 MALA
#: steps). At P = 40, N = 8, T = 0.01 none does within 100 000 steps (R̂ 1.2–1.7), so a
#: difference there measures non-convergence, not the discretisation bias.
BIAS_TOYS = (BiasToy(10, 50, 4, 4, 0.05), BiasToy(20, 50, 4, 8, 0.02),
             BiasToy(40, 50, 4, 8, 0.05))


#: Positive control of part 3: unadjusted Langevin at fixed step sizes 2.5–10× the adapted one
#: on the second posterior (40 000 steps each), to show the O(η) bias where it is resolved.
BIAS_CONTROL_TOY = BIAS_TOYS[1]
BIAS_CONTROL_STEP_SIZES = (0.03, 0.06, 0.12)
BIAS_CONTROL_STEPS = 40_000


def langevin_bias(toy: BiasToy, n_replicas: int, langevin_steps: int,
                  reference_steps: int,
                  fixed_step_sizes: tuple[float, ...] | None = None) -> list[dict]:
    """Rows for `toy`: collapsed (the reference), MALA (a second exact sampler, on the same
    parameters as Langevin), unadjusted Langevin at the default settings and at the fixed default
    step size; deviations relative to the reference with their z-scores and the test-loss R̂."""
    x, y, x_test, y_test = toy.data()
    spec = ArchitectureSpec("fc", "erf")
    runs: list[tuple[str, int, bool, float | None]] = [("collapsed", reference_steps, True, None)]
    if fixed_step_sizes is None:
        runs += [("mala", reference_steps, True, None), ("langevin", langevin_steps, True, None),
                 ("langevin", langevin_steps, False, None)]
    else:
        runs += [("langevin", langevin_steps, False, size) for size in fixed_step_sizes]
    rows: list[dict] = []
    for sampler, n_steps, adapt, step_size in runs:
        settings = SamplerSettings(sampler=sampler, n_replicas=n_replicas, n_steps=n_steps,
                                   adapt_step_size=adapt, step_size=step_size, seed=1,
                                   kernel_records=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            summary = sample_posterior(spec, toy.width, x, y, x_test, y_test, toy.temperature,
                                       1.0, 1.0, settings=settings)
        rows.append({"sampler": sampler, "adapted": adapt, "fixed": step_size, "steps": n_steps,
                     "test": (summary.test_loss, summary.test_loss_stderr),
                     "train": (summary.train_error, summary.train_error_stderr),
                     "tau": summary.test_loss_estimate.tau,
                     "rhat": summary.test_loss_estimate.rhat, "acceptance": summary.acceptance,
                     "step_size": summary.step_size, "seconds": summary.wall_time_s})
    reference = rows[0]
    for row in rows:
        for key in ("test", "train"):
            value, error = row[key]
            exact, exact_error = reference[key]
            combined = math.hypot(error, exact_error)
            row[f"{key}_deviation"] = (value / exact - 1, combined / exact,
                                       (value - exact) / combined if row is not reference else 0)
    return rows


def _format_bias(toy: BiasToy, row: dict) -> str:
    def cell(key: str) -> str:
        value, error = row[key]
        relative, relative_error, z = row[f"{key}_deviation"]
        return (f"{value:.4f} ± {error:.4f} | {100 * relative:+.1f} ± "
                f"{100 * relative_error:.1f} % ({z:+.1f}σ)")

    label = row["sampler"]
    if row["sampler"] == "langevin":
        label += (" (adapted)" if row["adapted"] else " (fixed default η)"
                  if row["fixed"] is None else f" (fixed η = {row['fixed']:g})")
    acceptance = "—" if row["acceptance"] is None else f"{row['acceptance']:.3f}"
    return (f"| P={toy.n_train} N={toy.width} T={toy.temperature:g} | {label} | {row['steps']} | "
            f"{cell('test')} | {cell('train')} | {row['tau']:.1f} | {row['rhat']:.3f} | "
            f"{acceptance} | "
            f"{row['step_size']:.3g} | {row['seconds']:.0f} |")


def run_bias(args: argparse.Namespace) -> None:
    """Part 3 table."""
    print("\n### Unadjusted Langevin bias against the collapsed sampler (erf FC, D = 4, "
          f"R = {args.bias_replicas})\n")
    print("| posterior | sampler | steps | test loss | Δ test | train error | Δ train | "
          "τ (records) | R̂ | acceptance | η (median) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for toy in () if args.bias_control_only else BIAS_TOYS:
        for row in langevin_bias(toy, args.bias_replicas, args.bias_langevin_steps,
                                 args.bias_reference_steps):
            print(_format_bias(toy, row), flush=True)
    control_steps = BIAS_CONTROL_STEPS if not args.quick else args.bias_langevin_steps
    for row in langevin_bias(BIAS_CONTROL_TOY, args.bias_replicas, control_steps,
                             args.bias_reference_steps, BIAS_CONTROL_STEP_SIZES):
        print(_format_bias(BIAS_CONTROL_TOY, row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
