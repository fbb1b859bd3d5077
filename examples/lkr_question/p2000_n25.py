"""N = 25 points of the P = 2000 slice (CIFAR-10 cat vs dog, RGB 32×32, CNN mask = stride = 8,
16 patches, T = 0.05; REPORT.md "Finite width at P = 2000"), by continuation in the width N.

The study's own solve ("auto": Anderson, then L-BFGS and a Newton–Krylov polish, restarted from
Q̄ = 1 when the warm start failed) did not converge at N = 25 (α = 80) in 440 s of CPU. Here:

- the 136 pair blocks are built once (stored float64, as in the study) and moved to each λ1
  with `with_lambda1`;
- per λ1 the path starts at N = 100 from the converged N = 100 Q̄ of the study
  (p2000_study_b.json: λ1 = 16, 256; for λ1 = 64, which the study logged without Q̄, from the
  mean of those two), re-solved there as a check that split and kernels are the study's;
- the width is then lowered N = 100 → 50 → 25, each solve by Newton's method with conjugate
  gradients on Hessian-vector products (`method="newton-krylov"` of krenorm.theory.solvers),
  warm-started from a secant prediction in α = P/N (Q̄(α) extrapolated linearly from the last
  two accepted points, when that stays positive definite); a step that does not converge is
  halved geometrically in N;
- at N = 25 the curvature is checked (smallest Hessian eigenvalue, LOBPCG; > 0: a minimum of S,
  as the SPD structure requires).

    python examples/lkr_question/p2000_n25.py OUT.json [64,256,16]

OUT.json gets one entry per solve (the whole path), written after every solve.
"""

import json
import math
import resource
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.experiments.lkr_study import StudySettings, _split
from krenorm.theory.renormalized_kernels import renormalized_kernels
from krenorm.theory.solvers import (
    SaddlePointConvergenceWarning,
    SolverProgress,
    min_hessian_eigenvalue,
    solve_saddle_point,
)

TEMPERATURE = 0.05
HERE = Path(__file__).parent


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out_path = argv[0]
    lambda1s = [float(v) for v in (argv[1] if len(argv) > 1 else "64,256,16").split(",")]
    settings = replace(StudySettings(), n_train=2000, n_validation=400, n_test=400,
                       temperatures=(TEMPERATURE,), lambda1s=tuple(lambda1s))
    split = _split(settings.cases[3], settings)
    n_train = split["x_train"].shape[0]
    spec = ArchitectureSpec("cnn", "erf", 8, 8)
    started = time.process_time()
    base = renormalized_kernels(spec, split["x_train"], 1.0, lambda1s[0])
    print(f"blocks built in {time.process_time() - started:.0f} s CPU "
          f"({base.block_plan}); "
          f"peak {peak_gib():.2f} GiB", flush=True)
    with open(HERE / "p2000_study_b.json", encoding="utf-8") as handle:
        stored = json.load(handle)["cases"][0]["cnn"]["finite"]
    n100 = {entry["lambda1"]: torch.tensor(entry["q_bar"], dtype=torch.float64)
            for entry in stored.values() if entry["width"] == 100.0}
    log_losses = {16.0: 0.9603, 64.0: 0.9286, 256.0: 0.9356}  # the study's N = 100 (4 digits)
    records: list[dict] = []

    for lambda1 in lambda1s:
        kernels = base.with_lambda1(lambda1)
        start = n100.get(lambda1, (n100[16.0] + n100[256.0]) / 2)
        path: list[tuple[float, torch.Tensor]] = []  # accepted (α, Q̄)
        widths = [100.0, 50.0, 25.0]
        while widths:
            width = widths[0]
            alpha = n_train / width
            action = kernels.action(split["y_train"], width, TEMPERATURE)
            guess = start
            if len(path) >= 2:  # secant prediction in α
                (a0, q0), (a1, q1) = path[-2], path[-1]
                predicted = q1 + (q1 - q0) * (alpha - a1) / (a1 - a0)
                if bool(torch.all(torch.linalg.eigvalsh(predicted) > 0)):
                    guess = predicted
            elif len(path) == 1:
                guess = path[-1][1]
            passes_before = action.block_passes()
            solve_started, wall_started = time.process_time(), time.time()
            counter = {"n": 0}

            def report(step: SolverProgress, counter: dict = counter) -> None:
                counter["n"] += 1
                if counter["n"] % 5 == 1:
                    print(f"    eval {step.evaluations}: ‖∇S‖ = {step.gradient_norm:.3g}, "
                          f"S = {step.action:.10g}, passes {step.block_passes}", flush=True)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
                saddle = solve_saddle_point(action, guess, method="newton-krylov",
                                            max_iterations=40, hessian_check=False,
                                            progress=report)
            diagnostics = saddle.diagnostics
            converged = bool(diagnostics.converged)
            record = {"lambda1": lambda1, "width": width, "alpha": alpha,
                      "temperature": TEMPERATURE, "converged": converged,
                      "gradient_norm": diagnostics.gradient_norm, "action": diagnostics.action,
                      "iterations": diagnostics.iterations,
                      "evaluations": diagnostics.function_evaluations,
                      "block_passes": (None if passes_before is None else
                                       action.block_passes() - passes_before),
                      "message": diagnostics.message,
                      "start": "secant" if guess is not start and len(path) >= 2 else (
                          "previous width" if path else (
                              "study N = 100" if lambda1 in n100 else "mean of λ1 = 16, 256")),
                      "cpu_seconds": time.process_time() - solve_started,
                      "wall_seconds": time.time() - wall_started}
            if converged:
                path.append((alpha, saddle.point))
                widths.pop(0)
                if width == 25.0:
                    curvature_started = time.process_time()
                    record["min_hessian_eigenvalue"] = min_hessian_eigenvalue(action,
                                                                              saddle.point)
                    record["curvature_cpu_seconds"] = time.process_time() - curvature_started
                posterior = kernels.posterior(saddle.point, split["y_train"], TEMPERATURE)
                prediction = posterior.predict(split["x_test"])
                record["test_loss"] = float(((split["y_test"] - prediction.mean) ** 2
                                             + prediction.variance).mean())
                q_bar = action.structure.q_bar(saddle.point)
                record["q_bar"] = q_bar.tolist()
                record["q_bar_eigenvalue_range"] = [float(v) for v in
                                                    torch.linalg.eigvalsh(q_bar)[[0, -1]]]
                if width == 100.0:
                    record["study_test_loss_n100"] = log_losses.get(lambda1)
            else:
                # Halve the step in N geometrically (between the last accepted width and this).
                last = n_train / path[-1][0] if path else None
                if last is None or last / width < 1.05:
                    print(f"  λ1 = {lambda1:g}: giving up at N = {width:g}", flush=True)
                    widths = []
                else:
                    widths.insert(0, math.sqrt(last * width))
            record["peak_gib"] = peak_gib()
            records.append(record)
            print(f"  λ1 = {lambda1:g} N = {width:g}: {'converged' if converged else 'NOT'} "
                  f"‖∇S‖ = {diagnostics.gradient_norm:.3g}, ε_g = "
                  f"{record.get('test_loss', float('nan')):.5f}, {diagnostics.iterations} "
                  f"Newton steps, {record['block_passes']} passes, "
                  f"{record['cpu_seconds']:.0f} s CPU ({record['wall_seconds']:.0f} s wall), "
                  f"λmin(H) = {record.get('min_hessian_eigenvalue')}, "
                  f"peak {record['peak_gib']:.2f} GiB", flush=True)
            with open(out_path, "w", encoding="utf-8") as handle:
                json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
