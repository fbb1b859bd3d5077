"""Kernel rescaling versus adaptation across scaling regimes χ ∈ [1, N] (docs/math/adaptive.md).

    scaling        χ ∈ [1, N], priors g_w/(χN) and g_v/D, noise κ/χ; docs/math/theory.md's (T, λ0,
    λ1) linear_oracle  exact finite-N linear network: Gamma(N/2) scale mixture, 1-D quadrature
    rescaling      scalar / deep-linear kernel renormalization (one root in ln U)
    linear_theory  linear-network predictions at a given scale Q
    correction     standard-scaling correction (scalar Q with the fluctuation trace)
    tree_level     tree-level adaptation of linear networks, adapted kernel, rank-one spike
    nonlinear      adaptive saddle point for nonlinear φ (resample–move importance sampling)
    sampled        sampled networks at χ through krenorm.networks
    tasks          teacher, Ising, Hermite single-index, XOR, MNIST 0-vs-3
    study, figures the `krenorm adaptive` study, its report and figures
"""

from krenorm.adaptive.correction import (
    CorrectedLinearResult,
    ScaledKernelPrediction,
    scaled_kernel_prediction,
    standard_corrected_kernel,
    standard_corrected_linear,
)
from krenorm.adaptive.deep_linear import (
    DeepLinearOracleResult,
    DeepLinearSamples,
    deep_linear_oracle,
    sample_deep_linear,
)
from krenorm.adaptive.linear_oracle import LinearOracleResult, linear_oracle
from krenorm.adaptive.linear_theory import LinearPrediction, predict_at_scale
from krenorm.adaptive.nonlinear import (
    AdaptiveSolution,
    AdaptiveSolverSettings,
    AnnealStep,
    solve_adaptive_saddle_point,
)
from krenorm.adaptive.rescaling import KernelSpectrum, RescalingSolution, solve_rescaling
from krenorm.adaptive.scaling import (
    ScalingRegime,
    chi_for_regime,
    nngp_kernel_hat,
    nngp_kernel_hat_diagonal,
)
from krenorm.adaptive.tasks import TASK_NAMES, make_task, teacher_directions
from krenorm.adaptive.tree_level import (
    RankOneSpike,
    TreeLevelLinearResult,
    adapted_kernel,
    rank_one_spike,
    tree_level_linear,
)

__all__ = [
    "TASK_NAMES",
    "AdaptiveSolution",
    "AdaptiveSolverSettings",
    "AnnealStep",
    "CorrectedLinearResult",
    "DeepLinearOracleResult",
    "DeepLinearSamples",
    "KernelSpectrum",
    "LinearOracleResult",
    "LinearPrediction",
    "RankOneSpike",
    "RescalingSolution",
    "ScaledKernelPrediction",
    "ScalingRegime",
    "TreeLevelLinearResult",
    "adapted_kernel",
    "chi_for_regime",
    "deep_linear_oracle",
    "linear_oracle",
    "make_task",
    "nngp_kernel_hat",
    "nngp_kernel_hat_diagonal",
    "predict_at_scale",
    "rank_one_spike",
    "sample_deep_linear",
    "scaled_kernel_prediction",
    "solve_adaptive_saddle_point",
    "solve_rescaling",
    "standard_corrected_kernel",
    "standard_corrected_linear",
    "teacher_directions",
    "tree_level_linear",
]
