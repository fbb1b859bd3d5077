"""scikit-learn style fit/predict shared by the RFM and ConvRFM estimators (docs/math/features.md
"ConvRFM iteration"): validation split, the recursion of recursion.py, and the final refit.

Subclasses declare their hyper-parameters in __init__ (scikit-learn reads the signature for
get_params/set_params/clone) and build their MahalanobisPatchKernel in `_kernel()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from krenorm._validation import one_line_value_errors
from krenorm.features.deep_conv_kernels import PatchKernel
from krenorm.features.recursion import RecursionResult, Task, run_feature_recursion
from krenorm.features.ridge import solve_kernel_ridge

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def as_tensor(values: Any, dtype: torch.dtype) -> torch.Tensor:
    """numpy arrays, lists or tensors → a tensor of dtype (CPU unless already elsewhere)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)


def validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fitting indices, validation indices): a seeded random `fraction` of n held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
    n_val = max(1, round(fraction * n))
    if n - n_val < 2:
        raise ValueError(f"n_samples = {n} leaves fewer than 2 inputs for fitting after the "
                         f"validation split; pass more inputs or X_val/y_val.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


def _numpy(values: Any) -> Any:
    """Tensors (any device) → numpy, so scikit-learn's validation can read them."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values


def _device(values: Any) -> torch.device:
    return values.device if isinstance(values, torch.Tensor) else torch.device("cpu")


class FeatureMachineBase(BaseEstimator):
    """Shared fit/predict; see RFMClassifier, ConvRFMClassifier and their regressors.

    Inputs go through scikit-learn's `validate_data` (sparse, complex, empty, NaN/inf and
    non-numeric input refused with scikit-learn's messages; `n_features_in_` set and checked).
    Tensors keep their device: they are validated on a CPU copy and moved back."""

    _task: Task = "classification"
    #: Whether X is images (P, c, H, W) (ConvRFM) rather than vectors (P, D) (RFM).
    _images: bool = False

    def _kernel(self) -> PatchKernel:
        raise NotImplementedError

    def _dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}.")
        return _DTYPES[self.dtype]

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = self._task == "regression"
        return tags

    def _check_images(self, shape: tuple[int, ...]) -> None:
        if self._images and len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} takes images X of shape (P, c, H, W), got an array of "
                f"shape {tuple(shape)}; reshape vectors to images (e.g. X.reshape(-1, 1, H, W)) or "
                "use RFMClassifier / RFMRegressor for vectors."
            )

    def _predict_inputs(self, X: Any) -> torch.Tensor:
        """X at predict time: fitted estimator checked, X validated against the fit (scikit-learn)
        and converted to a tensor of `dtype` on X's device."""
        device = _device(X)
        check_is_fitted(self, "coefficients_")
        raw = _numpy(X)
        if self._images and hasattr(raw, "shape") and len(raw.shape) != 4:
            # Before validate_data: its feature-count check would otherwise compare D with c.
            self._check_images(tuple(raw.shape))
        with one_line_value_errors():
            x = validate_data(self, raw, reset=False, allow_nd=self._images, dtype=np.float64)
        self._check_images(x.shape)
        return torch.as_tensor(x, dtype=self._dtype(), device=device)

    def _targets(self, y: Any) -> torch.Tensor:
        """One-hot targets over classes_ (classification) or float targets (n, O)."""
        if self._task == "classification":
            labels = np.asarray(_numpy(y))
            unknown = ~np.isin(labels, self.classes_)
            if unknown.any():
                raise ValueError(
                    f"validation labels {np.unique(labels[unknown])} are not training classes."
                )
            index = torch.as_tensor(np.searchsorted(self.classes_, labels))
            return torch.nn.functional.one_hot(index, len(self.classes_)).to(self._dtype())
        targets = as_tensor(y, self._dtype())
        return targets[:, None] if targets.ndim == 1 else targets

    def fit(self, X, y, X_val=None, y_val=None):
        """Select ridge, bandwidth and round on (X_val, y_val) — or on a `validation_fraction`
        split of X — after `n_rounds` metric updates, then fit α (on X and the validation
        inputs when `refit`)."""
        dtype = self._dtype()
        device = _device(X)
        classification = self._task == "classification"
        with one_line_value_errors():
            x_array, y_array = validate_data(self, _numpy(X), _numpy(y), allow_nd=self._images,
                                             dtype=np.float64, multi_output=not classification,
                                             y_numeric=not classification)
        if classification:
            check_classification_targets(y_array)
            self.classes_ = np.unique(y_array)
            if len(self.classes_) < 2:
                raise ValueError("classification needs at least two classes in y; got one class "
                                 f"({self.classes_[0]!r}).")
            self._vector_target = False
        else:
            self._vector_target = y_array.ndim == 1
        self._check_images(x_array.shape)
        x = torch.as_tensor(x_array, dtype=dtype, device=device)
        targets = self._targets(y_array).to(device)
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither.")
        if X_val is None:
            fit_index, val_index = validation_split(x.shape[0], self.validation_fraction, self.seed)
            x_fit, y_fit, x_val, t_val = (
                x[fit_index],
                targets[fit_index],
                x[val_index],
                targets[val_index],
            )
        else:
            x_fit, y_fit = x, targets
            with one_line_value_errors():
                x_val = torch.as_tensor(validate_data(self, _numpy(X_val), reset=False,
                                                      allow_nd=self._images, dtype=np.float64),
                                        dtype=dtype, device=device)
            self._check_images(tuple(x_val.shape))
            t_val = self._targets(y_val).to(device)
            if t_val.shape[0] != x_val.shape[0]:
                raise ValueError(f"X_val has {x_val.shape[0]} inputs but y_val has "
                                 f"{t_val.shape[0]} targets.")
        kernel = self._kernel()
        history = run_feature_recursion(
            kernel,
            x_fit,
            y_fit,
            x_val,
            t_val,
            self._task,
            ridges=self.ridge,
            bandwidths=self.bandwidth,
            n_rounds=self.n_rounds,
            agop_samples=self.agop_samples,
            metric_power=self.metric_power,
            metric_normalisation=self.metric_normalisation,
            metric_threshold=self.metric_threshold,
            seed=self.seed,
        )
        self._finish(kernel, history, x_fit, y_fit, x_val, t_val)
        return self

    def _finish(self, kernel: PatchKernel, history: RecursionResult,
                x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor,
                t_val: torch.Tensor) -> None:
        best = history.best
        self.history_ = history
        self.metric_ = history.metrics[history.best_round]
        self.best_round_ = history.best_round
        self.ridge_ = best.ridge
        self.bandwidth_ = best.bandwidth
        self.validation_score_ = best.validation_score
        centers = torch.cat([x_fit, x_val]) if self.refit else x_fit
        targets = torch.cat([y_fit, t_val]) if self.refit else y_fit
        gram, cross = history.fit_gram, history.validation_cross
        if gram is None or cross is None:
            raise ValueError("the recursion result carries no Gram of its selected round.")
        if self.refit:
            # K(all, all) from the selected round's K(fit, fit) and K(val, fit): only the
            # validation block is new.
            corner = kernel.gram(x_val, None, self.metric_, self.bandwidth_)
            gram = torch.cat([torch.cat([gram, cross.T], 1), torch.cat([cross, corner], 1)])
        self.centers_ = centers
        self.coefficients_ = solve_kernel_ridge(gram, targets, self.ridge_)
        self.kernel_ = kernel

    def _outputs(self, X: Any) -> torch.Tensor:
        x = self._predict_inputs(X)
        return (
            self.kernel_.gram(x, self.centers_, self.metric_, self.bandwidth_) @ self.coefficients_
        )


class FeatureClassifierBase(ClassifierMixin, FeatureMachineBase):
    """Classification: one-hot kernel ridge, prediction by arg-max."""

    _task: Task = "classification"

    def decision_function(self, X: Any) -> np.ndarray:
        """Kernel-ridge outputs (n, n_classes); for two classes, scikit-learn's (n,) convention:
        f_1 − f_0, positive where classes_[1] is predicted (so scoring="roc_auc" works)."""
        outputs = self._outputs(X).cpu().numpy()
        if outputs.shape[1] == 2:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict(self, X: Any) -> np.ndarray:
        winners = self._outputs(X).argmax(1).cpu().numpy()
        return self.classes_[winners]


class FeatureRegressorBase(RegressorMixin, FeatureMachineBase):
    """Regression: kernel ridge outputs, (n,) for a 1-D target."""

    _task: Task = "regression"

    def predict(self, X: Any) -> np.ndarray:
        outputs = self._outputs(X).cpu().numpy()
        return outputs[:, 0] if self._vector_target else outputs
