"""Sampled linear networks (krenorm.networks, collapsed sampler) at χ ∈ {1, N} against the exact
Gamma-mixture oracle: the χ conversions (λ1 = χ/g_w, T = κ/χ) and the observables agree."""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.adaptive.linear_oracle import linear_oracle
from krenorm.adaptive.sampled import sample_network, study_sampler_settings
from krenorm.adaptive.scaling import ScalingRegime


@pytest.mark.parametrize("chi", [1.0, 12.0])
def test_sampled_linear_network_agrees_with_oracle(chi):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    x_test = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, generator=generator, dtype=torch.float64)
    y, y_test = x @ teacher / 2.0, x_test @ teacher / 2.0
    # N = 12 > P: at N = 6 one of 16 collapsed chains stalled at Q ≈ 4.5 (τ ≈ 100–200 steps; see
    # docs/adaptive.md), far from the exact E[Q|y] = 1.29 that the other 15 matched.
    regime = ScalingRegime(chi=chi, width=12, input_dim=4, kappa=0.1)
    oracle = linear_oracle(x, y, x_test, regime)
    sampled = sample_network(
        x, y, x_test, y_test, regime, "identity",
        study_sampler_settings(n_replicas=16, n_steps=1000, thin=4, seed=2),
    )  # fmt: skip
    summary = sampled.summary
    # Standard errors: Q from the spread of 16 replica means, the test loss from the pooled
    # autocorrelation time. 4 standard errors: a false alarm ≈ 1e-3 per check (t with 15 dof).
    assert abs(sampled.scale - oracle.scale_mean) < 4 * sampled.scale_stderr
    expected_loss = oracle.prediction.test_loss(y_test)["loss"]
    assert abs(summary.test_loss - expected_loss) < 4 * summary.test_loss_stderr
    # ⟨VᵀV⟩/N: 10 distinct entries, each within 4.5 replica standard errors (Bonferroni over
    # 10 entries keeps the family-wise false-alarm rate near 1 %).
    z = (sampled.weight_covariance - oracle.prediction.weight_covariance) / (
        sampled.weight_covariance_stderr
    )
    assert float(z.abs().max()) < 4.5
    # The χ scaling must matter: the oracle's Q moves by far more than the tolerance.
    assert abs(oracle.scale_mean - 1.0) > 10 * sampled.scale_stderr
    assert math.isfinite(summary.test_loss) and not summary.warnings
