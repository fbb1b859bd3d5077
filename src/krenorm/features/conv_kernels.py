"""Kernels on patches with a learned Mahalanobis metric M, their Grams, the gradients of a kernel
predictor with respect to each patch, and its patch-AGOP (docs/math/features.md "Kernels with a
learned patch metric", "ConvRFM iteration").

With patches u_r = p_r(x), v_s = p_s(z) ∈ R^d and κ one of patch_kernels.KERNEL_NAMES,
    aligned     K(x, z) = (1/Np) Σ_r κ(u_rᵀMu_r, u_rᵀMv_r, v_rᵀMv_r)
    all-pairs   K(x, z) = (1/Np²) Σ_{r,s} κ(u_rᵀMu_r, u_rᵀMv_s, v_sᵀMv_s)
(averages rather than sums, so the ridge means the same for every image size; the factor is
absorbed by the ridge). `aligned` with κ = nngp / ntk is the infinite-width one-layer ReLU CNN-GP /
CNTK with flatten readout whose first layer compares patches through pᵀMp'. Vectors (P, D) are
the special case of one patch per input (RFM).

For f_o(x) = Σ_j α_jo K(x, x_j), with u_r an independent argument,
    ∇_{u_r} f_o = (1/Np) Σ_j α_jo [2 ∂aκ_{jr} M u_r + ∂bκ_{jr} M v_{jr}]      (aligned)
and the same with the sum over s and 1/Np² for all-pairs; for one patch and the Laplace kernel this
is docs/math/features.md's (1/L) Σ_j α_jo k_M(x, x_j)/‖x − x_j‖_M · M(x_j − x). The patch-AGOP is
G = (1/|S|) Σ_{x∈S} Σ_r Σ_o ∇_{u_r} f_o ∇_{u_r} f_oᵀ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from krenorm._validation import check_finite, check_vectors
from krenorm.features.metric import psd_eigh
from krenorm.features.patch_kernels import (
    BANDWIDTH_KERNELS,
    check_kernel_name,
    kernel_partials,
    kernel_value,
)
from krenorm.kernels.patches import PaddingMode, PatchGeometry
from krenorm.memory import check_allocation

# PatchGeometry lives in krenorm.kernels.patches (one geometry for theory, networks and features);
# it stays importable from here.
__all__ = ["PATCH_KERNEL_CHUNK_BYTES", "Layout", "MahalanobisPatchKernel", "PaddingMode",
           "PatchGeometry"]

Layout = Literal["aligned", "all-pairs"]

#: Budget for the temporaries of one block of a patch kernel. Larger than the kernels package's
#: cache-sized default: here a budget that holds all of an input set's patch features lets them
#: be computed once instead of per block (ConvRFM fit at n = 1000, float32: 89 s CPU with
#: 32 MiB, 45.8 s with 256 MiB; benchmarks/RESULTS.md "agop").
PATCH_KERNEL_CHUNK_BYTES = 256 * 2**20
#: Elementwise temporaries per entry of a κ evaluation (inputs, partials, masks).
_TEMPORARIES = 10
#: Eigenvalues of M below this fraction of the largest are dropped from its factor R.
_RANK_TOLERANCE = 1e-12


def _mirror_upper_triangle(matrix: torch.Tensor, strip: int) -> None:
    """Copy the upper triangle of a square matrix onto its lower one in place, strip by strip
    (temporaries of strip·n entries, not n²: triu(K) + triu(K, 1)ᵀ held three n×n matrices,
    9.6 GB at n = 20000 in float64)."""
    n = matrix.shape[0]
    strip = max(1, strip)
    for start in range(0, n, strip):
        stop = min(start + strip, n)
        matrix[start:stop, :start] = matrix[:start, start:stop].T
        block = matrix[start:stop, start:stop]
        block.copy_(torch.triu(block) + torch.triu(block, diagonal=1).T)


@dataclass(frozen=True)
class MahalanobisPatchKernel:
    """κ on patches compared through a metric M, in the `aligned` or `all-pairs` layout.

    geometry=None: inputs are vectors (P, D), one patch each (RFM). bandwidth is L for Laplace /
    Gaussian and ignored by the homogeneous ReLU kernels (nngp, ntk).
    """

    name: str = "laplace"
    layout: Layout = "aligned"
    geometry: PatchGeometry | None = None
    chunk_bytes: int = PATCH_KERNEL_CHUNK_BYTES

    def __post_init__(self) -> None:
        check_kernel_name(self.name)
        if self.layout not in ("aligned", "all-pairs"):
            raise ValueError(f"layout must be 'aligned' or 'all-pairs', got {self.layout!r}.")

    @property
    def uses_bandwidth(self) -> bool:
        return self.name in BANDWIDTH_KERNELS

    def to_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(P, Np, d) patches; vectors become a single patch."""
        if self.geometry is None:
            return check_vectors("x", x)[:, None, :]
        return self.geometry.patches(x)

    def dimension(self, x: torch.Tensor) -> int:
        """Patch dimension d of inputs shaped like x."""
        if self.geometry is None:
            return x.shape[-1]
        return self.geometry.patch_dimension(x.shape[1])

    def metric_factor(self, metric: torch.Tensor, dimension: int) -> torch.Tensor | None:
        """R (d, r) with M = R Rᵀ (eigenvectors scaled by √λ, zero eigenvalues dropped), or None
        for M = I. Kernels then only need the features Rᵀ u_r: a = ‖Rᵀu‖², b = (Rᵀu)·(Rᵀv)."""
        if metric.shape != (dimension, dimension):
            raise ValueError(
                f"metric must be ({dimension}, {dimension}), got {tuple(metric.shape)}."
            )
        check_finite("metric", metric)
        identity = torch.eye(dimension, dtype=metric.dtype, device=metric.device)
        if torch.equal(metric, identity):
            return None
        eigenvalues, eigenvectors = psd_eigh(metric)
        kept = eigenvalues > _RANK_TOLERANCE * eigenvalues.max()
        return eigenvectors[:, kept] * eigenvalues[kept].sqrt()

    def features(self, x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        """(Np, P, r) position-major features Rᵀ p_r(x): the patches themselves for M = I,
        otherwise a Conv2d with filters Rᵀ (never materialising the patches). Position-major,
        so that the per-position products below are batched matrix products."""
        if factor is None:
            return self.to_patches(x).transpose(0, 1)  # a strided view: bmm reads it in place
        factor = factor.to(x)
        if self.geometry is None:
            return (x @ factor)[None]
        filters = factor.T.reshape(factor.shape[1], *self.geometry.patch_shape(x.shape[1]))
        maps = self.geometry.convolve(x, filters)
        return maps.flatten(2).permute(2, 0, 1).contiguous()

    def n_positions(self, x: torch.Tensor) -> int:
        """Np for inputs shaped like x."""
        if self.geometry is None:
            return 1
        return self.geometry.n_patches((x.shape[2], x.shape[3]))

    def _partners(self, n_positions: int, n_inputs: int) -> int:
        """How many inputs can be compared with `n_inputs` others at once while the κ
        temporaries (8-byte entries) stay within chunk_bytes; at least one."""
        entries = n_positions * (n_positions if self.layout == "all-pairs" else 1)
        return max(1, self.chunk_bytes // (8 * _TEMPORARIES * entries * n_inputs))

    def _invariants(
        self,
        left: torch.Tensor,
        left_norms: torch.Tensor,
        right: torch.Tensor,
        right_norms: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, c) for position-major features left (Np, A, r), right (Np, B, r) with their
        squared norms (Np, A), (Np, B), broadcast to (Np, A, B) aligned or (Np, A, Np, B)
        all-pairs (positions r of x, then s of z)."""
        if self.layout == "aligned":
            b = torch.bmm(left, right.transpose(1, 2))
            return left_norms[:, :, None], b, right_norms[:, None, :]
        n_positions, n_left, n_features = left.shape
        b = (left.reshape(-1, n_features) @ right.reshape(-1, n_features).T).reshape(
            n_positions, n_left, n_positions, -1
        )
        return left_norms[:, :, None, None], b, right_norms[None, None, :, :]

    def _mean_over_positions(self, values: torch.Tensor) -> torch.Tensor:
        return values.mean(0) if self.layout == "aligned" else values.mean((0, 2))

    def _feature_source(self, z: torch.Tensor, factor: torch.Tensor | None
                        ) -> Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]:
        """Callable (start, stop) → (features (Np, B, r), squared norms (Np, B)) of
        z[start:stop]; computed once up front when all of z's features fit in chunk_bytes,
        else per call."""

        def compute(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.features(inputs, factor)
            return features, (features * features).sum(-1)

        n_features = factor.shape[1] if factor is not None else self.dimension(z)
        if z.shape[0] * self.n_positions(z) * n_features * z.element_size() <= self.chunk_bytes:
            features, norms = compute(z)
            return lambda start, stop: (features[:, start:stop], norms[:, start:stop])
        return lambda start, stop: compute(z[start:stop])

    def gram(
        self,
        x: torch.Tensor,
        z: torch.Tensor | None,
        metric: torch.Tensor,
        bandwidth: float = 1.0,
    ) -> torch.Tensor:
        """K(x_i, z_j) as a (P, P') matrix (z=None: x against itself, computed once per block
        pair and mirrored). Features are computed chunk by chunk, so memory stays near
        chunk_bytes beyond the inputs and the result."""
        symmetric = z is None
        z = x if z is None else z
        dimension = self.dimension(x)
        if self.dimension(z) != dimension:
            raise ValueError("x and z must have the same channels (patch dimension).")
        factor = self.metric_factor(metric.to(x), dimension)
        n_features = dimension if factor is None else factor.shape[1]
        n_positions = self.n_positions(x)
        # Square-ish blocks of pairs within the κ budget: thin blocks turn the per-position
        # products into matrix-vector products.
        pairs = self._partners(n_positions, 1)
        by_memory = self.chunk_bytes // (8 * n_positions * n_features)
        rows = max(1, min(x.shape[0], by_memory, math.isqrt(pairs)))
        cols = max(1, pairs // rows)
        right_source = self._feature_source(z, factor)
        left_source = right_source if symmetric else self._feature_source(x, factor)
        check_allocation("the kernel matrix", x.shape[0] * z.shape[0], x.dtype, None)
        out = x.new_empty(x.shape[0], z.shape[0])
        for row in range(0, x.shape[0], rows):
            left, left_norms = left_source(row, row + rows)
            first_col = row if symmetric else 0
            for col in range(first_col, z.shape[0], cols):
                right, right_norms = right_source(col, col + cols)
                a, b, c = self._invariants(left, left_norms, right, right_norms)
                values = kernel_value(self.name, a, b, c, bandwidth, dimension)
                block = self._mean_over_positions(values)
                out[row : row + left.shape[1], col : col + right.shape[1]] = block
        if symmetric:
            _mirror_upper_triangle(out, rows)
        return out

    def _position_gradients(
        self,
        x: torch.Tensor,
        centers: torch.Tensor,
        coefficients: torch.Tensor,
        metric: torch.Tensor,
        bandwidth: float,
    ) -> torch.Tensor:
        """∇_{u_r} f_o(x) position-major, (Np, P, O, d). With M = R Rᵀ, M u = R (Rᵀu): the sums
        run over features and R is applied once at the end. Centers are processed in chunks; the
        gradient is linear in α, so partial sums add up."""
        dimension = self.dimension(x)
        if coefficients.ndim != 2 or coefficients.shape[0] != centers.shape[0]:
            raise ValueError(
                f"coefficients must be (n_centers={centers.shape[0]}, O), got "
                f"{tuple(coefficients.shape)}."
            )
        factor = self.metric_factor(metric.to(x), dimension)
        coefficients = coefficients.to(x)
        left = self.features(x, factor)
        left_norms = (left * left).sum(-1)
        n_positions, n_inputs, n_features = left.shape
        n_outputs = coefficients.shape[1]
        scale_sum = left.new_zeros(n_positions, n_inputs, n_outputs)
        cross_sum = left.new_zeros(n_positions, n_inputs * n_outputs, n_features)
        step = self._partners(n_positions, n_inputs * n_outputs)
        right_source = self._feature_source(centers, factor)
        for start in range(0, centers.shape[0], step):
            right, right_norms = right_source(start, start + step)
            alpha = coefficients[start : start + step]
            a, b, c = self._invariants(left, left_norms, right, right_norms)
            d_a, d_b = kernel_partials(self.name, a, b, c, bandwidth, dimension)
            if self.layout == "aligned":
                scale_sum += d_a @ alpha
                weights = (d_b[:, :, None, :] * alpha.T).flatten(1, 2)  # (Np, X·O, J)
                cross_sum += torch.bmm(weights, right)
            else:
                scale_sum += d_a.sum(2) @ alpha
                weights = torch.einsum("xasj,jo->xaosj", d_b, alpha).flatten(3, 4)
                cross_sum += (weights @ right.reshape(-1, n_features)).flatten(1, 2)
        positions = n_positions if self.layout == "aligned" else n_positions**2
        cross_sum = cross_sum.unflatten(1, (n_inputs, n_outputs))
        gradients = (2 * scale_sum[..., None] * left[:, :, None, :] + cross_sum) / positions
        return gradients if factor is None else gradients @ factor.T

    def predictor_gradients(
        self,
        x: torch.Tensor,
        centers: torch.Tensor,
        coefficients: torch.Tensor,
        metric: torch.Tensor,
        bandwidth: float = 1.0,
    ) -> torch.Tensor:
        """∇_{u_r} f_o(x) for f(x) = Σ_j α_j K(x, center_j) with coefficients α (n_centers, O):
        shape (P, O, Np, d) (module docstring)."""
        return self._position_gradients(x, centers, coefficients, metric, bandwidth).permute(
            1, 2, 0, 3
        )

    def agop(
        self,
        x: torch.Tensor,
        centers: torch.Tensor,
        coefficients: torch.Tensor,
        metric: torch.Tensor,
        bandwidth: float = 1.0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Patch-AGOP G = (1/|S|) Σ_{x∈S} Σ_{r,o} ∇_{u_r} f_o ∇_{u_r} f_oᵀ (d, d) of the
        predictor f = Σ_j α_j K(·, center_j) over the inputs x (the set S), in batches."""
        dimension = self.dimension(x)
        n_positions = self.n_positions(x)
        n_outputs = coefficients.shape[1] if coefficients.ndim == 2 else 1
        if batch_size is None:
            # Gradients (O, Np, d) per input with their running sums, and the κ temporaries of
            # one partner per output, must fit the budget.
            per_input = 8 * n_outputs * n_positions * dimension * 3
            batch_size = min(self.chunk_bytes // per_input, self._partners(n_positions, n_outputs))
            batch_size = max(1, min(x.shape[0], batch_size))
        total = x.new_zeros(dimension, dimension)
        for batch in x.split(batch_size):
            gradients = self._position_gradients(batch, centers, coefficients, metric, bandwidth)
            flat = gradients.reshape(-1, dimension)
            total += flat.T @ flat
        return 0.5 * (total + total.T) / x.shape[0]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layout": self.layout,
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
        }
