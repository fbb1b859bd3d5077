"""ConvRFM: kernel machines on image patches with a learned patch metric M (docs/math/features.md
"Kernels with a learned patch metric", "ConvRFM iteration").

kernel ∈ {laplace, gaussian, nngp, ntk, deep-nngp}, layout ∈ {aligned, all-pairs}; nngp/ntk in the
aligned layout are the one-layer ReLU CNN-GP / CNTK with flatten readout (conv_kernels.py). With
n_rounds = 0 the metric stays M = I and the estimator is the fixed convolutional kernel.
kernel = "deep-nngp" is the depth-L ReLU CNN NNGP of krenorm.kernels.deep (docs/math/features.md
§6): the first layer has this estimator's patch geometry and the metric M, `deep_layers` gives
layers 2..L (a mask with stride = mask, or a PatchGeometry), `readout` is flatten or gap.
"""

from __future__ import annotations

from collections.abc import Sequence

from krenorm.features.conv_kernels import Layout, MahalanobisPatchKernel
from krenorm.features.deep_conv_kernels import DeepNNGPPatchKernel, PatchKernel, deep_geometries
from krenorm.features.estimators import FeatureClassifierBase, FeatureRegressorBase
from krenorm.kernels.patches import PaddingMode, PatchGeometry


class _ConvRFMParameters:
    _images = True  # X is images (P, c, H, W); 2-D input is refused with a message saying so

    def __init__(
        self,
        kernel: str = "ntk",
        layout: Layout = "aligned",
        mask: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        padding_mode: PaddingMode = "zeros",
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

    def geometry(self) -> PatchGeometry:
        """The patch geometry (mask, stride, padding, padding_mode) as a PatchGeometry."""
        return PatchGeometry(self.mask, self.stride, self.padding, self.padding_mode)

    def _kernel(self) -> PatchKernel:
        if self.kernel == "deep-nngp":
            return DeepNNGPPatchKernel(deep_geometries(self.geometry(), self.deep_layers),
                                       self.readout)
        if tuple(self.deep_layers):
            raise ValueError("deep_layers needs kernel='deep-nngp'.")
        return MahalanobisPatchKernel(self.kernel, self.layout, self.geometry())


class ConvRFMClassifier(_ConvRFMParameters, FeatureClassifierBase):
    """ConvRFM classifier on images X (P, c, H, W).

    Fitted attributes: metric_ (selected patch metric M, d×d with d = c·q_h·q_w), history_
    (RecursionResult: every round's M, grid scores and spectrum), best_round_, ridge_,
    bandwidth_, validation_score_, coefficients_, classes_.
    """


class ConvRFMRegressor(_ConvRFMParameters, FeatureRegressorBase):
    """ConvRFM regressor on images X (P, c, H, W); attributes as ConvRFMClassifier."""
