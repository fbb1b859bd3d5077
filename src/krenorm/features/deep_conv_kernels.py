"""The depth-L convolutional NNGP as a ConvRFM kernel with a learned patch metric M
(docs/math/features.md §6 "Multi-layer convolutional NNGP kernels").

The Gram between images is krenorm.kernels.deep's ReLU CNN NNGP (weight sharing, per-layer
geometry, flatten or GAP readout, all priors 1, the readout prior left to the ridge); M enters
only in the first layer, whose pre-activation covariances become
    C¹_ij(x, z) = p_i(x)ᵀ M p_j(z) / m_1        (m_1 the patch dimension),
so M = I is the plain NNGP and depth 1 with the flatten readout is the one-layer ConvRFM `nngp`
kernel. The patch-AGOP differentiates the predictor f_o(x) = Σ_j α_jo K(x, x_j) with respect to
each first-layer patch p_r(x) as an independent argument (autograd through the recursion):
    G = (1/|S|) Σ_{x∈S} Σ_{r,o} ∇_{p_r} f_o ∇_{p_r} f_oᵀ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.kernels.deep import READOUTS, deep_local_gram_from_features, first_layer_features
from krenorm.kernels.patches import PatchGeometry

__all__ = ["DeepNNGPPatchKernel", "PatchKernel", "deep_geometries"]


def deep_geometries(first: PatchGeometry, upper: Sequence[int | tuple[int, int] | PatchGeometry]
                    ) -> tuple[PatchGeometry, ...]:
    """(first, layer 2, …, layer L): an int or pair in `upper` is a mask with stride = mask
    (non-overlapping pooling-like layers, the cheap case of the recursion), no padding."""
    layers = [first]
    for index, item in enumerate(upper):
        if isinstance(item, PatchGeometry):
            layers.append(item)
        elif isinstance(item, int | tuple | list):
            layers.append(PatchGeometry(item, item, 0))
        else:
            raise ValueError(f"deep_layers[{index}] must be a mask (int or pair) or a "
                             f"PatchGeometry, got {item!r}.")
    return tuple(layers)


@dataclass(frozen=True)
class DeepNNGPPatchKernel:
    """Depth-L ReLU CNN NNGP between images with a first-layer patch metric M (module docstring).
    Same interface as MahalanobisPatchKernel (gram, agop, dimension) so the ConvRFM recursion
    and estimators use it unchanged."""

    geometries: tuple[PatchGeometry, ...]
    readout: str = "flatten"
    rows_per_block: int = 256
    name: str = "deep-nngp"

    def __post_init__(self) -> None:
        if not self.geometries:
            raise ValueError("geometries must hold at least the first layer's PatchGeometry.")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}.")
        for geometry in self.geometries[1:]:
            if geometry.padding_mode != "zeros":
                raise ValueError("layers after the first pad with zeros only.")

    @property
    def uses_bandwidth(self) -> bool:
        return False

    @property
    def depth(self) -> int:
        return len(self.geometries)

    def dimension(self, x: torch.Tensor) -> int:
        return self.geometries[0].patch_dimension(x.shape[1])

    def _factor(self, metric: torch.Tensor, dimension: int) -> torch.Tensor | None:
        # The same R (M = R Rᵀ, PSD-checked, rank-truncated) as the one-layer kernel, with the
        # PSD tolerance of the metric's own dtype (a float32 metric is checked as float32).
        one_layer = MahalanobisPatchKernel("nngp", "aligned", self.geometries[0])
        factor = one_layer.metric_factor(metric, dimension)
        return None if factor is None else factor.to(torch.float64)

    def _features(self, x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        return first_layer_features(x, self.geometries[0], 1.0, factor)

    def _gram(self, left: torch.Tensor, right: torch.Tensor | None, shape: Sequence[int]
              ) -> torch.Tensor:
        return deep_local_gram_from_features(left, right, self.geometries, shape, "relu",
                                             (1.0,) * self.depth, readout=self.readout)

    def gram(self, x: torch.Tensor, z: torch.Tensor | None, metric: torch.Tensor,
             bandwidth: float = 1.0) -> torch.Tensor:
        """K(x_i, z_j) (P, P'), z = None for x with itself; in the dtype of x."""
        if z is not None and tuple(z.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError("x and z must have the same channels and size.")
        factor = self._factor(metric, self.dimension(x))
        shape = tuple(x.shape[1:])
        left = self._features(x, factor)
        if z is None:
            return self._gram(left, None, shape).to(x.dtype)
        right = self._features(z, factor)
        blocks = [self._gram(left[:, start:start + self.rows_per_block], right, shape)
                  for start in range(0, x.shape[0], self.rows_per_block)]
        return torch.cat(blocks).to(x.dtype)

    def predictor_gradients(self, x: torch.Tensor, centers: torch.Tensor,
                            coefficients: torch.Tensor, metric: torch.Tensor,
                            bandwidth: float = 1.0) -> torch.Tensor:
        """∇_{p_r} f_o(x) (P, O, Np, d) for f = Σ_j α_j K(·, center_j), by autograd with each
        first-layer patch an independent argument (rows of f depend only on their own image)."""
        dimension = self.dimension(x)
        if coefficients.ndim != 2 or coefficients.shape[0] != centers.shape[0]:
            raise ValueError(f"coefficients must be (n_centers={centers.shape[0]}, O), got "
                             f"{tuple(coefficients.shape)}.")
        factor = self._factor(metric, dimension)
        shape = tuple(x.shape[1:])
        right = self._features(centers, factor).detach()
        patches = first_layer_features(x, self.geometries[0], 1.0, None).detach()
        patches.requires_grad_(True)
        left = patches if factor is None else patches @ factor
        output = self._gram(left, right, shape) @ coefficients.to(torch.float64)
        gradients = []
        for o in range(output.shape[1]):
            (grad,) = torch.autograd.grad(output[:, o].sum(), patches,
                                          retain_graph=o + 1 < output.shape[1])
            gradients.append(grad)
        # d/d p = (1/√m_1) d/d (p/√m_1): the features were the scaled patches.
        stacked = torch.stack(gradients) / dimension**0.5  # (O, Np, P, d)
        return stacked.permute(2, 0, 1, 3).to(x.dtype)

    def agop(self, x: torch.Tensor, centers: torch.Tensor, coefficients: torch.Tensor,
             metric: torch.Tensor, bandwidth: float = 1.0, batch_size: int | None = None
             ) -> torch.Tensor:
        """Patch-AGOP (d, d) over the inputs x, in batches."""
        dimension = self.dimension(x)
        batch_size = batch_size or self.rows_per_block
        total = torch.zeros(dimension, dimension, dtype=torch.float64)
        for batch in x.split(batch_size):
            flat = self.predictor_gradients(batch, centers, coefficients, metric).reshape(
                -1, dimension).to(torch.float64)
            total += flat.T @ flat
        return (0.5 * (total + total.T) / x.shape[0]).to(x.dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "readout": self.readout,
                "geometries": [g.to_dict() for g in self.geometries]}


#: Either kernel the ConvRFM recursion accepts.
PatchKernel = MahalanobisPatchKernel | DeepNNGPPatchKernel
