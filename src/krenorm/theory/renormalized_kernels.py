"""Renormalized kernels per architecture: the effective action on the training set and the
test-side kernels k_R(x0) and K_R(x0, x0) for a given Q̄ (THEORY.md §3–4).

FC        K_R = (Q̄/λ1) K                       (scalar; D×D Q̄ ⊗ K with D outputs)
CNN-GAP   K_R = Q̄ (1/(λ1 Np²)) Σ_ij K_ij        (scalar)
CNN       K_R = (1/(λ1 Np)) Σ_ij Q̄_ij K_ij      (Np×Np SPD)
LCN       K_R = (1/(λ1 Np)) Σ_i q̄_i K_ii        (diagonal)
Only cross blocks with the training set and test diagonals are computed, in test batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.activations import get_activation
from krenorm.kernels.grams import (
    compute_local_blocks,
    fc_kernel,
    fc_kernel_diagonal,
    local_diagonal_blocks,
)
from krenorm.kernels.local_kernel import LocalKernel
from krenorm.kernels.memory import DEFAULT_CHUNK_BYTES
from krenorm.theory.action import (
    DiagonalBlocksBasis,
    EffectiveAction,
    GramLinearAction,
    LocalBlocksBasis,
    SpectralAction,
)
from krenorm.theory.order_parameters import OrderParameterStructure


class RenormalizedKernels(ABC):
    """Training kernels of one architecture, and K_R on test points for any Q̄."""

    def __init__(self, spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                 lambda1: float, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 memory_limit: int | None = None):
        self.spec = spec
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.chunk_bytes = chunk_bytes
        self.memory_limit = memory_limit
        self.n_patches = spec.n_patches(tuple(x_train.shape[1:])) if x_train.ndim == 4 else 1

    @property
    def local_options(self) -> dict:
        """Activation and λ0 of the local kernels (the geometry is `spec.geometry`)."""
        return {"activation": self.spec.activation, "lambda0": self.lambda0}

    @abstractmethod
    def action(self, y: torch.Tensor, width: float, temperature: float) -> EffectiveAction:
        """S(Q̄) on the training set."""

    @abstractmethod
    def train_kernel(self, q_bar: torch.Tensor) -> torch.Tensor:
        """K_R(Q̄) on the training set (P×P; single output)."""

    @abstractmethod
    def test_kernels(self, q_bar: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """k_R(x0) (B×P) and K_R(x0, x0) (B) for one test batch."""

    def test_batch_size(self) -> int:
        return 1024

    def off_diagonal_share(self, q_bar: torch.Tensor) -> float | None:
        """‖K_R − K_R^diag‖_F / ‖K_R‖_F, the share of K_R carried by cross-patch blocks."""
        return None


class FullyConnectedKernels(RenormalizedKernels):
    """FC: K_R = (Q̄/λ1) K with scalar Q̄, or (Q̄ ⊗ K)/λ1 with a D×D Q̄ for D outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = self.base_kernel(self.x_train)

    def base_kernel(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return fc_kernel(x, z, self.spec.activation, self.lambda0)

    def base_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        return fc_kernel_diagonal(x, self.spec.activation, self.lambda0)

    def action(self, y: torch.Tensor, width: float, temperature: float) -> SpectralAction:
        return SpectralAction(self.base, y, width, temperature, self.lambda1)

    def train_kernel(self, q_bar: torch.Tensor) -> torch.Tensor:
        if q_bar.numel() != 1:
            raise ValueError("train_kernel is defined for one output; use the spectral action.")
        return q_bar.reshape(()) * self.base / self.lambda1

    def test_kernels(self, q_bar, x_test):
        if q_bar.numel() != 1:
            raise ValueError("test_kernels is defined for one output.")
        scale = q_bar.reshape(()) / self.lambda1
        return scale * self.base_kernel(x_test, self.x_train), scale * self.base_diagonal(x_test)


class PooledKernels(FullyConnectedKernels):
    """CNN with global average pooling: a scalar Q̄ on (1/Np²) Σ_ij K_ij (global, like FC)."""

    def __init__(self, *args, **kwargs):
        RenormalizedKernels.__init__(self, *args, **kwargs)
        self.local = LocalKernel(self.x_train, self.spec.geometry, **self.local_options,
                                 chunk_bytes=self.chunk_bytes)
        self.ones = torch.ones(self.n_patches, self.n_patches, dtype=torch.float64,
                               device=self.x_train.device)
        self.base = self.base_kernel(self.x_train)

    def base_kernel(self, x, z=None):
        if z is None:
            blocks = compute_local_blocks(x, self.spec.geometry, **self.local_options,
                                          memory_limit=self.memory_limit,
                                          chunk_bytes=self.chunk_bytes)
            return blocks.contract(self.ones) / blocks.n_patches**2
        if z is not self.x_train:
            raise ValueError("pooled cross kernels are taken against the training set.")
        return self.local.contract_cross(self.ones, x) / self.n_patches**2

    def base_diagonal(self, x):
        return self.local.contract_test_diagonals(self.ones, x) / self.n_patches**2

    def test_batch_size(self) -> int:
        return self.local.batch_size()


class ConvolutionalKernels(RenormalizedKernels):
    """CNN (local renormalization): an Np×Np SPD Q̄ mixes all pairs of patch kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.blocks = compute_local_blocks(self.x_train, self.spec.geometry, **self.local_options,
                                           memory_limit=self.memory_limit,
                                           chunk_bytes=self.chunk_bytes)
        self.basis = LocalBlocksBasis(self.blocks, self.lambda1)
        self.local = LocalKernel(self.x_train, self.spec.geometry, **self.local_options,
                                 chunk_bytes=self.chunk_bytes)

    def action(self, y, width, temperature):
        structure = OrderParameterStructure("matrix", self.blocks.n_patches)
        return GramLinearAction(self.basis, y, width, temperature, structure)

    def train_kernel(self, q_bar):
        return self.basis.combine(q_bar)

    def test_kernels(self, q_bar, x_test):
        scale = self.basis.scale
        return (self.local.contract_cross(q_bar, x_test) * scale,
                self.local.contract_test_diagonals(q_bar, x_test) * scale)

    def test_batch_size(self) -> int:
        return self.local.batch_size()

    def off_diagonal_share(self, q_bar):
        full = self.train_kernel(q_bar)
        diagonal_only = self.train_kernel(torch.diag(torch.diagonal(q_bar)))
        return float(torch.linalg.norm(full - diagonal_only) / torch.linalg.norm(full))


class LocallyConnectedKernels(RenormalizedKernels):
    """LCN: no weight sharing, no cross blocks; one q̄_i per patch (THEORY.md §3)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.diagonal_blocks = local_diagonal_blocks(self.x_train, self.spec.geometry,
                                                     **self.local_options,
                                                     memory_limit=self.memory_limit)
        self.basis = DiagonalBlocksBasis(self.diagonal_blocks, self.lambda1)
        self.local = LocalKernel(self.x_train, self.spec.geometry, **self.local_options,
                                 chunk_bytes=self.chunk_bytes)

    def action(self, y, width, temperature):
        structure = OrderParameterStructure("diagonal", self.diagonal_blocks.shape[0])
        return GramLinearAction(self.basis, y, width, temperature, structure)

    def train_kernel(self, q_bar):
        return self.basis.combine(q_bar)

    def test_kernels(self, q_bar, x_test):
        scale = self.basis.scale
        return (self.local.contract_cross_diagonal(q_bar, x_test) * scale,
                self.local.contract_test_diagonals(q_bar, x_test) * scale)

    def test_batch_size(self) -> int:
        return self.local.batch_size(all_pairs=False)


_KERNELS = {"fc": FullyConnectedKernels, "cnn-gap": PooledKernels,
            "cnn": ConvolutionalKernels, "lcn": LocallyConnectedKernels}


def renormalized_kernels(spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                         lambda1: float, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         memory_limit: int | None = None) -> RenormalizedKernels:
    """The kernel adapter for an architecture. Refuses non-odd activations for CNN/LCN/GAP, whose
    mean term couples positions and is not derived here (THEORY.md §3)."""
    if spec.is_convolutional and not get_activation(spec.activation).odd:
        raise NotImplementedError(
            f"the {spec.kind} effective theory with the non-odd activation {spec.activation!r} "
            "needs the mean term that couples patch positions (THEORY.md §3), which is not "
            "derived here; use an odd activation (erf, identity, tanh) or the FC architecture."
        )
    if spec.is_convolutional and x_train.ndim != 4:
        raise ValueError(f"the {spec.kind} architecture needs images of shape (P, c, H, W).")
    return _KERNELS[spec.kind](spec, x_train, lambda0, lambda1, chunk_bytes, memory_limit)
