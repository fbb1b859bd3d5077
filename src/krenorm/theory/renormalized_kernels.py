"""Renormalized kernels per architecture: the effective action on the training set and the
test-side kernels k_R(x0) and K_R(x0, x0) for a given order parameter (docs/math/theory.md
§3–4).

FC        K_R = (Q̄/λ1) K                       (scalar; D×D Q̄ ⊗ K with D outputs)
FC, non-odd σ   K_R = (Q̄/λ1)(K − M) + M/(λ1(1 + Q))   (the pair (Q̄, Q); `mean_term`)
CNN/LCN/GAP, non-odd σ   the (Q̄, Q) pair with per-patch means (`local_mean_term`, §3.6)
CNN-GAP   K_R = Q̄ (1/(λ1 Np²)) Σ_ij K_ij        (scalar)
CNN       K_R = (1/(λ1 Np)) Σ_ij Q̄_ij K_ij      (Np×Np SPD)
LCN       K_R = (1/(λ1 Np)) Σ_i q̄_i K_ii        (diagonal)
Only cross blocks with the training set and test diagonals are computed, in test batches.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Self

import torch

from krenorm._validation import check_positive
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.activations import get_activation
from krenorm.kernels.chunked_blocks import ChunkedGramBlocks, PairContractions, PairSet
from krenorm.kernels.grams import (
    compute_local_blocks,
    fc_kernel,
    fc_kernel_diagonal,
    local_diagonal_blocks,
)
from krenorm.kernels.local_kernel import LocalKernel
from krenorm.memory import DEFAULT_CHUNK_BYTES
from krenorm.theory.action import (
    DiagonalBlocksBasis,
    GramBasis,
    GramLinearAction,
    LocalBlocksBasis,
    SpectralAction,
    SpectralBasis,
)
from krenorm.theory.blocks import (
    BlockPlan,
    BlockSettings,
    ChunkedDiagonalBasis,
    ChunkedLocalBasis,
    plan_blocks,
)
from krenorm.theory.kernel_model import RenormalizedKernels
from krenorm.theory.local_mean_term import (
    ConvolutionalMeanTermKernels,
    LocallyConnectedMeanTermKernels,
    PooledMeanTermKernels,
)
from krenorm.theory.mean_term import MeanTermKernels
from krenorm.theory.order_parameters import DiagonalStructure, MatrixStructure
from krenorm.theory.posterior import GaussianPosterior, SpectralPosterior
from krenorm.theory.sharded import ShardedGramBlocks

__all__ = [
    "ConvolutionalKernels",
    "FullyConnectedKernels",
    "LocallyConnectedKernels",
    "MeanTermKernels",
    "PooledKernels",
    "RenormalizedKernels",
    "renormalized_kernels",
]


class ArchitectureKernels(RenormalizedKernels):
    """Kernels of an architecture spec on a training set (odd activations)."""

    def __init__(self, spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                 lambda1: float, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 memory_limit: int | None = None, blocks: BlockSettings | None = None):
        self.spec = spec
        self.block_settings = BlockSettings() if blocks is None else blocks
        #: How the local blocks are held (None for models without local blocks).
        self.block_plan: BlockPlan | None = None
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.chunk_bytes = chunk_bytes
        self.memory_limit = memory_limit
        self.n_patches = spec.n_patches(tuple(x_train.shape[1:])) if x_train.ndim == 4 else 1

    def with_lambda1(self, lambda1: float) -> Self:
        """The same model at another readout precision λ1, sharing every λ1-free kernel.

        λ1 enters K_R only as the overall factor 1/λ1 (docs/math/theory.md §3: K_R =
        (1/(λ1 Np)) Σ_ij Q̄_ij K_ij, or (Q̄/λ1) K for FC), while the blocks K_ij, the FC kernel K
        and the test-side local kernels depend on (data, geometry, activation, λ0) alone. So a
        scan over λ1 builds them once — at P = 2000 with 16 patches that is the 136 stored pair
        blocks (4.4 GB), whose construction costs far more than a pass over them — and each λ1
        gets a shallow copy with fresh λ1-dependent parts (the basis scale, the cached
        eigendecomposition of K/λ1). The copies share storage: do not mutate the blocks.
        """
        changed = copy.copy(self)
        changed.lambda1 = check_positive("lambda1", lambda1)
        changed._rescale()
        return changed

    def _rescale(self) -> None:
        """Rebuild the parts that hold 1/λ1 after `with_lambda1` changed `lambda1`."""

    @property
    def local_options(self) -> dict[str, Any]:
        """Activation and λ0 of the local kernels (the geometry is `spec.geometry`)."""
        return {"activation": self.spec.activation, "lambda0": self.lambda0}

    def _local_kernel(self) -> LocalKernel:
        return LocalKernel(self.x_train, self.spec.geometry, **self.local_options,
                           chunk_bytes=self.chunk_bytes)

    def _chunked_basis(self, pair_set: PairSet) -> GramBasis | None:
        """The basis of stored-float32 or streamed blocks as `block_plan` says, or None for
        stored float64 blocks (the caller builds those the classic way: one contiguous stack,
        one matrix product per pass). Records the plan (docs/scale.md §1)."""
        n_pairs = self.n_patches * (self.n_patches + 1) // 2 if pair_set == "all" else (
            self.n_patches)
        plan = plan_blocks(self.block_settings, n_pairs, self.x_train.shape[0],
                           self.memory_limit)
        self.block_plan = plan
        if plan.mode == "stored" and plan.dtype == "float64":
            return None
        settings = self.block_settings
        blocks: PairContractions
        if plan.mode == "sharded":
            blocks = ShardedGramBlocks(
                settings.scheduler, self.x_train, self.spec.geometry,
                activation=self.spec.activation, lambda0=self.lambda0, pair_set=pair_set,
                storage=settings.torch_dtype, chunk_bytes=settings.chunk_bytes or self.chunk_bytes,
                n_shards=settings.n_shards)
        else:
            blocks = ChunkedGramBlocks(
                self.x_train, self.spec.geometry, **self.local_options, pair_set=pair_set,
                storage=None if plan.mode == "streamed" else settings.torch_dtype,
                chunk_bytes=settings.chunk_bytes or self.chunk_bytes,
                memory_limit=self.memory_limit, keep_bytes=plan.keep_bytes)
        if pair_set == "all":
            return ChunkedLocalBasis(blocks, self.lambda1)
        return ChunkedDiagonalBasis(blocks, self.lambda1)


class SpectralKernels(ArchitectureKernels):
    """K_R = (Q̄ ⊗ K)/λ1 with one fixed kernel K: the spectral action and posterior, sharing one
    eigendecomposition of K/λ1 per target set."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._prepare()
        self.base = self.base_train_kernel()
        self._basis: tuple[torch.Tensor, SpectralBasis] | None = None

    def _prepare(self) -> None:
        """Set up what the base kernels need (before `base_train_kernel` runs)."""

    def _rescale(self) -> None:
        self._basis = None  # the eigendecomposition is of K/λ1

    @abstractmethod
    def base_train_kernel(self) -> torch.Tensor:
        """K on the training set (P×P)."""

    @abstractmethod
    def base_test_kernels(self, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K(x0, x^ν)/λ1 (B×P), K(x0, x0)/λ1 (B)) for one test batch."""

    def spectral_basis(self, y: torch.Tensor) -> SpectralBasis:
        """The eigendecomposition of K/λ1 with targets y (computed once per y)."""
        if self._basis is None or self._basis[0] is not y:
            self._basis = (y, SpectralBasis.from_kernel(self.base, y, self.lambda1))
        return self._basis[1]

    def action(self, y: torch.Tensor, width: float, temperature: float) -> SpectralAction:
        return SpectralAction.from_basis(self.spectral_basis(y), width, temperature)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        if point.numel() != 1:
            raise ValueError("train_kernel is defined for one output; use the spectral action.")
        return point.reshape(()).to(self.base) * self.base / self.lambda1

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if point.numel() != 1:
            raise ValueError("test_kernels is defined for one output.")
        cross, diagonal = self.base_test_kernels(x_test)
        scale = point.reshape(()).to(cross)
        return scale * cross, scale * diagonal

    def posterior(self, point: torch.Tensor, y: torch.Tensor,
                  temperature: float) -> GaussianPosterior:
        basis = self.spectral_basis(y)
        q_matrix = point.reshape(basis.n_outputs, basis.n_outputs)  # a scalar Q̄ as 1×1
        return SpectralPosterior(basis, q_matrix, temperature, self.base_test_kernels,
                                 self.test_batch_size())


class FullyConnectedKernels(SpectralKernels):
    """FC: K_R = (Q̄/λ1) K with scalar Q̄, or (Q̄ ⊗ K)/λ1 with a D×D Q̄ for D outputs."""

    def base_train_kernel(self) -> torch.Tensor:
        return fc_kernel(self.x_train, None, self.spec.activation, self.lambda0,
                         memory_limit=self.memory_limit)

    def base_test_kernels(self, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activation, lambda0 = self.spec.activation, self.lambda0
        return (fc_kernel(x_test, self.x_train, activation, lambda0,
                          memory_limit=self.memory_limit) / self.lambda1,
                fc_kernel_diagonal(x_test, activation, lambda0) / self.lambda1)


class PooledKernels(SpectralKernels):
    """CNN with global average pooling: a scalar Q̄ on (1/Np²) Σ_ij K_ij (global, like FC)."""

    def _prepare(self) -> None:
        self.local = self._local_kernel()
        self.ones = torch.ones(self.n_patches, self.n_patches, dtype=torch.float64,
                               device=self.x_train.device)

    def base_train_kernel(self) -> torch.Tensor:
        blocks = compute_local_blocks(self.x_train, self.spec.geometry, **self.local_options,
                                      memory_limit=self.memory_limit,
                                      chunk_bytes=self.chunk_bytes)
        return blocks.contract(self.ones) / blocks.n_patches**2

    def base_test_kernels(self, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self.n_patches**2
        return (self.local.contract_cross(self.ones, x_test) / pairs / self.lambda1,
                self.local.contract_test_diagonals(self.ones, x_test) / pairs / self.lambda1)

    def test_batch_size(self) -> int:
        return self.local.batch_size()


class LocalBasisKernels(ArchitectureKernels):
    """CNN and LCN: K_R(Q̄) = Σ_ab Q̄_ab K'_ab over a `GramBasis` of patch blocks
    (docs/math/theory.md §3); subclasses choose which pairs the basis holds."""

    basis: GramBasis

    def _rescale(self) -> None:
        self.basis = self.basis.with_lambda1(self.lambda1)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return self.basis.combine(point)


class ConvolutionalKernels(LocalBasisKernels):
    """CNN (local renormalization): an Np×Np SPD Q̄ mixes all pairs of patch kernels."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        chunked = self._chunked_basis("all")
        if chunked is None:
            self.blocks = compute_local_blocks(self.x_train, self.spec.geometry,
                                               **self.local_options,
                                               memory_limit=self.memory_limit,
                                               chunk_bytes=self.chunk_bytes)
            self.basis = LocalBlocksBasis(self.blocks, self.lambda1)
        else:
            self.basis = chunked
        self.local = self._local_kernel()

    def action(self, y: torch.Tensor, width: float, temperature: float) -> GramLinearAction:
        structure = MatrixStructure(self.n_patches)
        return GramLinearAction(self.basis, y, width, temperature, structure)

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        scale = 1.0 / (self.lambda1 * self.n_patches)
        return (self.local.contract_cross(point, x_test) * scale,
                self.local.contract_test_diagonals(point, x_test) * scale)

    def test_batch_size(self) -> int:
        return self.local.batch_size()

    def off_diagonal_share(self, point: torch.Tensor) -> float | None:
        blocks = getattr(self.basis, "blocks", None)
        if isinstance(blocks, ChunkedGramBlocks) and blocks.streamed:
            # K_R(Q̄) is the solve's last combination (cached); K_R(diag Q̄) needs only the Np
            # diagonal blocks — no pass over all pairs (docs/scale.md §4).
            full = self.train_kernel(point)
            diagonal_only = blocks.combine_diagonal(torch.diagonal(point)) * (
                1.0 / (self.lambda1 * self.n_patches))
        else:
            # Both kernels from one (batched) pass over the blocks.
            full, diagonal_only = self.train_kernel(
                torch.stack([point, torch.diag(torch.diagonal(point))]))
        return float(torch.linalg.norm(full - diagonal_only) / torch.linalg.norm(full))


class LocallyConnectedKernels(LocalBasisKernels):
    """LCN: no weight sharing, no cross blocks; one q̄_i per patch (docs/math/theory.md §3)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        chunked = self._chunked_basis("diagonal")
        if chunked is None:
            self.diagonal_blocks = local_diagonal_blocks(self.x_train, self.spec.geometry,
                                                         **self.local_options,
                                                         memory_limit=self.memory_limit)
            self.basis = DiagonalBlocksBasis(self.diagonal_blocks, self.lambda1)
        else:
            self.basis = chunked
        self.local = self._local_kernel()

    def action(self, y: torch.Tensor, width: float, temperature: float) -> GramLinearAction:
        structure = DiagonalStructure(self.n_patches)
        return GramLinearAction(self.basis, y, width, temperature, structure)

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        scale = 1.0 / (self.lambda1 * self.n_patches)
        return (self.local.contract_cross_diagonal(point, x_test) * scale,
                self.local.contract_test_diagonals(point, x_test) * scale)

    def test_batch_size(self) -> int:
        return self.local.batch_size(all_pairs=False)


KernelModelFactory = Callable[..., RenormalizedKernels]

#: The kernel model of each (architecture kind, odd activation?). A new effective theory (the
#: (Q̄, Q) pair of a CNN with ReLU, say) is one more entry here.
_MODELS: dict[tuple[str, bool], KernelModelFactory] = {
    ("fc", True): FullyConnectedKernels,
    ("fc", False): MeanTermKernels.from_spec,
    ("cnn-gap", True): PooledKernels,
    ("cnn", True): ConvolutionalKernels,
    ("lcn", True): LocallyConnectedKernels,
    # Non-odd activations: the (Q̄, Q) pair with the per-patch mean term (§3.6).
    ("cnn-gap", False): PooledMeanTermKernels,
    ("cnn", False): ConvolutionalMeanTermKernels,
    ("lcn", False): LocallyConnectedMeanTermKernels,
}


def renormalized_kernels(spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                         lambda1: float, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         memory_limit: int | None = None, *,
                         blocks: BlockSettings | None = None) -> RenormalizedKernels:
    """The kernel model of an architecture: for a non-odd activation the (Q̄, Q) mean-term
    model (FC: docs/math/theory.md §3; CNN, LCN, CNN-GAP: §3.6)."""
    key = (spec.kind, get_activation(spec.activation).odd)
    if key not in _MODELS:
        raise ValueError(
            f"no effective theory for the architecture kind {spec.kind!r}; choose one of "
            f"{sorted({kind for kind, _ in _MODELS})}.")
    if spec.is_convolutional and x_train.ndim != 4:
        raise ValueError(f"the {spec.kind} architecture needs images of shape (P, c, H, W).")
    # Block settings go only to the models that hold local blocks (other factories need not
    # know the keyword); `blocks` selects stored/streamed/float32 (docs/scale.md §1).
    options: dict[str, Any] = {"chunk_bytes": chunk_bytes, "memory_limit": memory_limit}
    if blocks is not None and spec.kind in ("cnn", "lcn"):
        if not key[1]:
            raise ValueError(
                f"blocks= (stored/streamed/sharded local blocks) applies to odd activations; the "
                f"{spec.kind} (Q̄, Q) model for {spec.activation!r} stores its blocks itself "
                "(docs/scale.md §1): leave blocks=None.")
        options["blocks"] = blocks
    return _MODELS[key](spec, x_train, lambda0, lambda1, **options)
