"""Sampling deep networks with the metastability check (krenorm.networks.deep_sampling)."""

from __future__ import annotations

import pytest
import torch

from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.networks.deep_sampling import compare_starts, sample_deep_posterior
from krenorm.networks.settings import SamplerSettings


def _data(n_train: int = 30, n_test: int = 20) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 6, generator=generator, dtype=torch.float64)
    y = torch.tanh(x[:, 0] + 0.5 * x[:, 1])
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_prior_and_trained_starts_agree_when_the_chains_mix() -> None:
    """A small deep erf network whose collapsed-HMC chains mix: the halves started from the
    prior and from a gradient-trained point give the same test and training loss (|z| ≤ 3)."""
    x, y, x0, y0 = _data()
    summary = sample_deep_posterior(
        DeepArchitectureSpec("fc", "erf", 2), [8, 8], [1.0, 1.0, 2.0], x, y, x0, y0,
        temperature=0.05, settings=SamplerSettings(sampler="collapsed-hmc", n_replicas=8,
                                                    n_steps=300, burn_in=100,
                                                    leapfrog_steps=5))
    assert summary.starts is not None
    assert summary.starts.agree, summary.starts.to_dict()
    assert summary.rhat is not None and summary.rhat < 1.1
    assert abs(summary.test_loss - (summary.bias2 + summary.variance)) < 1e-10


def test_a_start_the_chains_cannot_leave_is_flagged() -> None:
    """A deliberately metastable toy: full-posterior HMC with a tiny fixed step (no adaptation)
    cannot carry the trained-started replicas back to the prior's typical set within the run,
    nor the prior-started ones to the fitted region, so the two halves' losses differ by many
    standard errors: the check must flag it (and the summary must say so)."""
    x, y, x0, y0 = _data()
    summary = sample_deep_posterior(
        DeepArchitectureSpec("fc", "erf", 2), [8, 8], [1.0, 1.0, 2.0], x, y, x0, y0,
        temperature=0.05, settings=SamplerSettings(
            sampler="hmc", n_replicas=8, n_steps=120, burn_in=20, step_size=1e-4,
            adapt_step_size=False, leapfrog_steps=2))
    assert summary.starts is not None
    assert not summary.starts.agree
    assert summary.starts.max_abs_z > 3
    assert any("metastability" in note for note in summary.warnings)


def test_compare_starts_on_synthetic_traces() -> None:
    """Two halves of independent N(0, 1) chains agree; shifting the second half by 1 (with
    ~0.02 standard errors) is detected."""
    generator = torch.Generator().manual_seed(2)
    traces = torch.randn(400, 8, generator=generator, dtype=torch.float64)
    assert compare_starts({"x": traces}, 4).agree
    shifted = traces.clone()
    shifted[:, 4:] += 1.0
    comparison = compare_starts({"x": shifted}, 4)
    assert not comparison.agree and comparison.max_abs_z > 10


def test_the_check_needs_two_chains_per_half() -> None:
    x, y, x0, y0 = _data()
    with pytest.raises(ValueError, match="n_replicas"):
        sample_deep_posterior(DeepArchitectureSpec("fc", "erf", 2), [4, 4], 1.0, x, y, x0, y0,
                              temperature=0.1,
                              settings=SamplerSettings(sampler="hmc", n_replicas=2,
                                                       n_steps=10))
