"""scikit-learn estimator over the effective theory (docs/math/theory.md §3–6).

`RenormalizedKernelRegressor` follows the estimator conventions (constructor stores
hyper-parameters verbatim, `fit` learns attributes ending in `_`), so it clones, pickles and runs
inside GridSearchCV, e.g. to choose T, λ0, λ1 by cross-validation or by `log_evidence_`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from krenorm._validation import one_line_value_errors
from krenorm.architectures import ArchitectureSpec
from krenorm.theory.fit import FittedTheory, TestLoss, TheoryConfig


def _as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor)
                           else x, dtype=torch.float64)


def _numpy(x: Any) -> Any:
    """Tensors (any device) to numpy so scikit-learn's validation can read them."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


class RenormalizedKernelRegressor(RegressorMixin, BaseEstimator):
    """Posterior of a finite-width Bayesian one-hidden-layer network in the proportional limit.

    Parameters mirror docs/math/theory.md: architecture 'fc' | 'cnn' | 'lcn' | 'cnn-gap'; width N;
    temperature T; lambda0, lambda1 (prior precisions); activation; mask, stride, padding
    (Conv2d meaning, ignored for 'fc'); n_outputs (None: taken from y; 'fc' only for > 1).
    width = math.inf is the infinite-width limit (Q̄ = 1, the NNGP); infinite_width=True is a
    deprecated spelling of it. X is (P, c, H, W) images or (P, D) vectors.

    Fitted attributes: q_bar_ (float for FC/CNN-GAP, vector for LCN, matrix for CNN or FC with
    several outputs), diagnostics_ (dict), log_evidence_, theory_ (the `FittedTheory`).
    """

    def __init__(self, architecture: str = "fc", width: float = 100.0, temperature: float = 0.1,
                 lambda0: float = 1.0, lambda1: float = 1.0, activation: str = "erf",
                 mask: int | tuple[int, int] = 1, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, n_outputs: int | None = None,
                 infinite_width: bool = False, solver: str = "auto", tolerance: float = 1e-9):
        self.architecture = architecture
        self.width = width
        self.temperature = temperature
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.activation = activation
        self.mask = mask
        self.stride = stride
        self.padding = padding
        self.n_outputs = n_outputs
        self.infinite_width = infinite_width
        self.solver = solver
        self.tolerance = tolerance

    def _config(self) -> TheoryConfig:
        spec = ArchitectureSpec(self.architecture, self.activation, self.mask, self.stride,
                                self.padding)
        width = self.width
        if self.infinite_width:
            warnings.warn("infinite_width=True is deprecated; pass width=math.inf.",
                          DeprecationWarning, stacklevel=3)
            width = math.inf
        return TheoryConfig(spec, width, self.temperature, self.lambda0, self.lambda1,
                            solver=self.solver, tolerance=self.tolerance)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        # Several outputs (a D×D Q̄) exist for FC only (docs/math/theory.md §3).
        tags.target_tags.multi_output = self.architecture == "fc"
        return tags

    def fit(self, X: Any, y: Any) -> RenormalizedKernelRegressor:
        """Solve the saddle point on (X, y): X (P, D) vectors or (P, c, H, W) images, y (P,) or
        (P, D) (FC). scikit-learn's `validate_data` refuses sparse, complex, empty, NaN and
        non-numeric input with its usual messages."""
        with one_line_value_errors():
            X, y = validate_data(self, _numpy(X), _numpy(y), allow_nd=True, dtype=np.float64,
                                 multi_output=True, y_numeric=True)
        y_tensor = _as_tensor(y)
        outputs = 1 if y_tensor.ndim == 1 else y_tensor.shape[1]
        if self.n_outputs is not None and outputs != self.n_outputs:
            raise ValueError(f"n_outputs={self.n_outputs} but y has {outputs} output(s); pass y "
                             f"with {self.n_outputs} columns, or n_outputs=None to take it "
                             "from y.")
        self.theory_ = FittedTheory(self._config(), _as_tensor(X), y_tensor)
        q = self.theory_.q_bar
        self.q_bar_ = float(q) if q.numel() == 1 and q.ndim <= 1 else q.numpy()
        diagnostics = self.theory_.diagnostics
        self.diagnostics_ = {} if diagnostics is None else diagnostics.to_dict()
        self.log_evidence_ = float(self.theory_.log_evidence)
        return self

    def _validated(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "theory_")
        with one_line_value_errors():
            return _as_tensor(validate_data(self, _numpy(X), reset=False, allow_nd=True,
                                            dtype=np.float64))

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Posterior mean (and standard deviation of the network output, no label noise)."""
        x = self._validated(X)  # first: refuses an unfitted estimator with NotFittedError
        prediction = self.theory_.predict(x)
        mean = prediction.mean.cpu().numpy()
        if return_std:
            return mean, np.sqrt(prediction.variance.cpu().numpy())
        return mean

    def test_loss(self, X: Any, y: Any) -> tuple[float, float, float]:
        """(ε_g, bias², variance) of docs/math/theory.md §4."""
        x = self._validated(X)
        loss: TestLoss = self.theory_.test_loss(x, _as_tensor(_numpy(y)))
        return loss.loss, loss.bias2, loss.variance

    def summary(self) -> dict[str, Any]:
        check_is_fitted(self, "theory_")
        return self.theory_.summary().to_dict()
