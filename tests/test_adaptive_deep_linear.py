"""Deep linear exact oracle and its Gibbs sampler (krenorm.adaptive.deep_linear;
docs/math/adaptive.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from krenorm.adaptive.deep_linear import (
    deep_linear_oracle,
    log_scale_prior,
    sample_deep_linear,
)
from krenorm.adaptive.linear_oracle import linear_oracle
from krenorm.adaptive.scaling import ScalingRegime

D, P, M = 3, 6, 4


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(P, D, generator=generator, dtype=torch.float64)
    x_test = torch.randn(M, D, generator=generator, dtype=torch.float64)
    teacher = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    y = x @ teacher + 0.1 * torch.randn(P, generator=generator, dtype=torch.float64)
    return x, y, x_test, ScalingRegime(1.0, 3, D, 1.0, 1.0, 0.5)


def test_log_scale_prior_is_a_normalised_density_with_the_right_moments():
    """E[U] = Π E[Q_l] = 1 and E[U²] = Π (1 + 2/N_l) for Q_l ~ Gamma(N_l/2, 2/N_l)."""
    grid, log_density = log_scale_prior([2, 4, 3])
    density = np.exp(log_density)
    step = grid[1] - grid[0]
    assert density.sum() * step == pytest.approx(1.0, abs=1e-9)
    assert (density * np.exp(grid)).sum() * step == pytest.approx(1.0, abs=1e-9)
    second = (1 + 2 / 2) * (1 + 2 / 4) * (1 + 2 / 3)
    assert (density * np.exp(2 * grid)).sum() * step == pytest.approx(second, rel=1e-8)


def test_depth_one_equals_the_one_layer_oracle(data):
    x, y, x_test, regime = data
    deep = deep_linear_oracle(x, y, x_test, regime, [3])
    one = linear_oracle(x, y, x_test, regime)
    assert torch.allclose(deep.test_mean, one.prediction.test_mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(deep.test_covariance, one.prediction.test_covariance, atol=1e-12)
    assert deep.scale_mean == pytest.approx(one.scale_mean, rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("widths", [[3, 3], [2, 4, 3]])
def test_gibbs_sampler_matches_the_deep_oracle(data, widths):
    """16 independent Gibbs chains × 2000 kept sweeps: the test mean and second moment of f(x*)
    (4 points) agree with the oracle within 4.5 standard errors (across-chain; t with 15 d.o.f.
    exceeds 4.5 with probability 4e-4). Measured |z| ≤ 2.1 (depth 2) and ≤ 2.0 (depth 3).
    Teeth: the one-layer oracle is > 4.5 SE off the same samples somewhere."""
    x, y, x_test, regime = data
    oracle = deep_linear_oracle(x, y, x_test, regime, widths)
    samples = sample_deep_linear(x, y, x_test, regime, widths, n_chains=16, n_sweeps=2500,
                                 burn_in=500, seed=1)  # fmt: skip

    def worst_z(mean: torch.Tensor, covariance: torch.Tensor) -> float:
        z_mean = (samples.test_mean - mean) / samples.test_mean_stderr
        second = covariance.diagonal() + mean**2
        z_second = (samples.test_second_moment - second) / samples.test_second_moment_stderr
        return float(torch.cat([z_mean, z_second]).abs().max())

    assert worst_z(oracle.test_mean, oracle.test_covariance) < 4.5
    shallow = deep_linear_oracle(x, y, x_test, regime, [widths[-1]])
    assert worst_z(shallow.test_mean, shallow.test_covariance) > 4.5


def test_bad_widths_are_refused(data):
    x, y, x_test, regime = data
    with pytest.raises(ValueError, match="widths"):
        deep_linear_oracle(x, y, x_test, regime, [])
    with pytest.raises(ValueError, match="widths"):
        sample_deep_linear(x, y, x_test, regime, [3, 0])
