"""Effective actions of one-hidden-layer networks in the proportional limit, saddle-point
solvers, posterior predictions and the scikit-learn estimator (THEORY.md §3–6)."""

from krenorm.theory.fit import (
    FittedTheory,
    Prediction,
    TestLoss,
    TheoryConfig,
    TheorySummary,
    fit_theory,
)
from krenorm.theory.solvers import (
    SaddlePoint,
    SaddlePointConvergenceWarning,
    SolverDiagnostics,
    solve_saddle_point,
)

__all__ = [
    "FittedTheory",
    "Prediction",
    "RenormalizedKernelRegressor",
    "SaddlePoint",
    "SaddlePointConvergenceWarning",
    "SolverDiagnostics",
    "TestLoss",
    "TheoryConfig",
    "TheorySummary",
    "fit_theory",
    "solve_saddle_point",
]


def __getattr__(name: str):
    # The estimator imports scikit-learn (seconds of start-up); load it only when asked for.
    if name == "RenormalizedKernelRegressor":
        from krenorm.theory.estimator import RenormalizedKernelRegressor

        return RenormalizedKernelRegressor
    raise AttributeError(f"module 'krenorm.theory' has no attribute {name!r}")
