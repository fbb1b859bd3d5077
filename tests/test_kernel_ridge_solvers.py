"""Iterative kernel ridge solver (krenorm.kernel_ridge_solvers; docs/math/features.md §5)."""

import pytest
import torch

from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.features.ridge import PatchKernelOperator, solve_kernel_ridge
from krenorm.features.synthetic import star_task
from krenorm.kernel_ridge_solvers import (
    DenseKernel,
    RidgeConvergenceError,
    conjugate_gradient_ridge,
    partial_pivoted_cholesky,
    solve_ridge,
)
from krenorm.kernels.patches import PatchGeometry
from krenorm.spectra.kernel_ridge import hypercube_kernel_ridge


def _laplace_gram(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    gram = torch.exp(-torch.cdist(x, x) / 3)
    targets = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return gram, targets


def test_pivoted_cholesky_is_exact_at_full_rank_and_low_rank_kernels():
    gram, _ = _laplace_gram(60)
    factor = partial_pivoted_cholesky(DenseKernel(gram), 60)
    assert torch.allclose(factor @ factor.T, gram, atol=1e-10)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(80, 4, generator=generator, dtype=torch.float64)
    low = features @ features.T
    factor = partial_pivoted_cholesky(DenseKernel(low), 50)
    assert factor.shape[1] == 4  # stops once the residual diagonal is rounding
    assert torch.allclose(factor @ factor.T, low, atol=1e-9)


@pytest.mark.parametrize("rank", [0, 20, 200])
def test_cg_matches_cholesky(rank):
    """CG's α agrees with the Cholesky solve to the residual tolerance times the condition
    number's bound 1 + ‖K‖/λ (here ≤ 1e-8·(1 + 400/1e-2) ≈ 4e-4 relative; observed ≤ 1e-8)."""
    gram, targets = _laplace_gram(400)
    exact, info = solve_ridge(gram, targets, 1e-2, method="cholesky")
    assert info.method == "cholesky"
    approximate, info = conjugate_gradient_ridge(gram, targets, 1e-2, preconditioner_rank=rank)
    assert info.relative_residual < 1e-7
    error = float((approximate - exact).norm() / exact.norm())
    assert error < 1e-6, (rank, error, info)


def test_preconditioner_cuts_iterations():
    gram, targets = _laplace_gram(400)
    _, plain = conjugate_gradient_ridge(gram, targets, 1e-3, preconditioner_rank=0)
    _, preconditioned = conjugate_gradient_ridge(gram, targets, 1e-3, preconditioner_rank=150)
    assert preconditioned.iterations < plain.iterations / 2, (plain, preconditioned)


def test_cg_refuses_to_return_an_unconverged_solution():
    gram, targets = _laplace_gram(200)
    with pytest.raises(RidgeConvergenceError, match="max_iterations"):
        conjugate_gradient_ridge(gram, targets, 1e-8, preconditioner_rank=0, max_iterations=3)


def test_matrix_free_patch_operator_matches_stored_gram():
    """The ConvRFM NTK kernel recomputed block by block: its CG solution equals the Cholesky
    solve on the stored Gram (one-hot targets, 60 star images cropped to 16×16)."""
    task = star_task(60, seed=0)
    x = task.images.to(torch.float64)[:, :, :16, :16]
    kernel = MahalanobisPatchKernel("ntk", "aligned", PatchGeometry(7))
    metric = torch.eye(kernel.dimension(x), dtype=torch.float64)
    targets = torch.nn.functional.one_hot(task.labels.long(), 2).to(torch.float64)
    gram = kernel.gram(x, None, metric)
    exact = solve_kernel_ridge(gram, targets, 1e-3, method="cholesky")
    operator = PatchKernelOperator(kernel, x, metric, block_rows=25)
    assert torch.allclose(operator.diagonal(), gram.diagonal(), rtol=1e-12)
    free, info = solve_ridge(operator, targets, 1e-3, method="auto", preconditioner_rank=30)
    assert info.method == "cg"
    assert float((free - exact).norm() / exact.norm()) < 1e-6
    stored_cg = solve_kernel_ridge(gram, targets, 1e-3, method="cg")
    assert float((stored_cg - exact).norm() / exact.norm()) < 1e-6


def test_bad_method_and_ridge_are_refused():
    gram, targets = _laplace_gram(10)
    with pytest.raises(ValueError, match="method"):
        solve_ridge(gram, targets, 1e-2, method="lu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ridge"):
        conjugate_gradient_ridge(gram, targets, 0.0)


def test_spectra_kernel_ridge_cg_equals_cholesky():
    """The hypercube KRR yardstick (spectra/kernel_ridge.py) through CG gives the Cholesky test
    error to 1e-9 relative (same draw, same seed)."""
    dimension = 8
    masks = torch.arange(2**dimension)
    bits = ((masks[:, None] >> torch.arange(dimension)) & 1).to(torch.float64)
    overlap = 1 - 2 * bits.mean(1)  # x·y/d for x⊙y encoded by the mask
    values = torch.exp(overlap - 1)
    targets = 1 - 2 * bits[:, 0] * bits[:, 1]
    results = [
        hypercube_kernel_ridge(values, targets, 150, 1e-2, 0.1, 3, solver=solver)
        for solver in ("cholesky", "cg")
    ]
    assert results[1].test_mse == pytest.approx(results[0].test_mse, rel=1e-9)
    assert results[1].train_mse == pytest.approx(results[0].train_mse, rel=1e-6)


def test_gram_mirror_is_exact_and_strip_independent():
    from krenorm.features.conv_kernels import _mirror_upper_triangle

    generator = torch.Generator().manual_seed(2)
    matrix = torch.randn(37, 37, generator=generator, dtype=torch.float64)
    expected = torch.triu(matrix) + torch.triu(matrix, diagonal=1).T
    for strip in (1, 5, 37, 100):
        copy = matrix.clone()
        _mirror_upper_triangle(copy, strip)
        assert torch.equal(copy, expected)
    kernel = MahalanobisPatchKernel("laplace", "aligned", None, chunk_bytes=4096)
    x = torch.randn(50, 4, generator=generator, dtype=torch.float64)
    gram = kernel.gram(x, None, torch.eye(4, dtype=torch.float64), 2.0)
    assert torch.equal(gram, gram.T)
    assert torch.allclose(gram, torch.exp(-torch.cdist(x, x) / 2.0), atol=1e-12)
