"""Stored, streamed and float32 local blocks give the same theory (docs/scale.md §1–4)."""

from __future__ import annotations

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.chunked_blocks import ChunkedGramBlocks
from krenorm.kernels.grams import compute_local_blocks, local_diagonal_blocks
from krenorm.theory import fit_theory
from krenorm.theory.blocks import BlockSettings, plan_blocks


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=generator, dtype=torch.float64)


# (mask, stride) on 8×8 images: 4, 9 and 16 patches.
GEOMETRIES = [(4, 4), (4, 2), (2, 2)]


@pytest.mark.parametrize(("mask", "stride"), GEOMETRIES)
def test_streamed_contractions_equal_stored(mask: int, stride: int) -> None:
    x = _images(12, 8, 0)
    stored = compute_local_blocks(x, mask, stride)
    # A chunk budget of one block forces many chunks (and chunks that cross no row boundary).
    streamed = ChunkedGramBlocks(x, mask, stride, chunk_bytes=1)
    bigger = ChunkedGramBlocks(x, mask, stride, chunk_bytes=2**30)
    generator = torch.Generator().manual_seed(1)
    n = stored.n_patches
    raw = torch.randn(3, n, n, generator=generator, dtype=torch.float64)
    weights = raw + raw.mT
    matrix = torch.randn(2, 12, 12, generator=generator, dtype=torch.float64)
    matrix = matrix + matrix.mT
    for chunked in (streamed, bigger):
        assert torch.allclose(chunked.contract(weights), stored.contract(weights), rtol=0,
                              atol=1e-12)
        assert torch.allclose(chunked.frobenius(matrix), stored.frobenius(matrix), rtol=0,
                              atol=1e-12)
    assert streamed.passes == 2 and streamed.streamed and streamed.stored_bytes() == 0
    diagonal = ChunkedGramBlocks(x, mask, stride, pair_set="diagonal", chunk_bytes=1)
    stack = local_diagonal_blocks(x, mask, stride)
    w = torch.rand(n, generator=generator, dtype=torch.float64)
    assert torch.allclose(diagonal.combine(w), torch.einsum("i,ipq->pq", w, stack), atol=1e-12)
    assert torch.allclose(diagonal.project(matrix), torch.einsum("ipq,bpq->bi", stack, matrix),
                          atol=1e-12)


@pytest.mark.parametrize("kind", ["cnn", "lcn"])
@pytest.mark.parametrize(("mask", "stride"), GEOMETRIES[:2])
def test_streamed_fit_equals_stored(kind: str, mask: int, stride: int) -> None:
    """Q̄, the action, the posterior on test points (cross blocks and test diagonals) and the
    log evidence agree to 1e-10 at finite width, where Q̄ moves away from the identity."""
    x, x_test = _images(30, 8, 2), _images(9, 8, 3)
    y = torch.sin(x.sum((1, 2, 3)))
    spec = ArchitectureSpec(kind, "erf", mask, stride)
    fits = {mode: fit_theory(x, y, spec, width=15.0, temperature=0.05,
                             blocks=BlockSettings(mode=mode, chunk_bytes=1))
            for mode in ("stored", "streamed")}
    stored, streamed = fits["stored"], fits["streamed"]
    assert streamed.kernels.block_plan is not None
    assert streamed.kernels.block_plan.mode == "streamed"
    assert float((stored.q_bar - torch.eye(stored.q_bar.shape[0]) if kind == "cnn"
                  else stored.q_bar - 1).abs().max()) > 1e-3  # a non-trivial saddle point
    assert torch.allclose(streamed.q_bar, stored.q_bar, rtol=0, atol=1e-10)
    a, b = stored.predict(x_test), streamed.predict(x_test)
    assert torch.allclose(a.mean, b.mean, rtol=0, atol=1e-10)
    assert torch.allclose(a.variance, b.variance, rtol=0, atol=1e-10)
    assert abs(stored.log_evidence - streamed.log_evidence) < 1e-9
    passes = streamed.diagnostics.block_passes
    assert passes is not None and passes >= 2
    assert streamed.summary().diagnostics["blocks"]["mode"] == "streamed"
    # The posterior's K_R(Q̄*) reuses the solve's last contraction: no further pass.
    before = streamed.kernels.basis.passes
    streamed.kernels.posterior(streamed.point, y, 0.05)
    assert streamed.kernels.basis.passes == before


def test_float32_storage_close_and_reported() -> None:
    x, x_test = _images(30, 8, 4), _images(9, 8, 5)
    y = torch.sin(x.sum((1, 2, 3)))
    spec = ArchitectureSpec("cnn", "erf", 4, 2)
    reference = fit_theory(x, y, spec, width=15.0, temperature=0.05)
    single = fit_theory(x, y, spec, width=15.0, temperature=0.05,
                        blocks=BlockSettings(mode="stored", dtype="float32"))
    assert single.kernels.block_plan is not None and single.kernels.block_plan.dtype == "float32"
    difference = float((single.q_bar - reference.q_bar).abs().max())
    # float32 storage rounds each block entry by ~6e-8 relative; Q̄ moves by about that much.
    assert 0 < difference < 1e-5
    loss_a = reference.test_loss(x_test, torch.sin(x_test.sum((1, 2, 3)))).loss
    loss_b = single.test_loss(x_test, torch.sin(x_test.sum((1, 2, 3)))).loss
    assert abs(loss_a - loss_b) < 1e-5 * abs(loss_a)


def test_auto_streams_when_stored_blocks_do_not_fit() -> None:
    plan = plan_blocks(BlockSettings(), n_pairs=1225, n_samples=2000, memory_limit=8 * 2**30)
    assert plan.mode == "streamed" and "would not fit" in plan.reason
    assert plan_blocks(None, 10, 100, memory_limit=2**30).mode == "stored"
    x = _images(20, 8, 6)
    y = torch.sin(x.sum((1, 2, 3)))
    fit = fit_theory(x, y, ArchitectureSpec("cnn", "erf", 4, 2), width=20.0, temperature=0.1,
                     memory_limit=20 * 20 * 8 * 5)  # room for 5 of the 45 blocks
    blocks = fit.summary().diagnostics["blocks"]
    assert blocks["mode"] == "streamed" and blocks["keep_bytes"] == 0  # budget < working set
    with pytest.raises(MemoryError, match="GiB"):
        fit_theory(x, y, ArchitectureSpec("cnn", "erf", 4, 2), width=20.0, temperature=0.1,
                   memory_limit=20 * 20 * 8 * 5, blocks=BlockSettings(mode="stored"))


def test_block_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="mode"):
        BlockSettings(mode="sharded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        BlockSettings(dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_bytes"):
        BlockSettings(chunk_bytes=0)


def test_progress_reports_every_evaluation() -> None:
    from krenorm.theory.progress import solver_progress
    from krenorm.theory.solvers import SolverProgress

    x = _images(20, 8, 7)
    y = torch.sin(x.sum((1, 2, 3)))
    steps: list[SolverProgress] = []
    fit = fit_theory(x, y, ArchitectureSpec("cnn", "erf", 4, 2), width=20.0, temperature=0.1,
                     blocks=BlockSettings(mode="streamed"), progress=steps.append)
    assert fit.diagnostics is not None
    assert len(steps) == fit.diagnostics.function_evaluations
    passes = [step.block_passes for step in steps]
    assert passes == sorted(passes) and passes[-1] is not None and passes[-1] >= 2
    assert steps[-1].gradient_norm == pytest.approx(fit.diagnostics.gradient_norm)
    with solver_progress(every_s=0.0) as progress:  # the rich display runs and returns
        fit_theory(x, y, ArchitectureSpec("cnn", "erf", 4, 2), width=20.0, temperature=0.1,
                   progress=progress)


def test_sharded_on_a_local_cluster_equals_single_process() -> None:
    """Blocks built and kept on two in-process Dask workers (three shards), contractions as
    map-reduce: Q̄ and the predictions equal the single-process solve to 1e-10."""
    distributed = pytest.importorskip("distributed")
    from krenorm.theory.sharded import balanced_rows

    assert sorted(i for rows in balanced_rows(9, "all", 3) for i in rows) == list(range(9))
    x, x_test = _images(24, 8, 8), _images(5, 8, 9)
    y = torch.sin(x.sum((1, 2, 3)))
    spec = ArchitectureSpec("cnn", "erf", 4, 2)
    single = fit_theory(x, y, spec, width=15.0, temperature=0.05)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        sharded = fit_theory(x, y, spec, width=15.0, temperature=0.05,
                             blocks=BlockSettings(scheduler=client, n_shards=3),
                             hessian_check=False)
        assert sharded.summary().diagnostics["blocks"]["mode"] == "sharded"
        assert torch.allclose(sharded.q_bar, single.q_bar, rtol=0, atol=1e-10)
        a, b = single.predict(x_test), sharded.predict(x_test)
        assert torch.allclose(a.mean, b.mean, rtol=0, atol=1e-10)
        assert torch.allclose(a.variance, b.variance, rtol=0, atol=1e-10)
        assert sharded.config.to_dict()["blocks"]["scheduler"].startswith(("inproc", "tcp"))


def test_lbfgs_reuses_its_last_evaluation() -> None:
    """L-BFGS ends on the point it evaluated last: that evaluation (two passes) is not
    repeated."""
    from krenorm.theory.solvers import solve_saddle_point

    x = _images(20, 8, 10)
    y = torch.sin(x.sum((1, 2, 3)))
    fit = fit_theory(x, y, ArchitectureSpec("lcn", "erf", 4, 2), width=20.0, temperature=0.1)
    action = fit.action
    points: list[torch.Tensor] = []
    evaluate = action.evaluate

    def recording(point: torch.Tensor):  # type: ignore[no-untyped-def]
        points.append(point.clone())
        return evaluate(point)

    action.evaluate = recording  # type: ignore[method-assign]
    saddle = solve_saddle_point(action, method="lbfgs", hessian_check=False)
    assert saddle.diagnostics.converged
    assert saddle.diagnostics.function_evaluations == len(points)
    assert saddle.diagnostics.block_passes == 2 * len(points)
    assert not torch.equal(points[-1], points[-2])
    assert torch.equal(points[-1], saddle.point)


def test_streamed_blocks_keep_what_the_budget_allows() -> None:
    """Streamed with some blocks kept: the same contractions, and the plan keeps as many blocks
    as fit the budget beyond the solver's working matrices."""
    x = _images(12, 8, 11)
    stored = compute_local_blocks(x, 4, 2)
    block_bytes = 12 * 12 * 8
    partial = ChunkedGramBlocks(x, 4, 2, chunk_bytes=1, keep_bytes=7 * block_bytes)
    assert partial.streamed and partial.kept_pairs == 7 and partial.n_pairs == 45
    generator = torch.Generator().manual_seed(12)
    raw = torch.randn(9, 9, generator=generator, dtype=torch.float64)
    matrix = torch.randn(12, 12, generator=generator, dtype=torch.float64)
    assert torch.allclose(partial.contract(raw + raw.T), stored.contract(raw + raw.T), atol=1e-12)
    assert torch.allclose(partial.frobenius(matrix + matrix.T),
                          stored.frobenius(matrix + matrix.T), atol=1e-12)
    plan = plan_blocks(None, n_pairs=1225, n_samples=1000, memory_limit=8 * 2**30)
    assert plan.mode == "streamed"
    kept = plan.keep_bytes // (1000**2 * 8)
    assert kept == (8 * 2**30 - 40 * 1000**2 * 8) // (1000**2 * 8)
    assert f"{kept} of 1225 blocks kept" in plan.reason
