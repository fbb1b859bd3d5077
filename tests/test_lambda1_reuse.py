"""`with_lambda1`: a kernel model moved to another readout precision λ1 must give exactly what a
model built from scratch at that λ1 gives (K_R, saddle point, test predictions), while sharing
the λ1-free blocks — the reuse that makes a λ1 scan at P = 2000 affordable (lkr_study)."""

from __future__ import annotations

import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.theory.blocks import BlockSettings
from krenorm.theory.renormalized_kernels import renormalized_kernels
from krenorm.theory.solvers import solve_saddle_point


def _data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(30, 1, 6, 6, generator=generator, dtype=torch.float64)
    y = torch.sign(x[:, 0, :3, :3].sum((1, 2)))
    x_test = torch.randn(7, 1, 6, 6, generator=generator, dtype=torch.float64)
    return x, y, x_test


@pytest.mark.parametrize("kind,blocks", [
    ("cnn", None), ("cnn", BlockSettings(mode="stored", dtype="float32")),
    ("cnn", BlockSettings(mode="streamed")), ("lcn", None), ("fc", None)])
def test_with_lambda1_equals_a_fresh_model(kind, blocks):
    x, y, x_test = _data()
    spec = ArchitectureSpec(kind, "erf") if kind == "fc" else ArchitectureSpec(kind, "erf", 3, 3)
    if kind == "fc":
        x, x_test = x.flatten(1), x_test.flatten(1)
    base = renormalized_kernels(spec, x, 1.0, 1.0, blocks=blocks)
    for lambda1 in (0.5, 7.0):
        fresh = renormalized_kernels(spec, x, 1.0, lambda1, blocks=blocks)
        moved = base.with_lambda1(lambda1)
        assert moved.lambda1 == lambda1 and base.lambda1 == 1.0  # the original is untouched
        action_fresh = fresh.action(y, 20.0, 0.05)
        action_moved = moved.action(y, 20.0, 0.05)
        saddle_fresh = solve_saddle_point(action_fresh, None)
        saddle_moved = solve_saddle_point(action_moved, None)
        # λ1 = 7 moves Q̄ far from 1: a wrong 1/λ1 anywhere would show at the 1e-2 level.
        torch.testing.assert_close(saddle_moved.point, saddle_fresh.point, rtol=1e-8, atol=1e-10)
        mean_fresh = fresh.posterior(saddle_fresh.point, y, 0.05).predict(x_test)
        mean_moved = moved.posterior(saddle_moved.point, y, 0.05).predict(x_test)
        torch.testing.assert_close(mean_moved.mean, mean_fresh.mean, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(mean_moved.variance, mean_fresh.variance, rtol=1e-8,
                                   atol=1e-10)
    if kind != "fc":  # the blocks are shared, not copied
        moved = base.with_lambda1(3.0)
        old_blocks = getattr(base.basis, "blocks", getattr(base.basis, "stack", None))
        new_blocks = getattr(moved.basis, "blocks", getattr(moved.basis, "stack", None))
        assert old_blocks is new_blocks and moved.basis is not base.basis


def test_with_lambda1_refuses_a_bad_precision():
    x, _, _ = _data()
    base = renormalized_kernels(ArchitectureSpec("cnn", "erf", 3, 3), x, 1.0, 1.0)
    with pytest.raises(ValueError, match="lambda1"):
        base.with_lambda1(0.0)
