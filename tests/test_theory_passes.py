"""Fewer passes over the kernel blocks per solve (docs/scale.md §4): Hessian-vector products
that ride on an evaluation's passes, LOBPCG products answered from the span of earlier ones,
and a polish that does not evaluate its start again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.theory import fit_theory
from krenorm.theory.blocks import BlockSettings
from krenorm.theory.solvers import (
    _QUICK_ITERATIONS,
    _Coordinates,
    _curvature_start,
    _SpanCache,
    min_hessian_eigenvalue,
    solve_saddle_point,
)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=generator, dtype=torch.float64)


def _fit(mode: str, hessian_check: bool = True):  # type: ignore[no-untyped-def]
    # mask 2 on 8×8 images: 16 patches, 136 free entries of Q̄ — the LOBPCG curvature path.
    x = _images(30, 8, 2)
    y = torch.sin(x.sum((1, 2, 3)))
    return fit_theory(x, y, ArchitectureSpec("cnn", "erf", 2, 2), width=15.0, temperature=0.05,
                      blocks=BlockSettings(mode=mode), hessian_check=hessian_check)  # type: ignore[arg-type]


def test_span_cache_answers_combinations_without_applying() -> None:
    generator = np.random.default_rng(0)
    matrix = generator.standard_normal((30, 30))
    operator = _SpanCache(lambda block: matrix @ block)
    first = generator.standard_normal((30, 4))
    assert np.allclose(operator(first), matrix @ first, atol=1e-12)
    combination = first @ generator.standard_normal((4, 3))
    assert np.allclose(operator(combination), matrix @ combination, atol=1e-10)
    assert operator.applications == 1  # in the span: no new application
    outside = generator.standard_normal((30, 2))
    assert np.allclose(operator(outside), matrix @ outside, atol=1e-12)
    assert operator.applications == 2
    assert np.allclose(operator(outside[:, 0]), matrix @ outside[:, :1], atol=1e-10)
    assert operator.applications == 2


@pytest.mark.parametrize("mode", ["stored", "streamed"])
def test_products_with_the_evaluation_equal_separate_products(mode: str) -> None:
    fit = _fit(mode, hessian_check=False)
    action, point = fit.action, fit.point
    coordinates = _Coordinates(action.structure, point.dtype)
    directions = coordinates.from_coordinates(torch.as_tensor(
        _curvature_start(coordinates, point).T))
    before = action.block_passes()
    fused = action.evaluate_with_products(point, directions)
    assert action.block_passes() - before == 2  # value, gradient and 8 products: two passes
    plain = action.evaluate(point)
    assert fused.value == pytest.approx(plain.value, rel=0, abs=1e-12)
    assert torch.allclose(fused.gradient, plain.gradient, rtol=0, atol=1e-12)
    assert fused.known_products is not None
    known_directions, images = fused.known_products
    assert torch.equal(known_directions, directions)
    assert torch.allclose(images, plain.hessian_vector(directions), rtol=0, atol=1e-12)
    # Seeded with them, the curvature check gives the same eigenvalue for two passes less.
    before = action.block_passes()
    seeded = min_hessian_eigenvalue(action, point, fused)
    seeded_passes = action.block_passes() - before
    before = action.block_passes()
    unseeded = min_hessian_eigenvalue(action, point, plain)
    assert action.block_passes() - before == seeded_passes + 2
    assert seeded == pytest.approx(unseeded, rel=0, abs=1e-9)


@pytest.mark.parametrize("mode", ["stored", "streamed"])
def test_curvature_check_costs_only_lobpcg_iterations(mode: str) -> None:
    """With the check, a fit costs the solve's passes plus two per LOBPCG iteration
    (`_QUICK_ITERATIONS` + 1 applications of the Hessian to the residual block): the polish
    re-evaluates nothing, the start block rides on the last evaluation and LOBPCG's final
    Rayleigh–Ritz step is answered from the span (it was 16 passes more before)."""
    checked, unchecked = _fit(mode), _fit(mode, hessian_check=False)
    assert checked.diagnostics is not None and unchecked.diagnostics is not None
    extra = checked.diagnostics.block_passes - unchecked.diagnostics.block_passes
    assert extra == 2 * (_QUICK_ITERATIONS + 1)
    assert torch.allclose(checked.q_bar, unchecked.q_bar, rtol=0, atol=1e-12)
    # The eigenvalue is the one of the dense Hessian (to LOBPCG's documented 1e-4).
    action = checked.action
    evaluation = action.evaluate(checked.point)
    dense = float(torch.linalg.eigvalsh(_Coordinates(action.structure, checked.point.dtype)
                                        .hessian(evaluation))[0])
    estimate = checked.diagnostics.min_hessian_eigenvalue
    assert estimate is not None and dense - 1e-9 <= estimate <= dense + 1e-4


def test_solve_prefetch_is_optional_and_changes_no_result() -> None:
    fit = _fit("streamed", hessian_check=False)
    action = fit.action
    runs = [solve_saddle_point(action, prefetch_curvature=flag) for flag in (False, True)]
    assert torch.allclose(runs[0].point, runs[1].point, rtol=0, atol=1e-12)
    assert runs[1].diagnostics.block_passes == runs[0].diagnostics.block_passes - 2
    first, second = (run.diagnostics.min_hessian_eigenvalue for run in runs)
    assert first is not None and second is not None
    assert first == pytest.approx(second, rel=0, abs=1e-9)


def test_off_diagonal_share_of_streamed_blocks_reads_only_the_diagonal_blocks() -> None:
    stored, streamed = _fit("stored", hessian_check=False), _fit("streamed", hessian_check=False)
    before = streamed.kernels.basis.passes
    share = streamed.kernels.off_diagonal_share(streamed.point)
    assert streamed.kernels.basis.passes == before  # cached K_R(Q̄) and Np diagonal blocks
    expected = stored.kernels.off_diagonal_share(stored.point)
    assert share is not None and expected is not None and expected > 1e-3
    assert share == pytest.approx(expected, rel=1e-10)
    blocks = streamed.kernels.basis.blocks
    weights = torch.diag(torch.arange(1.0, 17.0, dtype=torch.float64))
    assert torch.allclose(blocks.combine_diagonal(torch.diagonal(weights)),
                          blocks.contract(weights), rtol=0, atol=1e-12)
    # Partly kept (auto under a budget): kept diagonal blocks are read, the others computed.
    from krenorm.kernels.chunked_blocks import ChunkedGramBlocks

    x = _images(30, 8, 2)
    partly = ChunkedGramBlocks(x, 2, 2, chunk_bytes=1, keep_bytes=40 * 30 * 30 * 8)
    assert 0 < partly.kept_pairs < partly.n_pairs
    assert torch.allclose(partly.combine_diagonal(torch.diagonal(weights)),
                          blocks.contract(weights), rtol=0, atol=1e-12)
