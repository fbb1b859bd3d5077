"""Local Gram blocks sharded over a Dask cluster (docs/scale.md §5).

The pairs (i, j) of patches are split by their first patch i into shards of about equal size;
each shard is a `ChunkedGramBlocks(rows=…)` built on a worker and kept there (a persisted
future). Every contraction is a map-reduce:

    combine:  Σ_k c_k K_k = Σ_shards (partial sum over the shard's pairs)   (P×P per shard)
    project:  ⟨K_k, B⟩_F  = Σ_shards (the shard's entries, zero elsewhere)   (n_pairs per shard)

and the Np×Np order-parameter algebra, the Cholesky of A and the solver stay on the driver. The
sum of shards equals the single-process contraction up to the order of additions (round-off).
Only the coefficients or the P×P matrix B travel to the workers, and one P×P matrix (or n_pairs
numbers) per shard comes back.

dask.distributed is an optional extra (`krenorm[cluster]`): it is imported when a sharded basis
is built, never when krenorm.theory is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from krenorm.kernels.chunked_blocks import ChunkedGramBlocks, PairContractions, PairSet
from krenorm.kernels.patches import PatchGeometry


def balanced_rows(n_patches: int, pair_set: PairSet, n_shards: int) -> list[list[int]]:
    """Patches i split into `n_shards` groups carrying about equal numbers of pairs (row i of
    the 'all' pair set has Np − i pairs): greedy, largest rows first."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be a positive int, got {n_shards!r}.")
    sizes = [n_patches - i if pair_set == "all" else 1 for i in range(n_patches)]
    groups: list[list[int]] = [[] for _ in range(min(n_shards, n_patches))]
    loads = [0] * len(groups)
    for i in sorted(range(n_patches), key=lambda row: -sizes[row]):
        lightest = loads.index(min(loads))
        groups[lightest].append(i)
        loads[lightest] += sizes[i]
    return [sorted(group) for group in groups if group]


def _combine(shard: ChunkedGramBlocks, coefficients: torch.Tensor) -> torch.Tensor:
    return shard.combine(coefficients)


def _project(shard: ChunkedGramBlocks, matrix: torch.Tensor) -> torch.Tensor:
    return shard.project(matrix)


class ShardedGramBlocks(PairContractions):
    """Local blocks kept on Dask workers, one stored shard per group of rows (see the module
    docstring). `scheduler` is a distributed.Client or a scheduler address; `n_shards`
    defaults to the number of workers."""

    def __init__(
        self,
        scheduler: Any,
        x: torch.Tensor,
        geometry: PatchGeometry,
        *,
        activation: str = "erf",
        lambda0: float = 1.0,
        pair_set: PairSet = "all",
        storage: torch.dtype = torch.float64,
        chunk_bytes: int,
        n_shards: int | None = None,
    ):
        # Imported here: dask.distributed is an optional extra and slow to import.
        from distributed import Client

        self.client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        self.pair_set = pair_set
        self.n_samples = int(x.shape[0])
        self.n_patches = geometry.n_patches((int(x.shape[2]), int(x.shape[3])))
        if pair_set == "all":
            self.pair_rows, self.pair_cols = torch.triu_indices(self.n_patches, self.n_patches)
        else:
            self.pair_rows = self.pair_cols = torch.arange(self.n_patches)
        self.passes = 0
        if n_shards is None:
            n_shards = max(1, len(self.client.scheduler_info()["workers"]))
        self.rows: Sequence[list[int]] = balanced_rows(self.n_patches, pair_set, n_shards)
        x = x.detach().to("cpu", torch.float64)
        self.shards = [
            self.client.submit(ChunkedGramBlocks, x, geometry, activation=activation,
                               lambda0=lambda0, pair_set=pair_set, storage=storage,
                               chunk_bytes=chunk_bytes, rows=rows, pure=False)
            for rows in self.rows]
        self.client.gather(self.client.submit(lambda *shards: None, *self.shards, pure=False))

    @property
    def n_pairs(self) -> int:
        return int(self.pair_rows.shape[0])

    def _map_reduce(self, function: Any, argument: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        [scattered] = self.client.scatter([argument.detach().to("cpu", torch.float64)],
                                          broadcast=True)
        parts = self.client.gather([self.client.submit(function, shard, scattered, pure=False)
                                    for shard in self.shards])
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_k c_k K_k (+ transposes), summed over the shards (one pass)."""
        if coefficients.shape[-1] != self.n_pairs:
            raise ValueError(f"coefficients must be (..., {self.n_pairs}), got "
                             f"{tuple(coefficients.shape)}.")
        return self._map_reduce(_combine, coefficients)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """⟨K_k, B⟩_F, each shard filling its own pairs (one pass)."""
        if matrix.shape[-2:] != (self.n_samples, self.n_samples):
            raise ValueError(f"matrix must be (..., {self.n_samples}, {self.n_samples}), got "
                             f"{tuple(matrix.shape)}.")
        return self._map_reduce(_project, matrix)
