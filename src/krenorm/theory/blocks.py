"""How the CNN/LCN theory holds its local kernel blocks: stored or streamed, float64 or float32
(docs/scale.md §1–3).

K_R(Q̄) = (1/(λ1 Np)) Σ_ij Q̄_ij K_ij needs n_pairs·P² numbers (n_pairs = Np(Np+1)/2 for a CNN,
Np for an LCN). Three engines give the same contractions (`GramBasis.combine` / `project`):

    stored float64   every block kept (fastest per pass; n_pairs·P²·8 bytes)
    stored float32   every block kept in float32, each chunk upcast before use: float64
                     accumulation and float64 solves, half the memory, storage round-off ~1e-8
    streamed         no block kept: every contraction recomputes them tile by tile
                     (memory O(tile + P²), cost ≈ one κ evaluation of all blocks per pass)

`BlockSettings(mode='auto')` stores float64 blocks when they fit the memory budget and streams
otherwise, keeping as many blocks as the budget allows and recomputing only the rest;
`plan_blocks` says which and why, and the fit reports it in its diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Self

import torch

from krenorm._validation import check_positive
from krenorm.kernels.chunked_blocks import PairContractions
from krenorm.memory import default_memory_limit
from krenorm.theory.action import GramBasis

BlockMode = Literal["auto", "stored", "streamed", "sharded"]
BlockDtype = Literal["float64", "float32"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}

#: P×P float64 matrices the solver and posterior hold besides the blocks (see `plan_blocks`).
_WORKING_MATRICES = 40


@dataclass(frozen=True)
class BlockSettings:
    """How local blocks are held (docs/scale.md §1).

    mode: 'auto' (stored when n_pairs·P²·bytes fits the memory budget — `memory_limit` or
    $KRENORM_MEMORY_LIMIT — else streamed), 'stored' (refused with a MemoryError when over the
    budget) or 'streamed'.
    dtype: storage dtype of stored blocks, 'float64' (default) or 'float32' (half the memory;
    float64 accumulation; error reported in docs/scale.md §3). Streamed blocks are always
    computed in float64.
    chunk_bytes: budget of one chunk of blocks with its κ temporaries while stored blocks are
    built (None: the fit's chunk_bytes); recomputed blocks go in fixed tiles of about 8 MiB
    (docs/scale.md §1.1).
    scheduler: a Dask scheduler address or distributed.Client; given, the blocks are stored
    sharded on its workers (mode 'sharded', implied by a scheduler under 'auto';
    docs/scale.md §5). n_shards: shards (default: one per worker)."""

    mode: BlockMode = "auto"
    dtype: BlockDtype = "float64"
    chunk_bytes: int | None = None
    scheduler: Any = None
    n_shards: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "stored", "streamed", "sharded"):
            raise ValueError(f"BlockSettings.mode must be 'auto', 'stored', 'streamed' or "
                             f"'sharded', got {self.mode!r}.")
        if self.mode == "sharded" and self.scheduler is None:
            raise ValueError("BlockSettings(mode='sharded') needs scheduler= (a Dask scheduler "
                             "address or distributed.Client).")
        if self.scheduler is not None and self.mode in ("stored", "streamed"):
            raise ValueError(f"a scheduler shards the blocks; it does not go with "
                             f"mode={self.mode!r} (use 'auto' or 'sharded').")
        if self.n_shards is not None and (isinstance(self.n_shards, bool) or not isinstance(
                self.n_shards, int) or self.n_shards < 1):
            raise ValueError(f"BlockSettings.n_shards must be a positive int or None, got "
                             f"{self.n_shards!r}.")
        if self.dtype not in _DTYPES:
            raise ValueError(f"BlockSettings.dtype must be 'float64' or 'float32', got "
                             f"{self.dtype!r}.")
        if self.chunk_bytes is not None:
            if isinstance(self.chunk_bytes, bool) or not isinstance(self.chunk_bytes, int):
                raise ValueError(f"BlockSettings.chunk_bytes must be a positive int or None, "
                                 f"got {self.chunk_bytes!r}.")
            check_positive("chunk_bytes", self.chunk_bytes)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; a Client scheduler is written as its scheduler address."""
        scheduler = self.scheduler
        if scheduler is not None and not isinstance(scheduler, str):
            scheduler = str(getattr(scheduler, "scheduler", None) and
                            scheduler.scheduler.address)
        return {"mode": self.mode, "dtype": self.dtype, "chunk_bytes": self.chunk_bytes,
                "scheduler": scheduler, "n_shards": self.n_shards}


@dataclass(frozen=True)
class BlockPlan:
    """The engine chosen for one kernel model, with the numbers behind the choice."""

    mode: Literal["stored", "streamed", "sharded"]
    dtype: BlockDtype
    n_pairs: int
    n_samples: int
    stored_bytes: int
    budget_bytes: int
    reason: str
    #: Streamed under 'auto': bytes of float64 blocks kept in memory (the rest recomputed).
    keep_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_blocks(settings: BlockSettings | None, n_pairs: int, n_samples: int,
                memory_limit: int | None = None) -> BlockPlan:
    """Stored or streamed blocks for n_pairs blocks of P×P (see `BlockSettings.mode`)."""
    settings = BlockSettings() if settings is None else settings
    element = torch.empty((), dtype=settings.torch_dtype).element_size()
    needed = n_pairs * n_samples**2 * element
    budget = default_memory_limit() if memory_limit is None else int(memory_limit)
    sizes = (f"{n_pairs} blocks of {n_samples}×{n_samples} in {settings.dtype} need "
             f"{needed / 2**30:.2f} GiB, budget {budget / 2**30:.2f} GiB")
    if settings.scheduler is not None:
        return BlockPlan("sharded", settings.dtype, n_pairs, n_samples, needed, budget,
                         f"sharded on the Dask workers of the scheduler ({sizes} in all)")
    if settings.mode == "streamed":
        return BlockPlan("streamed", "float64", n_pairs, n_samples, needed, budget,
                         f"streamed as asked ({sizes})")
    if settings.mode == "stored":
        return BlockPlan("stored", settings.dtype, n_pairs, n_samples, needed, budget,
                         f"stored as asked ({sizes})")
    if needed <= budget:
        return BlockPlan("stored", settings.dtype, n_pairs, n_samples, needed, budget,
                         f"stored: {sizes}")
    # Keep what fits next to the solver's working matrices (A, its factor, A⁻¹, K_R, a batch
    # of 8 Hessian directions and their images: ≈ _WORKING_MATRICES P×P float64 matrices).
    keep = max(0, budget - _WORKING_MATRICES * n_samples**2 * 8)
    kept_blocks = min(n_pairs, keep // (n_samples**2 * 8))
    return BlockPlan("streamed", "float64", n_pairs, n_samples, needed, budget,
                     f"streamed because stored blocks would not fit: {sizes}; "
                     f"{kept_blocks} of {n_pairs} blocks kept in memory, the rest recomputed "
                     "on every pass", keep_bytes=int(kept_blocks * n_samples**2 * 8))


class _LastCombination:
    """The last single (unbatched) combination K_R(W) of a streamed basis, kept so that asking
    for it again — the posterior's K_R(Q̄*) right after the solve's last evaluation at Q̄* — costs
    a P×P copy instead of a pass (docs/scale.md §4)."""

    def __init__(self) -> None:
        self.weights: torch.Tensor | None = None
        self.kernel: torch.Tensor | None = None

    def get(self, weights: torch.Tensor) -> torch.Tensor | None:
        if (self.weights is not None and self.kernel is not None
                and self.weights.shape == weights.shape
                and bool(torch.equal(self.weights, weights.detach().to(self.weights)))):
            return self.kernel.clone()  # callers may factor it in place
        return None

    def put(self, weights: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        self.weights, self.kernel = weights.detach().clone(), kernel.clone()
        return kernel


def _cached_combine(cache: _LastCombination, streamed: bool, weights: torch.Tensor,
                    combine: Callable[[torch.Tensor], torch.Tensor], batch_dims: int
                    ) -> torch.Tensor:
    """combine(weights), through the cache for unbatched weights of a streamed basis."""
    if not streamed or weights.ndim != batch_dims:
        return combine(weights)
    cached = cache.get(weights)
    return cached if cached is not None else cache.put(weights, combine(weights))


class _ChunkedBasis(GramBasis):
    """What the CNN and LCN chunked bases share: the blocks, the scale 1/(λ1 Np), the pass
    counter and the cache of the last combination; subclasses name the pair set they need."""

    pair_set: str
    name: str

    def __init__(self, blocks: PairContractions, lambda1: float):
        if blocks.pair_set != self.pair_set:
            raise ValueError(f"{self.name} needs pair_set={self.pair_set!r}, got "
                             f"{blocks.pair_set!r}.")
        self.blocks = blocks
        self.scale = 1.0 / (check_positive("lambda1", lambda1) * blocks.n_patches)
        self._last = _LastCombination()

    @property
    def n_samples(self) -> int:
        return self.blocks.n_samples

    def with_lambda1(self, lambda1: float) -> Self:
        # A fresh instance: the cached last combination holds K_R at the old scale.
        return type(self)(self.blocks, lambda1)

    @property
    def passes(self) -> int:
        """Passes over the blocks (counted where the blocks are walked)."""
        return self.blocks.passes

    @passes.setter
    def passes(self, value: int) -> None:
        self.blocks.passes = value

    def remember(self, coefficients: torch.Tensor, kernel: torch.Tensor) -> None:
        if self.blocks.streamed:
            self._last.put(coefficients, kernel)


class ChunkedLocalBasis(_ChunkedBasis):
    """CNN: K'_ij = K_ij/(λ1 Np) over all pairs, from `ChunkedGramBlocks` (stored in any dtype or
    streamed) or `ShardedGramBlocks`; the same contractions as `LocalBlocksBasis`."""

    pair_set = "all"
    name = "ChunkedLocalBasis"

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        return _cached_combine(self._last, self.blocks.streamed, coefficients,
                               lambda w: self.blocks.contract(w) * self.scale, 2)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.blocks.frobenius(matrix) * self.scale


class ChunkedDiagonalBasis(_ChunkedBasis):
    """LCN: K'_i = K_ii/(λ1 Np), one block per patch, from `ChunkedGramBlocks` with
    pair_set='diagonal'; the same contractions as `DiagonalBlocksBasis`."""

    pair_set = "diagonal"
    name = "ChunkedDiagonalBasis"

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        return _cached_combine(self._last, self.blocks.streamed, coefficients,
                               lambda w: self.blocks.combine(w) * self.scale, 1)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.blocks.project(matrix) * self.scale
