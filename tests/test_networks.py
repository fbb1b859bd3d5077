"""Networks in the docs/math/theory.md §1 parameterisation, the closed-form readout posterior and
the posterior observables (autocorrelation, alignment, Q estimate)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.nngp import nngp_kernel
from krenorm.networks import (
    GaussianReadout,
    build_network,
    centered_kernel_alignment,
    estimate_mean,
    integrated_autocorrelation_time,
    kernel_target_alignment,
    make_generator,
    readout_order_parameter,
    split_rhat,
)


def _images(n: int, seed: int, shape=(2, 7, 7)) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


# --- modules ------------------------------------------------------------------------------------


def test_cnn_matches_conv2d_and_dense_readout():
    spec = ArchitectureSpec("cnn", "erf", mask=3, stride=2, padding=1)
    x = _images(5, 0)
    net = build_network(spec, 4, (2, 7, 7), n_replicas=3, n_outputs=2, seed=1)
    out = net(x)
    for r in range(3):
        filters = net.first_layer[r].reshape(4, 2, 3, 3)
        fields = F.conv2d(x, filters, stride=2, padding=1) / math.sqrt(2 * 9)
        hidden = torch.erf(fields).reshape(5, 4, -1)  # (P, N, Np), positions row-major
        expected = torch.einsum("pki,kid->pd", hidden, net.readout[r])
        expected = expected / math.sqrt(4 * net.n_patches)
        torch.testing.assert_close(out[r], expected, rtol=0, atol=1e-12)


def test_lcn_uses_one_filter_per_position():
    spec = ArchitectureSpec("lcn", "tanh", mask=3, stride=2)
    x = _images(4, 2)
    net = build_network(spec, 3, (2, 7, 7), n_replicas=2, seed=3)
    out = net(x)[..., 0]
    patches = F.unfold(x, 3, stride=2).transpose(1, 2)  # (P, Np, M)
    for r in range(2):
        total = torch.zeros(4, dtype=torch.float64)
        for k in range(3):
            for i in range(net.n_patches):
                field = patches[:, i] @ net.first_layer[r, k, i] / math.sqrt(18)
                total += net.readout[r, k, i, 0] * torch.tanh(field)
        torch.testing.assert_close(out[r], total / math.sqrt(3 * net.n_patches), rtol=0,
                                   atol=1e-12)


def test_gap_and_fc_formulas():
    x = _images(4, 4)
    gap = build_network(ArchitectureSpec("cnn-gap", "relu", mask=3, stride=2), 3, (2, 7, 7),
                        n_replicas=2, seed=5)
    fields = F.conv2d(x, gap.first_layer[1].reshape(3, 2, 3, 3), stride=2) / math.sqrt(18)
    pooled = torch.relu(fields).mean((2, 3))  # (P, N)
    torch.testing.assert_close(gap(x)[1, :, 0], pooled @ gap.readout[1, :, 0] / math.sqrt(3))
    fc = build_network(ArchitectureSpec("fc", "erf"), 5, (2, 7, 7), n_replicas=2, seed=6)
    flat = x.reshape(4, -1)
    hidden = torch.erf(flat @ fc.first_layer[0].T / math.sqrt(98))
    torch.testing.assert_close(fc(x)[0, :, 0], hidden @ fc.readout[0, :, 0] / math.sqrt(5))


@pytest.mark.parametrize("kind", ["fc", "cnn", "lcn", "cnn-gap"])
def test_prior_hidden_kernel_is_the_nngp(kind):
    # Over the prior, E[ΦΦᵀ] = λ1·NNGP exactly at any width (docs/math/theory.md §1–2 share one
    # parameterisation). Average over R·N independent units; tolerance 5 standard errors of
    # that average, estimated from the replica-to-replica spread.
    spec = ArchitectureSpec(kind, "erf", mask=3, stride=2)
    x = _images(6, 7)
    lambda0, lambda1 = 2.0, 3.0
    net = build_network(spec, 400, (2, 7, 7), n_replicas=8, lambda0=lambda0, lambda1=lambda1,
                        seed=8)
    with torch.no_grad():
        features = net.hidden_features(x)
    per_replica = torch.einsum("rpf,rqf->rpq", features, features)
    mean = per_replica.mean(0)
    stderr = per_replica.std(0) / math.sqrt(per_replica.shape[0])
    expected = lambda1 * nngp_kernel(spec, x, lambda0=lambda0, lambda1=lambda1)
    assert ((mean - expected).abs() <= 5 * stderr + 1e-12).all()


def test_prior_draws_have_prior_variances_and_independent_replicas():
    net = build_network(ArchitectureSpec("cnn", "erf", mask=3, stride=2), 50, (2, 7, 7),
                        n_replicas=4, lambda0=4.0, lambda1=0.25, seed=9)
    weights, readout = net.first_layer.detach(), net.readout.detach()
    # Sample variance of n Gaussian draws has relative standard error √(2/n); allow 5 of them.
    for values, variance in ((weights, 0.25), (readout, 4.0)):
        n = values.numel()
        assert abs(float(values.var()) / variance - 1) < 5 * math.sqrt(2 / n)
    flat = weights.reshape(4, -1)
    correlation = torch.corrcoef(flat)
    off_diagonal = correlation[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(flat.shape[1])
    again = build_network(ArchitectureSpec("cnn", "erf", mask=3, stride=2), 50, (2, 7, 7),
                          n_replicas=4, lambda0=4.0, lambda1=0.25, seed=9)
    assert torch.equal(again.first_layer, net.first_layer)


def test_module_validation():
    spec = ArchitectureSpec("cnn", "erf", mask=3)
    with pytest.raises(ValueError, match="seed"):
        build_network(spec, 2, (1, 5, 5))
    with pytest.raises(ValueError, match="larger than"):
        build_network(ArchitectureSpec("cnn", "erf", mask=9), 2, (1, 5, 5), seed=0)
    with pytest.raises(ValueError, match="width"):
        build_network(spec, 0, (1, 5, 5), seed=0)
    net = build_network(spec, 2, (1, 5, 5), seed=0)
    with pytest.raises(ValueError, match="per-sample shape"):
        net.prepare(torch.zeros(3, 1, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        net.prepare(torch.full((3, 1, 5, 5), math.nan, dtype=torch.float64))


# --- closed-form readout ----------------------------------------------------------------------


@pytest.mark.parametrize(("n_samples", "n_features"), [(9, 4), (4, 9)])
def test_gaussian_readout_matches_dense_formulas(n_samples, n_features):
    generator = torch.Generator().manual_seed(10)
    temperature, lambda1 = 0.3, 2.0
    features = torch.randn(2, n_samples, n_features, generator=generator, dtype=torch.float64)
    targets = torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    test = torch.randn(2, 3, n_features, generator=generator, dtype=torch.float64)
    readout = GaussianReadout(features, targets, temperature, lambda1)
    assert readout.use_feature_space == (n_features <= n_samples)
    evidence = temperature * torch.eye(n_samples) + features @ features.mT / lambda1
    expected_log = -0.5 * (
        torch.einsum("pd,rpq,qd->r", targets, torch.linalg.inv(evidence), targets)
        + 2 * torch.logdet(evidence) + 2 * n_samples * math.log(2 * math.pi)
    )
    torch.testing.assert_close(readout.log_evidence(), expected_log)
    precision = lambda1 * torch.eye(n_features) + features.mT @ features / temperature
    covariance = torch.linalg.inv(precision)
    mean = covariance @ features.mT @ targets / temperature
    torch.testing.assert_close(readout.readout_mean(), mean)
    predictive_mean, predictive_variance = readout.predictive(test)
    torch.testing.assert_close(predictive_mean, test @ mean)
    torch.testing.assert_close(
        predictive_variance, torch.einsum("rtf,rfg,rtg->rt", test, covariance, test)
    )
    second = (covariance + torch.einsum("rfd,rgd->rfg", mean, mean) / 2).reshape(
        2, 1, n_features, 1, n_features
    )
    torch.testing.assert_close(
        readout.readout_block_second_moments(1, n_features), second[:, 0, :, 0, :]
    )


@pytest.mark.parametrize(("n_samples", "n_features"), [(8, 3), (3, 8)])
def test_collapsed_readout_conditional_draws_are_exact(n_samples, n_features):
    # Exact draws from N(m, B⁻¹): the sample mean of n draws has standard error √(B⁻¹_ff/n)
    # per entry; 5 standard errors over a handful of entries.
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(1, n_samples, n_features, generator=generator, dtype=torch.float64)
    targets = torch.randn(n_samples, 1, generator=generator, dtype=torch.float64)
    readout = GaussianReadout(features, targets, 0.5, 1.5)
    draws = torch.stack([readout.sample_readout(generator) for _ in range(4000)])[:, 0, :, 0]
    precision = 1.5 * torch.eye(n_features) + features[0].T @ features[0] / 0.5
    covariance = torch.linalg.inv(precision)
    mean = readout.readout_mean()[0, :, 0]
    stderr = torch.sqrt(torch.diagonal(covariance) / draws.shape[0])
    assert ((draws.mean(0) - mean).abs() < 5 * stderr).all()
    # Sample covariance entries: standard error √((Σ_ii Σ_jj + Σ_ij²)/n).
    sample_covariance = torch.cov(draws.T)
    scale = torch.sqrt(
        (torch.outer(torch.diagonal(covariance), torch.diagonal(covariance)) + covariance**2)
        / draws.shape[0]
    )
    assert ((sample_covariance - covariance).abs() < 5 * scale).all()


def test_gaussian_readout_marks_failed_factorisation():
    features = torch.full((1, 3, 2), math.nan, dtype=torch.float64)
    readout = GaussianReadout(features, torch.ones(3, 1, dtype=torch.float64), 0.1, 1.0)
    assert bool(readout.failed[0])
    assert readout.log_evidence()[0] == -math.inf


# --- observables --------------------------------------------------------------------------------


def test_autocorrelation_time_of_ar1_process():
    # AR(1) x_t = φ x_{t−1} + ξ_t has τ_int = (1 + φ)/(1 − φ) = 9 for φ = 0.8. With n = 20000
    # per chain and 8 chains the Sokal estimate has relative error ≈ √(2(2M+1)/(nR)) ≈ 2 %;
    # allow 10 %.
    phi, n, chains = 0.8, 20000, 8
    generator = torch.Generator().manual_seed(12)
    noise = torch.randn(n, chains, generator=generator, dtype=torch.float64)
    traces = torch.empty_like(noise)
    traces[0] = noise[0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        traces[t] = phi * traces[t - 1] + noise[t]
    estimate = integrated_autocorrelation_time(traces)
    assert estimate.reliable
    assert abs(estimate.tau / 9.0 - 1) < 0.1
    summary = estimate_mean(traces + 3.0)
    # Mean of a stationary AR(1) is 3 here; stderr = √(Var·τ/(nR)), Var = 1/(1 − φ²).
    expected_stderr = math.sqrt(9.0 / (1 - phi**2) / (n * chains))
    assert abs(summary.stderr / expected_stderr - 1) < 0.1
    assert abs(summary.mean - 3.0) < 5 * expected_stderr
    assert summary.rhat < 1.01


def test_split_rhat_detects_unmixed_chains():
    generator = torch.Generator().manual_seed(13)
    mixed = torch.randn(500, 4, generator=generator, dtype=torch.float64)
    assert split_rhat(mixed) < 1.02
    stuck = mixed + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    assert split_rhat(stuck) > 1.5


def test_alignments():
    generator = torch.Generator().manual_seed(14)
    y = torch.randn(10, generator=generator, dtype=torch.float64)
    features = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    kernel = features @ features.T
    assert kernel_target_alignment(torch.outer(y, y), y) == pytest.approx(1.0)
    assert kernel_target_alignment(3.0 * kernel, y) == pytest.approx(
        kernel_target_alignment(kernel, y)
    )
    assert centered_kernel_alignment(kernel, 2.0 * kernel + 5.0) == pytest.approx(1.0)
    assert 0.0 < centered_kernel_alignment(kernel, torch.eye(10, dtype=torch.float64)) < 1.0
    with pytest.raises(ValueError, match="square"):
        centered_kernel_alignment(kernel, kernel[:5])


def test_readout_order_parameter_is_identity_under_the_prior():
    # (λ1/N) Σ_k a_ki a_kj with a ~ N(0, 1/λ1): mean δ_ij; standard error per entry ≤ √(2/(N R)).
    net = build_network(ArchitectureSpec("cnn", "erf", mask=3, stride=3), 200, (1, 6, 6),
                        n_replicas=16, lambda1=2.5, seed=15)
    readout = net.readout.detach()[..., 0]  # (R, N, Np)
    blocks = torch.einsum("rki,rkj->rij", readout, readout)
    q = readout_order_parameter(blocks, 200, 2.5).mean(0)
    eye = torch.eye(net.n_patches, dtype=torch.float64)
    assert ((q - eye).abs() < 5 * math.sqrt(2 / (200 * 16))).all()


def test_generator_on_requested_device():
    assert make_generator(3).device.type == "cpu"
    with pytest.raises(ValueError, match="seed"):
        make_generator(1.5)
