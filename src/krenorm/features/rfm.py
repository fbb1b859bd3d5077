"""Recursive Feature Machines on vectors (docs/math/features.md §4,
"ConvRFM iteration"): Laplace k_M(x, z) = exp(−‖x − z‖_M / L) or Gaussian
exp(−‖x − z‖²_M / (2L²)) kernel ridge regression, M ← normalise(G^power) with G the AGOP of the
predictor, gradients in closed form (conv_kernels.py with one patch per input:
Laplace ∇f_o(x) = (1/L) Σ_j α_jo k_M(x, x_j)/‖x − x_j‖_M · M(x_j − x), self term excluded;
Gaussian (1/L²) Σ_j α_jo k_M(x, x_j) M(x_j − x)).
"""

from __future__ import annotations

from collections.abc import Sequence

from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.features.estimators import FeatureClassifierBase, FeatureRegressorBase

_VECTOR_KERNELS = ("laplace", "gaussian")


class _RFMParameters:
    def __init__(
        self,
        kernel: str = "laplace",
        bandwidth: float | Sequence[float] = 10.0,
        ridge: float | Sequence[float] = 1e-3,
        n_rounds: int = 5,
        agop_samples: int = 2000,
        metric_power: float = 1.0,
        metric_normalisation: str = "trace",
        metric_threshold: float = 0.0,
        validation_fraction: float = 0.2,
        refit: bool = True,
        seed: int = 0,
        dtype: str = "float64",
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.ridge = ridge
        self.n_rounds = n_rounds
        self.agop_samples = agop_samples
        self.metric_power = metric_power
        self.metric_normalisation = metric_normalisation
        self.metric_threshold = metric_threshold
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.seed = seed
        self.dtype = dtype

    def _kernel(self) -> MahalanobisPatchKernel:
        if self.kernel not in _VECTOR_KERNELS:
            raise ValueError(f"RFM kernel must be one of {_VECTOR_KERNELS}, got {self.kernel!r}.")
        return MahalanobisPatchKernel(self.kernel, "aligned", geometry=None)


class RFMClassifier(_RFMParameters, FeatureClassifierBase):
    """RFM classifier on vectors X (n, D): one-hot kernel ridge with a learned metric M.

    Fitted attributes: metric_ (selected M), history_ (RecursionResult), best_round_, ridge_,
    bandwidth_, validation_score_, coefficients_, classes_.
    """


class RFMRegressor(_RFMParameters, FeatureRegressorBase):
    """RFM regressor on vectors X (n, D); targets (n,) or (n, O). Attributes as RFMClassifier."""
