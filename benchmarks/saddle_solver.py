"""ReLU CNN (Q̄, Q) saddle: Newton–Krylov (method "newton-krylov") against the previous solver
(damped fixed point with the dense hybrid-Newton fallback), docs/math/theory.md §3.6.

Prints, per case: CPU seconds (one torch thread), converged, ‖∇S‖, the signature and the
largest difference between the two solutions where both converge.

    OMP_NUM_THREADS=1 KRENORM_SHARED_DATASETS=/work/shared/datasets \\
        python benchmarks/saddle_solver.py [--cases mnist16 mnist49 cifar64]

cifar64 is the Np = 64 case of issue 18: CIFAR-10 cat vs dog in RGB at 32×32, a ReLU CNN with
mask 4 stride 4 (8×8 = 64 patches, 2·2080 = 4160 free entries of (Q̄, Q)), Newton–Krylov with
continuation in N from infinite width; its signature comes from the inertia test.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.data.loader import load_dataset
from krenorm.theory.continuation import solve_with_continuation
from krenorm.theory.diagnostics import SolverSettings
from krenorm.theory.renormalized_kernels import renormalized_kernels
from krenorm.theory.solvers import SaddlePointConvergenceWarning, _Coordinates, _hessian_batch

torch.set_num_threads(1)


def _timed(function):  # type: ignore[no-untyped-def]
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaddlePointConvergenceWarning)
        result = function()
    return result, time.process_time() - start


def _line(name: str, saddle, seconds: float) -> str:  # type: ignore[no-untyped-def]
    d = saddle.diagnostics
    negative = d.n_negative_eigenvalues
    return (f"| {name} | {seconds:.1f} | {'yes' if d.converged else 'no'} | "
            f"{d.gradient_norm:.1e} | {negative if negative is not None else '–'} | "
            f"{d.is_saddle} |")


def _mnist16() -> None:
    mnist = load_dataset("mnist", classes=(3, 5), n_train=200, n_test=10, seed=0)
    spec = ArchitectureSpec("cnn", "relu", mask=7, stride=7)
    model = renormalized_kernels(spec, mnist.x_train, 1.0, 1.0)
    action = model.action(mnist.y_train, 25.0, 0.1)
    previous, t_previous = _timed(lambda: solve_with_continuation(
        action, 200, solver=SolverSettings(method="fixed-point")))
    krylov, t_krylov = _timed(lambda: solve_with_continuation(
        action, 200, solver=SolverSettings(method="newton-krylov")))
    case = "MNIST P = 200, CNN 7/7 (16 patches, 272 entries), N = 25"
    print(_line(f"{case}: previous (fixed point → hybrid Newton)", previous, t_previous))
    print(_line(f"{case}: Newton–Krylov", krylov, t_krylov))
    print(f"max |Δ| between the two solutions: "
          f"{float((previous.point - krylov.point).abs().max()):.1e}")


def _mnist49() -> None:
    small = load_dataset("mnist", classes=(3, 5), n_train=40, n_test=10, seed=0)
    spec = ArchitectureSpec("cnn", "relu", mask=4, stride=4)
    model = renormalized_kernels(spec, small.x_train, 1.0, 1.0)
    action = model.action(small.y_train, 10.0, 0.1)
    krylov, t_krylov = _timed(lambda: solve_with_continuation(
        action, 40, solver=SolverSettings(method="newton-krylov")))
    case = "MNIST P = 40, CNN 4/4 (49 patches, 2450 entries), N = 10"
    print(_line(f"{case}: Newton–Krylov + continuation in N", krylov, t_krylov))
    evaluation = action.evaluate(krylov.point)
    _, t_dense = _timed(lambda: _Coordinates(action.structure, torch.float64).hessian(
        evaluation, _hessian_batch(action)))
    print(f"one dense 2450×2450 Hessian (what each hybrid-Newton step assembles): "
          f"{t_dense:.1f} CPU s")


def _cifar64(n_train: int = 60, width: float = 10.0) -> None:
    cifar = load_dataset("cifar10", classes=("cat", "dog"), n_train=n_train, n_test=10, seed=0)
    spec = ArchitectureSpec("cnn", "relu", mask=4, stride=4)
    model = renormalized_kernels(spec, cifar.x_train, 1.0, 1.0)
    action = model.action(cifar.y_train, width, 0.1)
    krylov, t_krylov = _timed(lambda: solve_with_continuation(
        action, n_train, solver=SolverSettings(method="newton-krylov")))
    shape = "×".join(str(side) for side in cifar.x_train.shape[1:])
    case = (f"CIFAR-10 cat/dog RGB ({shape}), P = {n_train}, CNN 4/4 "
            f"({action.structure.n_parameters} entries), N = {width:g}")
    print(_line(f"{case}: Newton–Krylov + continuation in N", krylov, t_krylov))
    print(f"iterations {krylov.diagnostics.iterations}, function evaluations "
          f"{krylov.diagnostics.function_evaluations}, message: {krylov.diagnostics.message}")


CASES = {"mnist16": _mnist16, "mnist49": _mnist49, "cifar64": _cifar64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    arguments = parser.parse_args()
    print("| case / solver | CPU s | converged | ‖∇S‖ | negative eigenvalues | signature |")
    print("|---|---|---|---|---|---|")
    for name in arguments.cases:
        CASES[name]()


if __name__ == "__main__":
    main()
