"""Deep ConvRFM (docs/math/features.md §6).

Level ℓ runs ConvRFM on its inputs h_ℓ and keeps the selected patch metric M*_ℓ. Unless it is
the last level, k filters are sampled with covariance M*_ℓ (w = M*^{1/2} z, z ~ N(0, I_d)) and

    h_{ℓ+1} = σ(conv(h_ℓ, W) / √d)        (σ ReLU by default; any krenorm activation name)

feeds level ℓ+1, the convolution in level ℓ's patch geometry. The last level's ConvRFM is the
predictor. `mask`, `stride` and `padding` are one value for every level, or a list with one
value per level (a list means per level; a tuple (h, w) is one 2-D mask), so a level can have its
own patch shape, e.g. mask=[3, (1, 26)] on 28×28 images (a row mask on level 2's 26×26 maps).
Every level keeps its metric, its eigen-spectrum and its validation score; the validation split
is drawn once and shared by all levels, and the test set never enters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from krenorm._validation import check_images
from krenorm.features.convrfm import ConvRFMClassifier
from krenorm.features.estimators import as_tensor, validation_split
from krenorm.features.metric import psd_eigh, psd_matrix_power
from krenorm.kernels.activations import get_activation
from krenorm.kernels.patches import PatchGeometry


@dataclass(frozen=True)
class LevelRecord:
    """One level of a Deep ConvRFM: input shape, selected metric and its spectrum, scores."""

    level: int
    input_shape: tuple[int, int, int]
    metric: torch.Tensor
    metric_eigenvalues: tuple[float, ...]
    best_round: int
    ridge: float
    bandwidth: float
    validation_score: float

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "input_shape": list(self.input_shape),
            "metric_eigenvalues": list(self.metric_eigenvalues),
            "best_round": self.best_round,
            "ridge": self.ridge,
            "bandwidth": self.bandwidth,
            "validation_score": self.validation_score,
        }


def sample_filters(
    metric: torch.Tensor, n_filters: int, patch_shape: tuple[int, int, int], seed: int
) -> torch.Tensor:
    """k filters w ~ N(0, M) reshaped to Conv2d weights (k, c, q_h, q_w): w = M^{1/2} z."""
    if n_filters < 1:
        raise ValueError(f"n_filters must be >= 1, got {n_filters}.")
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(n_filters, metric.shape[0], generator=generator, dtype=metric.dtype)
    return (normal @ psd_matrix_power(metric, 0.5)).reshape(n_filters, *patch_shape)


class DeepConvRFMClassifier(ClassifierMixin, BaseEstimator):
    """Deep ConvRFM classifier on images X (P, c, H, W) (module docstring).

    n_levels ConvRFM levels with n_filters sampled filters between them; the remaining
    hyper-parameters are those of ConvRFMClassifier, shared by all levels except mask, stride and
    padding, which may be lists with one entry per level (module docstring). Fitted attributes:
    levels_ (LevelRecord per level), filters_ (sampled filters per transition), final_ (the last
    level's ConvRFMClassifier), classes_. With kernel="deep-nngp", every level's kernel is the
    multi-layer CNN NNGP whose layers 2..L are `deep_layers` (the same for every level; readout
    `readout`) on top of that level's patch geometry (docs/math/features.md §6).
    """

    def __init__(
        self,
        n_levels: int = 2,
        n_filters: int = 32,
        nonlinearity: str = "relu",
        kernel: str = "ntk",
        layout: str = "aligned",
        mask: int | tuple[int, int] | list = 3,
        stride: int | tuple[int, int] | list = 1,
        padding: int | tuple[int, int] | list = 0,
        padding_mode: str = "zeros",
        bandwidth: float | Sequence[float] = 10.0,
        ridge: float | Sequence[float] = 1e-3,
        n_rounds: int = 1,
        agop_samples: int = 2000,
        metric_power: float = 1.0,
        metric_normalisation: str = "trace",
        metric_threshold: float = 0.0,
        validation_fraction: float = 0.2,
        refit: bool = True,
        seed: int = 0,
        dtype: str = "float64",
        deep_layers: Sequence[int | tuple[int, int] | PatchGeometry] = (),
        readout: str = "flatten",
    ) -> None:
        self.n_levels = n_levels
        self.n_filters = n_filters
        self.nonlinearity = nonlinearity
        self.kernel = kernel
        self.layout = layout
        self.mask = mask
        self.stride = stride
        self.padding = padding
        self.padding_mode = padding_mode
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
        self.deep_layers = deep_layers
        self.readout = readout

    def _per_level(self, name: str, level: int) -> Any:
        """The value of a geometry parameter at `level`: a list holds one per level."""
        value = getattr(self, name)
        if isinstance(value, list):
            if len(value) != self.n_levels:
                raise ValueError(
                    f"{name} lists {len(value)} values but n_levels is {self.n_levels}; give one "
                    "per level, or a single value (a tuple (h, w) is one 2-D value)."
                )
            return tuple(value[level]) if isinstance(value[level], list) else value[level]
        return value

    def _level_estimator(self, level: int) -> ConvRFMClassifier:
        parameters = {
            name: value
            for name, value in self.get_params().items()
            if name not in ("n_levels", "n_filters", "nonlinearity")
        }
        last = level == self.n_levels - 1
        parameters.update(seed=self.seed + level, refit=self.refit and last)
        for name in ("mask", "stride", "padding"):
            parameters[name] = self._per_level(name, level)
        return ConvRFMClassifier(**parameters)

    def _next_level(self, x: torch.Tensor, filters: torch.Tensor, level: int) -> torch.Tensor:
        """h ↦ σ(conv(h, W)/√d) in level `level`'s ConvRFM patch geometry."""
        dimension = filters[0].numel()
        geometry = self._level_estimator(level).geometry()
        return get_activation(self.nonlinearity)(
            geometry.convolve(x, filters.to(x)) / dimension**0.5
        )

    def fit(self, X, y, X_val=None, y_val=None):
        """Fit the levels in turn on (X, y), selecting each level's ridge, bandwidth and round on
        (X_val, y_val) or on a `validation_fraction` split of X drawn once for all levels."""
        if self.n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {self.n_levels}.")
        get_activation(self.nonlinearity)
        dtype = torch.float64 if self.dtype == "float64" else torch.float32
        x = check_images("X", as_tensor(X, dtype))
        labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if X_val is None:
            fit_index, val_index = validation_split(x.shape[0], self.validation_fraction, self.seed)
            x_fit, y_fit = x[fit_index], labels[fit_index.numpy()]
            x_val, y_val = x[val_index], labels[val_index.numpy()]
        else:
            x_fit, y_fit, x_val = x, labels, check_images("X_val", as_tensor(X_val, dtype))
        self.levels_, self.filters_ = [], []
        for level in range(self.n_levels):
            estimator = self._level_estimator(level).fit(x_fit, y_fit, x_val, y_val)
            self.levels_.append(
                LevelRecord(
                    level=level,
                    input_shape=(x_fit.shape[1], x_fit.shape[2], x_fit.shape[3]),
                    metric=estimator.metric_,
                    metric_eigenvalues=tuple(psd_eigh(estimator.metric_)[0].flip(0).tolist()),
                    best_round=estimator.best_round_,
                    ridge=estimator.ridge_,
                    bandwidth=estimator.bandwidth_,
                    validation_score=estimator.validation_score_,
                )
            )
            if level == self.n_levels - 1:
                self.final_ = estimator
                break
            patch_shape = estimator.geometry().patch_shape(x_fit.shape[1])
            filters = sample_filters(
                estimator.metric_, self.n_filters, patch_shape, self.seed + level
            )
            self.filters_.append(filters)
            x_fit = self._next_level(x_fit, filters, level)
            x_val = self._next_level(x_val, filters, level)
        self.classes_ = self.final_.classes_
        return self

    def transform(self, X: Any) -> torch.Tensor:
        """Inputs of the last level: X passed through every sampled filter bank and σ."""
        if not hasattr(self, "final_"):
            raise ValueError("this estimator is not fitted yet; call fit first.")
        x = as_tensor(X, self.final_.centers_.dtype)
        for level, filters in enumerate(self.filters_):
            x = self._next_level(x, filters, level)
        return x

    def decision_function(self, X: Any) -> np.ndarray:
        return self.final_.decision_function(self.transform(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.final_.predict(self.transform(X))
