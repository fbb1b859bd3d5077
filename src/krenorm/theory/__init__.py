"""Effective actions of one-hidden-layer networks in the proportional limit, saddle-point
solvers, posterior predictions and the scikit-learn estimator (docs/math/theory.md §3–6)."""

from typing import Any

from krenorm.theory.continuation import ContinuationSettings, solve_with_continuation
from krenorm.theory.diagnostics import SaddlePoint, SolverDiagnostics, SolverSettings
from krenorm.theory.fit import (
    FittedTheory,
    TestLoss,
    TheoryConfig,
    TheorySummary,
    fit_theory,
)
from krenorm.theory.local_mean_term import LocalMeanTermStructure
from krenorm.theory.order_parameters import (
    DiagonalStructure,
    MatrixStructure,
    MeanTermStructure,
    OrderParameterStructure,
    ScalarStructure,
)
from krenorm.theory.posterior import (
    CholeskyPosterior,
    GaussianPosterior,
    Prediction,
    SpectralPosterior,
)
from krenorm.theory.solvers import SaddlePointConvergenceWarning, solve_saddle_point

__all__ = [
    "CholeskyPosterior",
    "ContinuationSettings",
    "DiagonalStructure",
    "FittedTheory",
    "GaussianPosterior",
    "LocalMeanTermStructure",
    "MatrixStructure",
    "MeanTermStructure",
    "OrderParameterStructure",
    "Prediction",
    "RenormalizedKernelRegressor",
    "SaddlePoint",
    "SaddlePointConvergenceWarning",
    "ScalarStructure",
    "SolverDiagnostics",
    "SolverSettings",
    "SpectralPosterior",
    "TestLoss",
    "TheoryConfig",
    "TheorySummary",
    "fit_theory",
    "solve_saddle_point",
    "solve_with_continuation",
]


def __getattr__(name: str) -> Any:
    # The estimator imports scikit-learn (seconds of start-up); load it only when asked for.
    if name == "RenormalizedKernelRegressor":
        from krenorm.theory.estimator import RenormalizedKernelRegressor

        return RenormalizedKernelRegressor
    raise AttributeError(f"module 'krenorm.theory' has no attribute {name!r}")
