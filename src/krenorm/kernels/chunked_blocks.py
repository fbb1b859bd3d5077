"""Local Gram blocks contracted chunk by chunk: stored in any dtype or recomputed on every pass
(docs/scale.md §1, docs/math/theory.md §3).

The CNN/LCN theory needs only two contractions of the blocks K_ij (P×P, one per unordered pair
i ≤ j, or one per patch for an LCN):

    combine:   Σ_k c_k K_k  (+ the transposes of the off-diagonal pairs)     (..., P, P)
    project:   F_k = ⟨K_k, B⟩_F                                             (..., n_pairs)

`ChunkedGramBlocks` evaluates both by walking over chunks of blocks. Each chunk comes either from
storage (float64, or float32 upcast to float64 before it is used: float64 accumulation) or is
recomputed from the patches (streamed: no block is ever kept, memory O(chunk + P²)). The chunk
holds as many blocks as fit `chunk_bytes` with their κ temporaries. One walk is one *pass*;
`passes` counts them (a batched call — many weights or many matrices — is still one pass).

A recomputed block is never formed whole: it is walked in tiles of a few rows (about
`_TILE_ENTRIES` entries), each computed (dot products, then κ in place), used and dropped while it
sits in the CPU's cache, together with the rows of the accumulator or of B it meets; κ's constant
factor (2/π for erf) is folded into the coefficients. What is left per entry is the dot product
and the link function (the arcsin for erf), docs/scale.md §1.

Everything runs on the device of the patches, so the same code serves CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from krenorm.kernels.activations import Activation, get_activation
from krenorm.kernels.grams import scaled_patches
from krenorm.kernels.patches import IntPair, PatchGeometry
from krenorm.memory import DEFAULT_CHUNK_BYTES, check_allocation, chunk_length

PairSet = Literal["all", "diagonal"]

#: Temporaries of one κ evaluation, in units of its output (same budget as compute_local_blocks).
_KAPPA_TEMPORARIES = 8

#: Entries of one streamed tile (a few rows of a few blocks, 8 MiB of float64), and the rows of a
#: tile, at most `_TILE_ROWS` and at least `_MIN_TILE_ROWS`: the dot products of a tile are one
#: matrix product per block, (rows × M)(M × P), which runs far below the matrix-multiply speed
#: for few rows, while whole P×P blocks at P ≳ 1000 leave the cache on every elementwise step.
#: Tuned on the project's CPU (benchmarks/RESULTS.md, "scale (wave 4)").
_TILE_ENTRIES = 2**20
_TILE_ROWS = 512
_MIN_TILE_ROWS = 128


@dataclass(frozen=True)
class _Chunk:
    """Blocks offset … offset + count − 1 of the pair list. For the 'all' pair set they share the
    row patch `row` and run over columns start … stop − 1; for 'diagonal' they are K_ii for
    i = start … stop − 1 (row is None)."""

    offset: int
    row: int | None
    start: int
    stop: int

    @property
    def count(self) -> int:
        return self.stop - self.start


def _recomputed_groups(chunks: list[_Chunk]) -> list[_Chunk]:
    """The chunks a pass recomputes, regrouped for the tile loop: consecutive chunks of one row
    (or consecutive diagonal blocks) joined, and the diagonal block K_ii of a row split off, so
    that every group feeds one accumulator (diagonal or upper part) and walks all its blocks
    against the same accumulator rows."""
    merged: list[_Chunk] = []
    for chunk in chunks:
        last = merged[-1] if merged else None
        if (last is not None and last.row == chunk.row and last.stop == chunk.start
                and last.offset + last.count == chunk.offset):
            merged[-1] = _Chunk(last.offset, last.row, last.start, chunk.stop)
        else:
            merged.append(chunk)
    groups: list[_Chunk] = []
    for chunk in merged:
        if chunk.row is not None and chunk.start == chunk.row and chunk.count > 1:
            groups.append(_Chunk(chunk.offset, chunk.row, chunk.start, chunk.start + 1))
            groups.append(_Chunk(chunk.offset + 1, chunk.row, chunk.start + 1, chunk.stop))
        else:
            groups.append(chunk)
    return groups


def _chunks(n_patches: int, pair_set: PairSet, per_chunk: int) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    offset = 0
    if pair_set == "diagonal":
        for start in range(0, n_patches, per_chunk):
            stop = min(start + per_chunk, n_patches)
            chunks.append(_Chunk(offset, None, start, stop))
            offset += stop - start
        return chunks
    for i in range(n_patches):
        for start in range(i, n_patches, per_chunk):
            stop = min(start + per_chunk, n_patches)
            chunks.append(_Chunk(offset, i, start, stop))
            offset += stop - start
    return chunks


class PairContractions:
    """Contractions with symmetric Np×Np weights, from per-pair `combine` / `project` (shared by
    the single-process `ChunkedGramBlocks` and the Dask shards of `krenorm.theory.sharded`)."""

    pair_set: PairSet
    n_patches: int
    n_samples: int
    pair_rows: torch.Tensor
    pair_cols: torch.Tensor
    passes: int

    @property
    def streamed(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        return self.pair_rows.device

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def contract(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ_ij W_ij K_ij for symmetric Np×Np weights (batched); the 'all' pair set only (the
        same contract as `LocalGramBlocks.contract`)."""
        self._require_all_pairs()
        if weights.shape[-2:] != (self.n_patches, self.n_patches):
            raise ValueError(f"weights must be (..., {self.n_patches}, {self.n_patches}), got "
                             f"{tuple(weights.shape)}.")
        rows, cols = self.pair_rows, self.pair_cols
        return self.combine(weights.to(device=self.device)[..., rows, cols])

    def frobenius(self, matrix: torch.Tensor) -> torch.Tensor:
        """F_ij = ⟨K_ij, B⟩_F as a symmetric Np×Np matrix (batched); 'all' pair set only."""
        self._require_all_pairs()
        values = self.project(matrix)
        out = values.new_zeros(*values.shape[:-1], self.n_patches, self.n_patches)
        out[..., self.pair_rows, self.pair_cols] = values
        out[..., self.pair_cols, self.pair_rows] = values
        return out

    def _require_all_pairs(self) -> None:
        if self.pair_set != "all":
            raise ValueError("contract/frobenius need every pair of patches (pair_set='all'); "
                             "use combine/project with one coefficient per patch.")


class ChunkedGramBlocks(PairContractions):
    """The local blocks of images x, contracted chunk by chunk (see the module docstring).

    storage: None streams (recomputes every block on every pass); a dtype stores the blocks in
    that dtype (float32 halves the memory; contractions still accumulate in float64).
    pair_set: 'all' (CNN: every pair i ≤ j, row-major as `LocalGramBlocks`) or 'diagonal' (LCN:
    K_ii only).
    keep_bytes: streamed blocks may keep this many bytes of float64 blocks (the first chunks)
    and recompute only the rest: the memory budget buys fewer κ evaluations per pass.
    rows: a shard — only the pairs whose first patch is in `rows`; its `combine` is the partial
    sum over those pairs and its `project` is zero elsewhere, so shards add up to the whole
    (`krenorm.theory.sharded`)."""

    def __init__(
        self,
        x: torch.Tensor,
        mask: PatchGeometry | IntPair,
        stride: IntPair | None = None,
        padding: IntPair | None = None,
        activation: str | Activation = "erf",
        lambda0: float = 1.0,
        *,
        pair_set: PairSet = "all",
        storage: torch.dtype | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        memory_limit: int | None = None,
        device: torch.device | str | None = None,
        rows: Sequence[int] | None = None,
        keep_bytes: int = 0,
    ):
        if pair_set not in ("all", "diagonal"):
            raise ValueError(f"pair_set must be 'all' or 'diagonal', got {pair_set!r}.")
        if storage is not None and storage not in (torch.float64, torch.float32):
            raise ValueError(f"storage must be None (streamed), torch.float64 or torch.float32, "
                             f"got {storage!r}.")
        self.activation = get_activation(activation)
        self.pair_set: PairSet = pair_set
        patches = scaled_patches(x, mask, stride, padding, lambda0, dtype=torch.float64,
                                 device=device)
        by_position = patches.transpose(0, 1).contiguous()  # (Np, P, M)
        self.norms = (by_position**2).sum(-1)  # (Np, P)
        self.linked = self.activation.link_inputs(by_position, self.norms)
        self.n_patches, self.n_samples = self.norms.shape
        if pair_set == "all":
            self.pair_rows, self.pair_cols = torch.triu_indices(self.n_patches, self.n_patches,
                                                                device=self.norms.device)
        else:
            self.pair_rows = self.pair_cols = torch.arange(self.n_patches,
                                                           device=self.norms.device)
        self.is_diagonal_pair = self.pair_rows == self.pair_cols
        per_block = _KAPPA_TEMPORARIES * self.n_samples**2 * 8
        self._chunks = _chunks(self.n_patches, pair_set, chunk_length(per_block, chunk_bytes))
        if rows is not None:
            # A shard: only the pairs (i, j) with i in `rows` (the 'all' pair set) or the
            # blocks K_ii with i in `rows` ('diagonal'; chunks of one block each).
            wanted = set(rows)
            if pair_set == "diagonal":
                self._chunks = [_Chunk(i, None, i, i + 1) for i in sorted(wanted)]
            else:
                self._chunks = [chunk for chunk in self._chunks if chunk.row in wanted]
        self.storage_dtype = storage
        self.passes = 0
        self._stored: torch.Tensor | None = None
        self._work: torch.Tensor | None = None
        self._positions: dict[int, int] = {}
        kept = self._chunks
        if storage is None and keep_bytes > 0:
            # Streamed, but keep (float64) the first chunks that fit `keep_bytes`: those are
            # read, the others recomputed on every pass.
            block_bytes = self.n_samples**2 * 8
            kept, total = [], 0
            for chunk in self._chunks:
                if total + chunk.count * block_bytes > keep_bytes:
                    break
                kept.append(chunk)
                total += chunk.count * block_bytes
            storage_for_kept = torch.float64 if kept else None
        else:
            storage_for_kept = storage
        if storage_for_kept is not None:
            held = sum(chunk.count for chunk in kept)
            check_allocation("the local Gram blocks", held * self.n_samples**2,
                             storage_for_kept, memory_limit)
            stored = self.norms.new_empty(held, self.n_samples, self.n_samples,
                                          dtype=storage_for_kept)
            # Storage is packed in chunk order; `_positions` maps a chunk to its slice.
            position = 0
            for chunk in kept:
                stored[position:position + chunk.count] = self._compute(chunk)
                self._positions[chunk.offset] = position
                position += chunk.count
            self._stored = stored
        #: What each pass recomputes, row by row (docs/scale.md §1).
        self._recomputed = _recomputed_groups([chunk for chunk in self._chunks
                                               if chunk.offset not in self._positions])
        self._tile: torch.Tensor | None = None
        # Rounding cannot push an erf link argument out of [−1, 1] unless |x|² ~ 10¹³: then
        # the clip, a pass over every entry, is skipped (Activation.link_needs_clip).
        largest = float(self.norms.max()) if self.norms.numel() else 0.0
        self._clip = self.activation.link_needs_clip(largest, int(self.linked.shape[-1]))

    @property
    def n_pairs(self) -> int:
        return int(self.pair_rows.shape[0])

    @property
    def streamed(self) -> bool:
        """True when some blocks are recomputed on every pass."""
        return self.storage_dtype is None

    @property
    def kept_pairs(self) -> int:
        """Blocks held in memory (all when stored; those within keep_bytes when streamed)."""
        return 0 if self._stored is None else int(self._stored.shape[0])

    @property
    def device(self) -> torch.device:
        return self.norms.device

    def stored_bytes(self) -> int:
        """Bytes held by stored blocks (0 when streamed)."""
        return 0 if self._stored is None else self._stored.numel() * self._stored.element_size()

    def _buffer(self, count: int) -> torch.Tensor:
        """A float64 work buffer for `count` blocks, allocated once and reused by every chunk:
        a fresh P×P allocation per block costs page faults comparable to the arithmetic."""
        if self._work is None or self._work.shape[0] < count:
            self._work = self.norms.new_empty(count, self.n_samples, self.n_samples)
        return self._work[:count]

    def _compute(self, chunk: _Chunk) -> torch.Tensor:
        """The chunk's blocks in float64, by the same operations as `compute_local_blocks`, in
        the work buffer (valid until the next chunk)."""
        norms, linked = self.norms, self.linked
        out = self._buffer(chunk.count)
        if chunk.row is None:
            rows = slice(chunk.start, chunk.stop)
            dots = torch.matmul(linked[rows], linked[rows].mT, out=out)
            return self.activation.kernel_from_linked_(norms[rows][:, :, None], dots,
                                                       norms[rows][:, None, :])
        i = chunk.row
        dots = torch.matmul(linked[i][None], linked[chunk.start:chunk.stop].mT, out=out)
        return self.activation.kernel_from_linked_(norms[i][None, :, None], dots,
                                                   norms[chunk.start:chunk.stop][:, None, :])

    def _walk(self) -> Iterator[tuple[_Chunk, torch.Tensor]]:
        """The blocks held in memory: (chunk, its blocks flattened to (count, P²) in float64)."""
        for chunk in self._chunks:
            position = self._positions.get(chunk.offset)
            if position is None or self._stored is None:
                continue
            stored = self._stored[position:position + chunk.count]
            blocks = stored if stored.dtype == torch.float64 else self._buffer(
                chunk.count).copy_(stored)
            yield chunk, blocks.reshape(chunk.count, -1)

    def _tile_shape(self, batch: int) -> tuple[int, int]:
        """(rows, blocks) of a streamed tile for a batch of `batch` coefficient vectors or
        matrices B: rows × P × (1 + batch) ≈ `_TILE_ENTRIES` within the row limits, then as many
        blocks as fill `_TILE_ENTRIES`. Off the CPU, whole blocks (no cache to fit, and every
        tile costs kernel launches)."""
        n = self.n_samples
        if self.device.type != "cpu":
            return n, max(1, _TILE_ENTRIES // n**2)
        rows = min(n, _TILE_ROWS, max(_MIN_TILE_ROWS, _TILE_ENTRIES // (n * (1 + batch))))
        return rows, max(1, _TILE_ENTRIES // (rows * n))

    def _tiles(self, group: _Chunk, batch: int
               ) -> Iterator[tuple[int, int, int, int, torch.Tensor, float]]:
        """The group's blocks recomputed tile by tile: (k0, k1, r0, r1, rows r0…r1−1 of blocks
        offset + k0 … offset + k1 − 1 as (k1 − k0, r1 − r0, P) divided by κ's constant factor,
        the factor). Row tiles are outermost, so the accumulator rows r0…r1−1 stay in cache
        across the group's blocks. Each tile is valid until the next one."""
        n, linked, norms = self.n_samples, self.linked, self.norms
        rows, per_tile = self._tile_shape(batch)
        per_tile = min(per_tile, group.count)
        if self._tile is None or self._tile.numel() < per_tile * rows * n:
            self._tile = norms.new_empty(per_tile * rows * n)
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            for k0 in range(0, group.count, per_tile):
                k1 = min(k0 + per_tile, group.count)
                columns = slice(group.start + k0, group.start + k1)
                if group.row is None:  # diagonal blocks K_ii: left and right patch are i
                    left, left_norms = linked[columns, r0:r1], norms[columns, r0:r1, None]
                else:
                    left = linked[group.row, r0:r1][None]
                    left_norms = norms[group.row, r0:r1][None, :, None]
                out = self._tile[:(k1 - k0) * (r1 - r0) * n].view(k1 - k0, r1 - r0, n)
                dots = torch.matmul(left, linked[columns].mT, out=out)
                tile, factor = self.activation.kernel_from_linked_unscaled_(
                    left_norms, dots, norms[columns][:, None, :], clip=self._clip)
                yield k0, k1, r0, r1, tile, factor

    def _combine_recomputed(self, group: _Chunk, part: torch.Tensor, target: torch.Tensor
                            ) -> None:
        """target (batch, P²) += Σ_k part[:, k] K_k over the group's blocks, recomputed tile by
        tile; κ's constant factor rides on the product."""
        n = self.n_samples
        for k0, k1, r0, r1, tile, factor in self._tiles(group, part.shape[0]):
            target[:, r0 * n:r1 * n].addmm_(part[:, k0:k1], tile.reshape(k1 - k0, -1),
                                            alpha=factor)

    def _project_recomputed(self, group: _Chunk, flat: torch.Tensor, out: torch.Tensor
                            ) -> None:
        """out (batch, count) = ⟨K_k, B⟩_F for the group's blocks, recomputed tile by tile."""
        n = self.n_samples
        for k0, k1, r0, r1, tile, factor in self._tiles(group, flat.shape[0]):
            out[:, k0:k1].addmm_(flat[:, r0 * n:r1 * n], tile.reshape(k1 - k0, -1).T,
                                 alpha=factor)

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_k c_k K_k + Σ_{k off-diagonal} c_k K_kᵀ for per-pair coefficients (..., n_pairs):
        the diagonal and upper parts accumulate separately and the upper part is added
        transposed at the end. One pass for the whole batch."""
        if coefficients.shape[-1] != self.n_pairs:
            raise ValueError(f"coefficients must be (..., {self.n_pairs}), got "
                             f"{tuple(coefficients.shape)}.")
        batch = coefficients.shape[:-1]
        flat_coefficients = coefficients.reshape(-1, self.n_pairs).to(
            dtype=torch.float64, device=self.device)
        size = self.n_samples**2
        diagonal = flat_coefficients.new_zeros(flat_coefficients.shape[0], size)
        upper = flat_coefficients.new_zeros(flat_coefficients.shape[0], size)
        self.passes += 1
        for chunk, blocks in self._walk():
            part = flat_coefficients[:, chunk.offset:chunk.offset + chunk.count]
            on_diagonal = self.is_diagonal_pair[chunk.offset:chunk.offset + chunk.count]
            if bool(on_diagonal.all()):
                diagonal.addmm_(part, blocks)
            elif not bool(on_diagonal.any()):
                upper.addmm_(part, blocks)
            else:
                mask = on_diagonal.to(part)
                diagonal.addmm_(part * mask, blocks)
                upper.addmm_(part * (1 - mask), blocks)
        for group in self._recomputed:
            part = flat_coefficients[:, group.offset:group.offset + group.count]
            target = diagonal if bool(self.is_diagonal_pair[group.offset]) else upper
            self._combine_recomputed(group, part, target)
        shape = (*batch, self.n_samples, self.n_samples)
        diagonal, upper = diagonal.reshape(shape), upper.reshape(shape)
        return diagonal + upper + upper.transpose(-1, -2)

    def combine_diagonal(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_i c_i K_ii for per-patch coefficients (Np,): only the Np diagonal blocks are read
        or computed — Np/n_pairs of a pass (4 % with 49 patches), not counted as one. The
        'all' pair set only (for the 'diagonal' set `combine` is this already)."""
        self._require_all_pairs()
        if coefficients.shape != (self.n_patches,):
            raise ValueError(f"coefficients must be ({self.n_patches},), got "
                             f"{tuple(coefficients.shape)}.")
        values = coefficients.to(dtype=torch.float64, device=self.device)
        out = self.norms.new_zeros(self.n_samples, self.n_samples)
        n = self.n_patches
        flat = out.view(1, -1)
        for i in range(n):
            offset = i * n - i * (i - 1) // 2  # index of the pair (i, i), row-major over i ≤ j
            position = self._positions.get(offset)
            if position is not None and self._stored is not None:
                out.add_(self._stored[position].to(torch.float64), alpha=float(values[i]))
            else:
                self._combine_recomputed(_Chunk(offset, i, i, i + 1), values[i].reshape(1, 1),
                                         flat)
        return out

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """F_k = ⟨K_k, B⟩_F for P×P matrices B (..., P, P) → (..., n_pairs). One pass."""
        if matrix.shape[-2:] != (self.n_samples, self.n_samples):
            raise ValueError(f"matrix must be (..., {self.n_samples}, {self.n_samples}), got "
                             f"{tuple(matrix.shape)}.")
        batch = matrix.shape[:-2]
        flat = matrix.reshape(-1, self.n_samples**2).to(dtype=torch.float64, device=self.device)
        # Zeros for pairs outside a shard: the driver sums the shards' projections.
        out = flat.new_zeros(flat.shape[0], self.n_pairs)
        self.passes += 1
        for chunk, blocks in self._walk():
            out[:, chunk.offset:chunk.offset + chunk.count] = flat @ blocks.T
        for group in self._recomputed:
            self._project_recomputed(group, flat,
                                     out[:, group.offset:group.offset + group.count])
        return out.reshape(*batch, self.n_pairs)
