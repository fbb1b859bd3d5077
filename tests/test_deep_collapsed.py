"""The collapsed-readout posterior of deep networks (`DeepCollapsedPosterior`) against exact
answers on a toy small enough for quadrature: a deep FC network with one input and one unit per
hidden layer (docs/math/deep.md §6)."""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.networks.deep_modules import DeepCollapsedPosterior, DeepFullPosterior, DeepNetwork
from krenorm.networks.diagnostics import estimate_mean
from krenorm.networks.modules import PreparedInputs
from krenorm.networks.transitions import HMCKernel

TEMPERATURE = 0.1
PRIORS = (1.0, 1.5, 2.0)  # λ_0 (W¹), λ_1 (W²), λ_2 (readout)
X = torch.tensor([[-1.5], [-0.5], [0.3], [1.0], [2.0]], dtype=torch.float64)
Y = torch.tensor([-0.6, -0.3, 0.2, 0.5, 0.6], dtype=torch.float64)
X_TEST = torch.tensor([[0.7], [-1.0]], dtype=torch.float64)


def _network(replicas: int, seed: int = 0) -> DeepNetwork:
    return DeepNetwork(DeepArchitectureSpec("fc", "erf", 2), (1,), [1, 1], PRIORS,
                       replicas=replicas, generator=torch.Generator().manual_seed(seed))


def _set_hidden(network: DeepNetwork, w1: torch.Tensor, w2: torch.Tensor) -> None:
    with torch.no_grad():
        network.layers[0].copy_(w1.reshape(-1, 1, 1))
        network.layers[1].copy_(w2.reshape(-1, 1, 1))


def test_collapsed_potential_is_the_full_potential_integrated_over_the_readout() -> None:
    """U_c(W) = −ln ∫ exp(−U_full(W, a)) da + const: checked by quadrature over the (scalar)
    readout at five hidden states; the constant cancels in differences. A wrong evidence
    (e.g. a missing ln det or the prior term) breaks this at ~1e-2 and more."""
    w1 = torch.tensor([0.3, -1.2, 0.8, 2.0, -0.1], dtype=torch.float64)
    w2 = torch.tensor([1.1, 0.4, -0.9, 0.2, -1.7], dtype=torch.float64)
    collapsed_net = _network(5)
    _set_hidden(collapsed_net, w1, w2)
    collapsed = DeepCollapsedPosterior(collapsed_net, X, Y, temperature=TEMPERATURE).potential()
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    full_net = _network(grid.numel())
    full = []
    for index in range(5):
        _set_hidden(full_net, w1[index].expand(grid.numel()), w2[index].expand(grid.numel()))
        with torch.no_grad():
            full_net.readout.copy_(grid[:, None])
            potential = DeepFullPosterior(full_net, X, Y, temperature=TEMPERATURE).potential()
        spacing = float(grid[1] - grid[0])
        full.append(-float(torch.logsumexp(-potential, 0)) - math.log(spacing))
    full_t = torch.tensor(full, dtype=torch.float64)
    torch.testing.assert_close(collapsed.detach() - collapsed[0].detach(), full_t - full_t[0],
                               atol=1e-8, rtol=0)


@pytest.mark.slow
def test_collapsed_hmc_samples_the_exact_posterior_mean_of_the_test_outputs() -> None:
    """HMC on the collapsed deep posterior against a 2-d quadrature of p(W¹, W²) ∝ exp(−U_c):
    the posterior means of the two test outputs and of the predictive variance agree within
    4 Monte-Carlo standard errors (ArviZ MCSE over 16 chains)."""
    grid = torch.linspace(-7, 7, 561, dtype=torch.float64)
    w1, w2 = torch.meshgrid(grid, grid, indexing="ij")
    exact_net = _network(w1.numel())
    _set_hidden(exact_net, w1.reshape(-1), w2.reshape(-1))
    exact_density = DeepCollapsedPosterior(exact_net, X, Y, temperature=TEMPERATURE)
    with torch.no_grad():
        weights = torch.softmax(-exact_density.potential(), 0)
        mean, variance = exact_density.predictive(PreparedInputs(X_TEST, "fc"))
    # the grid must hold the posterior: negligible mass on its edge
    edge = weights.reshape(561, 561)
    assert float(edge[[0, -1], :].sum() + edge[:, [0, -1]].sum()) < 1e-9
    exact = torch.cat([weights @ mean[..., 0], (weights @ variance)[None].mean(1)])

    network = _network(16, seed=3)
    density = DeepCollapsedPosterior(network, X, Y, temperature=TEMPERATURE)
    generator = torch.Generator().manual_seed(5)
    kernel = HMCKernel(density, 0.3, generator, leapfrog_steps=8)
    records = []
    for step in range(700):
        stats = kernel.step()
        if step < 150:
            kernel.step_size = kernel.step_size * torch.exp(0.05 * (stats.acceptance - 0.8))
            continue
        m, v = density.predictive(PreparedInputs(X_TEST, "fc"))
        records.append(torch.stack([m[:, 0, 0], m[:, 1, 0], v.mean(1)], 0))
    traces = torch.stack(records, 0)  # (n, 3, R)
    for index in range(3):
        estimate = estimate_mean(traces[:, index, :])
        z = (estimate.mean - float(exact[index])) / estimate.stderr
        assert abs(z) < 4, (index, estimate.mean, float(exact[index]), estimate.stderr)


def test_collapsed_readout_draw_has_the_conditional_mean_and_variance() -> None:
    """The exact readout draw a | W: its sample mean and variance over many replicas at one
    hidden state equal the closed form (Gaussian conditional), within 5 SE."""
    replicas = 20000
    network = _network(replicas)
    _set_hidden(network, torch.full((replicas,), 0.7, dtype=torch.float64),
                torch.full((replicas,), -1.1, dtype=torch.float64))
    density = DeepCollapsedPosterior(network, X, Y, temperature=TEMPERATURE)
    draws = density.sample_readout(torch.Generator().manual_seed(1))[:, 0, 0]
    with torch.no_grad():
        phi = network.features(X)[0, :, 0]
    precision = PRIORS[-1] + float(phi @ phi) / TEMPERATURE
    mean = float(phi @ Y) / TEMPERATURE / precision
    assert abs(float(draws.mean()) - mean) < 5 * math.sqrt(1 / precision / replicas)
    assert abs(float(draws.var()) * precision - 1) < 5 * math.sqrt(2 / replicas)
