"""Effective actions of one-hidden-layer networks in the proportional limit, saddle-point
solvers, posterior predictions and the scikit-learn estimator (docs/math/theory.md §3–6)."""

from typing import Any

from krenorm.theory.blocks import BlockPlan, BlockSettings
from krenorm.theory.continuation import ContinuationSettings, solve_with_continuation

# Deep networks (docs/math/deep.md §3–5).
from krenorm.theory.deep_fit import DeepFittedTheory, DeepTheorySummary, fit_deep_theory
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
from krenorm.theory.solvers import (
    SaddlePointConvergenceWarning,
    SolverProgress,
    solve_saddle_point,
)

__all__ = [
    "BlockPlan",
    "BlockSettings",
    "CholeskyPosterior",
    "ContinuationSettings",
    "DeepFittedTheory",
    "DeepTheorySummary",
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
    "SolverProgress",
    "SolverSettings",
    "SpectralPosterior",
    "TestLoss",
    "TheoryConfig",
    "TheorySummary",
    "fit_deep_theory",
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
