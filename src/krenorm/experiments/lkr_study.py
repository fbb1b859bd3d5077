"""The LKR question (issue 13, docs/selection.md §4): where in (T, λ1, α) does the finite-width
theory of a CNN predict a lower test loss than the best-tuned infinite-width network, and does
the FC never?

Per data set (a class pair, P training, Pv validation and Pt test images) and architecture:

    Δ(T, λ1, α) = ε_g(N = P/α; T, λ1) − min_s ε_g(∞; T, λ1 = s)

where the minimum over the readout precision s is taken on the *test* set (an oracle: the best
any infinite-width network of that temperature can do with one readout prior), and a second
baseline tunes a readout prior per patch on the validation set (`best_readout_priors`) and is
scored on the test set. At N = ∞ a CNN without pooling is the Gaussian process with kernel
Σ_i K_ii/(λ1 Np) (docs/math/theory.md §3), so both baselines need only the per-patch kernels.
Finite-width points reuse one set of pair blocks across λ1, temperatures and widths
(`with_lambda1`), each saddle point warm-started from its neighbour; the JSON records the CPU
seconds of building the kernels and of each solve.

    python -m krenorm.experiments.lkr_study OUT.json [--case=0,2] [--n_train=600]
        [--temperatures=0.05] [--lambda1s=4,16] [--alphas=0.5,2 | --widths=25,100,400]
        [--architectures=cnn,fc] [--evidence=fc | --evidence=] [--quick]
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from scipy import optimize

from krenorm.architectures import ArchitectureSpec
from krenorm.data import load_dataset
from krenorm.theory.evidence import EvidenceMaximizer
from krenorm.theory.renormalized_kernels import ArchitectureKernels, renormalized_kernels
from krenorm.theory.selection import best_readout_priors, patch_kernels, readout_prior_loss
from krenorm.theory.solvers import SaddlePointConvergenceWarning, solve_saddle_point

__all__ = ["DataCase", "StudySettings", "run_case", "run_study"]


@dataclass(frozen=True)
class DataCase:
    """One data set of the study and the CNN geometry used on it."""

    name: str
    dataset: str
    classes: tuple[Any, Any]
    side: int | None
    grayscale: bool
    mask: int
    stride: int


@dataclass(frozen=True)
class StudySettings:
    """Sizes and grids of the theory maps (P = n_train; α = P/N)."""

    cases: tuple[DataCase, ...] = (
        DataCase("MNIST 3 vs 5, gray 28×28", "mnist", (3, 5), None, False, 7, 7),
        DataCase("CIFAR-10 airplane vs automobile, gray 28×28", "cifar10",
                 ("airplane", "automobile"), 28, True, 7, 7),
        DataCase("CIFAR-10 airplane vs automobile, RGB 32×32", "cifar10",
                 ("airplane", "automobile"), None, False, 8, 8),
        DataCase("CIFAR-10 cat vs dog, RGB 32×32", "cifar10", ("cat", "dog"), None, False, 8,
                 8),
    )
    n_train: int = 200
    n_validation: int = 200
    n_test: int = 400
    temperatures: tuple[float, ...] = (0.01, 0.05, 0.2)
    #: The best single readout precision at N = ∞ lies at λ1 ≈ 2–70 on these tasks (it grows as
    #: T falls), so the grid spans 1–64.
    lambda1s: tuple[float, ...] = (1.0, 4.0, 16.0, 64.0)
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    architectures: tuple[str, ...] = ("cnn", "fc")
    #: Architectures whose infinite-width evidence is maximised over (T, λ1) (each evaluation
    #: recomputes the kernels: cheap for FC, minutes for a CNN on a loaded machine).
    evidence_architectures: tuple[str, ...] = ("fc",)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _split(case: DataCase, settings: StudySettings) -> dict[str, torch.Tensor]:
    data = load_dataset(case.dataset, case.classes, settings.n_train,
                        settings.n_validation + settings.n_test, side=case.side,
                        grayscale=case.grayscale, seed=settings.seed)
    n_val = settings.n_validation
    return {"x_train": data.x_train, "y_train": data.y_train,
            "x_val": data.x_test[:n_val], "y_val": data.y_test[:n_val],
            "x_test": data.x_test[n_val:], "y_test": data.y_test[n_val:]}


def _infinite_width(spec: ArchitectureSpec, split: dict[str, torch.Tensor],
                    settings: StudySettings) -> dict[str, Any]:
    """Per temperature: ε_g(∞) at each λ1 of the grid, the oracle over one readout precision,
    λ1 tuned on validation (continuous), and per-patch priors tuned on validation."""
    x_all = torch.cat([split["x_train"], split["x_test"]])
    blocks = patch_kernels(spec, x_all, 1.0)
    n_train = split["x_train"].shape[0]
    out: dict[str, Any] = {}
    for temperature in settings.temperatures:
        def test_loss(log_s: float, temperature: float = temperature) -> float:
            with torch.no_grad():
                return float(readout_prior_loss(
                    torch.full((blocks.shape[0],), -float(log_s), dtype=torch.float64), blocks,
                    n_train, split["y_train"], split["y_test"], temperature, 1.0))
        grid = {str(lam): test_loss(math.log(lam)) for lam in settings.lambda1s}
        oracle = optimize.minimize_scalar(test_loss, bounds=(math.log(1e-3), math.log(1e3)),
                                          method="bounded")
        tuned = best_readout_priors(spec, split["x_train"], split["y_train"], split["x_val"],
                                    split["y_val"], temperature=temperature)
        with torch.no_grad():
            per_patch = float(readout_prior_loss(
                torch.log(torch.tensor(tuned.q, dtype=torch.float64)), blocks, n_train,
                split["y_train"], split["y_test"], temperature, 1.0))
        out[str(temperature)] = {
            "grid": grid,
            "oracle_loss": float(oracle.fun), "oracle_lambda1": float(math.exp(oracle.x)),
            "per_patch_test_loss": per_patch, "per_patch_validation_loss": tuned.validation_loss,
            "per_patch_q": list(tuned.q),
        }
    return out


def _finite_width(spec: ArchitectureSpec, split: dict[str, torch.Tensor],
                  settings: StudySettings, log: Any = sys.stderr
                  ) -> tuple[dict[str, Any], float]:
    """ε_g(N = P/α) of the finite-width theory on the (T, λ1) grid, Q̄ and the solve's CPU
    seconds at each point; and the CPU seconds of building the kernels (once for all λ1)."""
    n_train = split["x_train"].shape[0]
    out: dict[str, Any] = {}
    # The pair blocks depend on the data, geometry and λ0 only: build them once and move the
    # model to each λ1 (`with_lambda1`), instead of rebuilding them per λ1 — at P = 2000 with
    # 16 patches building the 136 blocks costs more than a whole saddle-point solve.
    started = time.process_time()
    base = renormalized_kernels(spec, split["x_train"], 1.0, settings.lambda1s[0])
    build_seconds = time.process_time() - started
    print(f"  {spec.kind}: kernels built in {build_seconds:.0f} s CPU", file=log, flush=True)
    for lambda1 in settings.lambda1s:
        kernels = (base.with_lambda1(lambda1) if isinstance(base, ArchitectureKernels)
                   else renormalized_kernels(spec, split["x_train"], 1.0, lambda1))
        for temperature in settings.temperatures:
            start = None
            for alpha in sorted(settings.alphas):  # widest first: warm starts from near Q̄ = 1
                width = n_train / alpha
                solve_started = time.process_time()
                action = kernels.action(split["y_train"], width, temperature)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
                    saddle = solve_saddle_point(action, start)
                    if not saddle.diagnostics.converged:
                        saddle = solve_saddle_point(action, None, method="auto")
                converged = bool(saddle.diagnostics.converged)
                if converged:
                    start = saddle.point
                posterior = kernels.posterior(saddle.point, split["y_train"], temperature)
                prediction = posterior.predict(split["x_test"])
                mean = prediction.mean
                loss = float(((split["y_test"] - mean) ** 2 + prediction.variance).mean())
                q_bar = action.structure.q_bar(saddle.point)
                out[f"{temperature}|{lambda1}|{alpha}"] = {
                    "temperature": temperature, "lambda1": lambda1, "alpha": alpha,
                    "width": width, "test_loss": loss, "converged": converged,
                    "q_bar": q_bar.tolist(),
                    "cpu_seconds": time.process_time() - solve_started,
                }
                print(f"  {spec.kind} T={temperature} λ1={lambda1} N={width:g}: ε_g = {loss:.4f}"
                      f" ({'converged' if converged else 'NOT converged'}, "
                      f"{time.process_time() - solve_started:.0f} s CPU)", file=log, flush=True)
    return out, build_seconds


def _evidence(spec: ArchitectureSpec, split: dict[str, torch.Tensor]) -> dict[str, Any]:
    """(T, λ1) maximising the infinite-width evidence, with Laplace spreads, and its test loss."""
    fitted = EvidenceMaximizer(spec.kind, math.inf, temperature=0.1, lambda1=1.0,
                               activation=spec.activation, mask=spec.mask, stride=spec.stride,
                               bounds=[(1e-3, 10.0), (1e-3, 1e3)]).fit(
        split["x_train"], split["y_train"])
    test = fitted.regressor_.test_loss(split["x_test"], split["y_test"])[0]
    return {"temperature": fitted.temperature_, "lambda1": fitted.lambda1_,
            "spreads": fitted.spreads_, "log_evidence": fitted.log_marginal_likelihood_value_,
            "test_loss": float(test), "evaluations": fitted.n_evaluations_}


def run_case(case: DataCase, settings: StudySettings, log: Any = sys.stderr) -> dict[str, Any]:
    """All maps and baselines of one data set."""
    split = _split(case, settings)
    result: dict[str, Any] = {"case": asdict(case), "shape": list(split["x_train"].shape)}
    for kind in settings.architectures:
        spec = (ArchitectureSpec("fc", "erf") if kind == "fc"
                else ArchitectureSpec(kind, "erf", case.mask, case.stride))
        started, cpu_started = time.time(), time.process_time()
        entry: dict[str, Any] = {"infinite": _infinite_width(spec, split, settings)}
        entry["infinite_cpu_seconds"] = time.process_time() - cpu_started
        print(f"{case.name} {kind}: infinite width {time.time() - started:.0f} s "
              f"({entry['infinite_cpu_seconds']:.0f} s CPU)", file=log, flush=True)
        entry["finite"], entry["kernel_build_cpu_seconds"] = _finite_width(spec, split,
                                                                           settings, log)
        print(f"{case.name} {kind}: finite width {time.time() - started:.0f} s (kernels "
              f"{entry['kernel_build_cpu_seconds']:.0f} s CPU, then "
              f"{sum(p['cpu_seconds'] for p in entry['finite'].values()):.0f} s CPU of solves)",
              file=log, flush=True)
        if kind in settings.evidence_architectures:
            entry["evidence"] = _evidence(spec, split)
            print(f"{case.name} {kind}: evidence {time.time() - started:.0f} s", file=log,
                  flush=True)
        result[kind] = entry
    return result


def run_study(settings: StudySettings, path: str) -> dict[str, Any]:
    """Run every case, writing the JSON after each (a crash keeps the finished cases)."""
    results: dict[str, Any] = {"settings": {k: v for k, v in asdict(settings).items()
                                            if k != "cases"}, "cases": []}
    for case in settings.cases:
        results["cases"].append(run_case(case, settings))
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return results


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    path = argv[0] if argv else "lkr_study.json"
    settings = StudySettings()
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    changes: dict[str, Any] = {}
    if "case" in options:  # some cases only (one process per case on a shared machine)
        changes["cases"] = tuple(settings.cases[int(i)] for i in options["case"].split(","))
    for name in ("n_train", "n_validation", "n_test"):
        if name in options:
            changes[name] = int(options[name])
    for name in ("temperatures", "lambda1s", "alphas"):
        if name in options:
            changes[name] = tuple(float(v) for v in options[name].split(","))
    if "architectures" in options:
        changes["architectures"] = tuple(options["architectures"].split(","))
    if "evidence" in options:  # --evidence= (empty) maximises no evidence
        changes["evidence_architectures"] = tuple(a for a in options["evidence"].split(",") if a)
    settings = replace(settings, **changes)
    if "widths" in options:  # widths N instead of α = P/N
        settings = replace(settings, alphas=tuple(
            settings.n_train / float(v) for v in options["widths"].split(",")))
    if "--quick" in argv:
        settings = StudySettings(cases=settings.cases[:1], n_train=40, n_validation=40,
                                 n_test=40, temperatures=(0.05,), lambda1s=(1.0,),
                                 alphas=(1.0,), evidence_architectures=())
    run_study(settings, path)


if __name__ == "__main__":
    main(sys.argv[1:])
