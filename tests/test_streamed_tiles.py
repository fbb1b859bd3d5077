"""Streamed blocks recomputed in tiles of rows equal stored blocks (docs/scale.md §1).

The streamed engine never forms a whole recomputed block: it walks row tiles of a few blocks,
folds κ's constant factor into the coefficients and skips the clip of the erf link where
rounding cannot reach ±1. These tests shrink the tiles far below the images' sizes so every
path — several row tiles with a ragged last one, several block groups per row, the diagonal
block split from its row, kept blocks next to recomputed ones, batched coefficients — runs,
and compare with blocks computed whole (`compute_local_blocks`) to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels import chunked_blocks
from krenorm.kernels.activations import get_activation
from krenorm.kernels.chunked_blocks import ChunkedGramBlocks
from krenorm.kernels.grams import compute_local_blocks, local_diagonal_blocks
from krenorm.theory import fit_theory
from krenorm.theory.blocks import BlockSettings
from krenorm.theory.sharded import balanced_rows


def _images(n: int, size: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 1, size, size, generator=generator, dtype=torch.float64)


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of 5 rows (3 at least) and 2–3 blocks for P = 23: ragged row tiles, several
    groups of blocks per row."""
    monkeypatch.setattr(chunked_blocks, "_TILE_ENTRIES", 5 * 23 * 3)
    monkeypatch.setattr(chunked_blocks, "_TILE_ROWS", 5)
    monkeypatch.setattr(chunked_blocks, "_MIN_TILE_ROWS", 3)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_tiled_contractions_equal_whole_blocks(activation: str) -> None:
    x = _images(23, 8, 0)
    whole = compute_local_blocks(x, 4, 2, activation=activation)  # 9 patches, 45 pairs
    streamed = ChunkedGramBlocks(x, 4, 2, activation=activation)
    stored = ChunkedGramBlocks(x, 4, 2, activation=activation, storage=torch.float64)
    block_bytes = 23 * 23 * 8
    partial = ChunkedGramBlocks(x, 4, 2, activation=activation, chunk_bytes=1,
                                keep_bytes=7 * block_bytes)
    assert partial.kept_pairs == 7 and streamed.kept_pairs == 0
    generator = torch.Generator().manual_seed(1)
    raw = torch.randn(3, 9, 9, generator=generator, dtype=torch.float64)
    weights = raw + raw.mT
    matrix = torch.randn(3, 23, 23, generator=generator, dtype=torch.float64)
    diagonal_weights = torch.randn(9, generator=generator, dtype=torch.float64)
    expected_diagonal = torch.einsum("i,ipq->pq", diagonal_weights,
                                     local_diagonal_blocks(x, 4, 2, activation=activation))
    for blocks in (streamed, partial, stored):
        for w, b in ((weights, matrix), (weights[0], matrix[0])):  # batched and single
            assert torch.allclose(blocks.contract(w), whole.contract(w), rtol=0, atol=1e-12)
            assert torch.allclose(blocks.frobenius(b), whole.frobenius(b), rtol=0, atol=1e-12)
        assert torch.allclose(blocks.combine_diagonal(diagonal_weights), expected_diagonal,
                              rtol=0, atol=1e-12)
        # One pass per contraction, batched or not; the diagonal blocks alone are no pass.
        assert blocks.passes == 4


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_tiled_diagonal_blocks_equal_whole_blocks(activation: str) -> None:
    x = _images(23, 8, 2)
    stack = local_diagonal_blocks(x, 4, 2, activation=activation)
    streamed = ChunkedGramBlocks(x, 4, 2, activation=activation, pair_set="diagonal")
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(2, 9, generator=generator, dtype=torch.float64)
    matrix = torch.randn(2, 23, 23, generator=generator, dtype=torch.float64)
    assert torch.allclose(streamed.combine(w), torch.einsum("bi,ipq->bpq", w, stack),
                          rtol=0, atol=1e-12)
    assert torch.allclose(streamed.project(matrix), torch.einsum("ipq,bpq->bi", stack, matrix),
                          rtol=0, atol=1e-12)


@pytest.mark.usefixtures("small_tiles")
def test_streamed_shards_add_up_to_the_whole() -> None:
    """Shards (the Dask engine's unit, krenorm.theory.sharded) recomputing their blocks in
    tiles add up to the whole contraction."""
    x = _images(23, 8, 4)
    whole = compute_local_blocks(x, 4, 2)
    generator = torch.Generator().manual_seed(5)
    raw = torch.randn(9, 9, generator=generator, dtype=torch.float64)
    matrix = torch.randn(23, 23, generator=generator, dtype=torch.float64)
    shards = [ChunkedGramBlocks(x, 4, 2, rows=rows) for rows in balanced_rows(9, "all", 3)]
    combined = sum(shard.contract(raw + raw.T) for shard in shards)
    projected = sum(shard.frobenius(matrix) for shard in shards)
    assert isinstance(combined, torch.Tensor) and isinstance(projected, torch.Tensor)
    assert torch.allclose(combined, whole.contract(raw + raw.T), rtol=0, atol=1e-12)
    assert torch.allclose(projected, whole.frobenius(matrix), rtol=0, atol=1e-12)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("kind", ["cnn", "lcn"])
def test_tiled_streamed_fit_equals_stored(kind: str) -> None:
    """Q̄, test predictions and the pass count of a streamed fit in small tiles equal the
    stored fit's (erf: the ReLU (Q̄, Q) model holds its blocks itself; the ReLU blocks are
    checked above)."""
    x, x_test = _images(23, 8, 6), _images(7, 8, 7)
    y = torch.sin(x.sum((1, 2, 3)))
    spec = ArchitectureSpec(kind, "erf", 4, 2)
    fits = {mode: fit_theory(x, y, spec, width=15.0, temperature=0.05,
                             blocks=BlockSettings(mode=mode)) for mode in ("stored", "streamed")}
    stored, streamed = fits["stored"], fits["streamed"]
    assert streamed.kernels.block_plan is not None
    assert streamed.kernels.block_plan.mode == "streamed"
    assert torch.allclose(streamed.q_bar, stored.q_bar, rtol=0, atol=1e-10)
    a, b = stored.predict(x_test), streamed.predict(x_test)
    assert torch.allclose(a.mean, b.mean, rtol=0, atol=1e-10)
    assert torch.allclose(a.variance, b.variance, rtol=0, atol=1e-10)
    assert stored.diagnostics is not None and streamed.diagnostics is not None
    assert streamed.diagnostics.block_passes == stored.diagnostics.block_passes


def test_unscaled_kernel_times_its_factor_is_the_kernel() -> None:
    generator = torch.Generator().manual_seed(8)
    rows = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    norms = (rows**2).sum(-1)
    for name, factor in (("erf", 2 / math.pi), ("relu", 1 / (2 * math.pi)), ("identity", 1.0),
                         ("tanh", 1.0)):
        act = get_activation(name)
        linked = act.link_inputs(rows, norms)
        expected = act.kernel(norms[:, None], rows @ rows.T, norms[None, :])
        value, f = act.kernel_from_linked_unscaled_(norms[:, None], linked @ linked.T,
                                                    norms[None, :])
        assert f == factor
        assert torch.allclose(f * value, expected, rtol=0, atol=1e-14)


def test_erf_clip_is_skipped_only_where_rounding_cannot_reach_one() -> None:
    erf, relu = get_activation("erf"), get_activation("relu")
    assert not erf.link_needs_clip(1e6, 48)  # |ρ| ≤ 1 − 5e-7: rounding is 1e-14
    assert erf.link_needs_clip(1e15, 48)  # 1 − |ρ| ~ 5e-16 is within rounding
    assert erf.link_needs_clip(math.inf, 48)
    assert relu.link_needs_clip(1.0, 48)  # ρ = 1 exactly for an input against itself
    # Huge inputs (|x|² ~ 1e17): the clip stays on and the streamed blocks stay finite and
    # equal to the whole ones.
    x = _images(9, 8, 9, scale=1e8)
    streamed = ChunkedGramBlocks(x, 4, 4)
    assert streamed._clip
    weights = torch.ones(4, 4, dtype=torch.float64)
    value = streamed.contract(weights)
    assert bool(torch.isfinite(value).all())
    assert torch.allclose(value, compute_local_blocks(x, 4, 4).contract(weights), rtol=0,
                          atol=1e-12)
    assert not ChunkedGramBlocks(_images(9, 8, 9), 4, 4)._clip
