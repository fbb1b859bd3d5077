"""Hyper-parameter selection by the theory (docs/selection.md): evidence maximisation, grid
searches (evidence and validation) and the best infinite-width readout-prior baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.data.synthetic import fc_teacher, local_teacher
from krenorm.theory.estimator import RenormalizedKernelRegressor
from krenorm.theory.evidence import EvidenceMaximizer
from krenorm.theory.fit import fit_theory
from krenorm.theory.selection import best_readout_priors, evidence_search, validation_search

TRUE_T, TRUE_LAMBDA1 = 0.05, 2.0


def _teacher(seed: int, n_train: int = 200):
    # N = 4000 hidden units: the teacher is a draw from (nearly) the NNGP prior with kernel K/λ1,
    # plus label noise of variance T, i.e. from the infinite-width model family itself.
    return fc_teacher(n_train, 50, 30, hidden_units=4000, noise=math.sqrt(TRUE_T),
                      lambda1=TRUE_LAMBDA1, seed=seed)


def test_evidence_recovers_the_teachers_temperature_and_readout_precision():
    data = _teacher(seed=2)
    fitted = EvidenceMaximizer("fc", math.inf, temperature=0.2, lambda1=0.5).fit(
        data.x_train, data.y_train)
    # Laplace spreads (measured: T 0.0500 ± 0.0089, λ1 1.88 ± 0.50; over seeds 0-3 the pulls
    # have RMS 1.07 and 0.93, so the spreads are calibrated). A factor-2 error in either would
    # sit > 3 spreads away.
    assert abs(fitted.temperature_ - TRUE_T) < 2 * fitted.spreads_["temperature"]
    assert abs(fitted.lambda1_ - TRUE_LAMBDA1) < 2 * fitted.spreads_["lambda1"]
    assert 0.1 < fitted.spreads_["temperature"] / TRUE_T < 0.4
    # The optimum is a maximum: every evaluated neighbour is lower.
    for step in ([0.05, 0.0], [0.0, 0.05], [-0.05, 0.0], [0.0, -0.05]):
        assert fitted.log_marginal_likelihood(fitted.theta_ + np.array(step)) \
            < fitted.log_marginal_likelihood_value_
    # The evidence is the theory's: the same number from the estimator at the optimum.
    assert fitted.regressor_.log_evidence_ == pytest.approx(
        fitted.log_marginal_likelihood_value_, abs=1e-8)


@pytest.mark.slow
def test_evidence_spreads_are_calibrated_over_teachers():
    pulls = []
    for seed in range(4):
        data = _teacher(seed)
        fitted = EvidenceMaximizer("fc", math.inf, temperature=0.2, lambda1=0.5).fit(
            data.x_train, data.y_train)
        pulls += [(fitted.temperature_ - TRUE_T) / fitted.spreads_["temperature"],
                  (fitted.lambda1_ - TRUE_LAMBDA1) / fitted.spreads_["lambda1"]]
    rms = math.sqrt(sum(p * p for p in pulls) / len(pulls))
    assert 0.4 < rms < 2.0, pulls


def test_grid_search_on_the_evidence_agrees_with_the_optimizer():
    data = _teacher(seed=1, n_train=120)
    temperatures = np.geomspace(0.01, 0.25, 8)
    lambdas = np.geomspace(0.3, 10.0, 8)
    grid = evidence_search(RenormalizedKernelRegressor("fc", math.inf),
                           {"temperature": temperatures, "lambda1": lambdas},
                           data.x_train.numpy(), data.y_train.numpy())
    fitted = EvidenceMaximizer("fc", math.inf, temperature=0.1, lambda1=1.0).fit(
        data.x_train, data.y_train)
    # The continuous optimum is at least as good as every grid point, and the best grid point is
    # the grid's neighbour of it (within one grid spacing in ln T and ln λ1).
    assert fitted.log_marginal_likelihood_value_ >= grid.best_score - 1e-7
    spacing_t = math.log(temperatures[1] / temperatures[0])
    spacing_l = math.log(lambdas[1] / lambdas[0])
    assert abs(math.log(grid.best_params["temperature"] / fitted.temperature_)) <= spacing_t
    assert abs(math.log(grid.best_params["lambda1"] / fitted.lambda1_)) <= spacing_l


def test_validation_search_and_evidence_select_nearby_points():
    data = _teacher(seed=3, n_train=160)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    # Validation targets carry the same label noise as training targets, so both criteria
    # estimate the same generator (T, λ1).
    grid = {"temperature": np.geomspace(0.01, 0.25, 6), "lambda1": np.geomspace(0.3, 10.0, 6)}
    selection = validation_search(RenormalizedKernelRegressor("fc", math.inf), grid,
                                  x[:100], y[:100], x[100:], y[100:])
    fitted = EvidenceMaximizer("fc", math.inf).fit(x[:100], y[:100])
    best = selection.best_params
    assert len(selection.scores) == 36
    assert selection.best_score == max(score for _, score in selection.scores)
    # 60 validation points resolve λ1 only coarsely: same decade for both criteria.
    assert abs(math.log10(best["lambda1"] / fitted.lambda1_)) < 1.0
    assert abs(math.log10(best["temperature"] / fitted.temperature_)) < 1.0


def test_evidence_maximizer_refuses_bad_options():
    data = _teacher(seed=0, n_train=20)
    with pytest.raises(ValueError, match="optimize"):
        EvidenceMaximizer(optimize=("beta",)).fit(data.x_train, data.y_train)
    with pytest.raises(ValueError, match="bounds"):
        EvidenceMaximizer(bounds=[(1.0, 0.1), (0.1, 1.0)]).fit(data.x_train, data.y_train)
    with pytest.raises(ValueError, match="outside bounds"):
        EvidenceMaximizer(temperature=5.0, bounds=[(0.01, 1.0), (0.1, 10.0)]).fit(
            data.x_train, data.y_train)
    with pytest.raises(ValueError, match="optimizer"):
        EvidenceMaximizer(optimizer="adam").fit(data.x_train, data.y_train)


def test_callable_optimizer_follows_the_scikit_learn_convention():
    data = _teacher(seed=0, n_train=60)
    calls = []

    def optimizer(obj_func, initial_theta, bounds):
        value, gradient = obj_func(initial_theta, eval_gradient=True)
        calls.append((value, gradient.shape))
        return initial_theta, value

    fitted = EvidenceMaximizer(temperature=0.1, lambda1=1.0, optimizer=optimizer).fit(
        data.x_train, data.y_train)
    assert calls and calls[0][1] == (2,)
    assert fitted.temperature_ == pytest.approx(0.1) and fitted.lambda1_ == pytest.approx(1.0)
    assert fitted.log_marginal_likelihood_value_ == pytest.approx(-calls[0][0])


def test_best_readout_priors_matches_the_theory_with_that_fixed_q_bar():
    data = local_teacher(60, 40, image_shape=(1, 8, 8), mask=4, stride=4, noise=0.1, seed=0)
    spec = ArchitectureSpec("lcn", "erf", 4, 4)
    x, y = data.x_train, data.y_train
    baseline = best_readout_priors(spec, x[:40], y[:40], x[40:], y[40:], temperature=0.05)
    assert baseline.validation_loss < baseline.initial_loss
    # The differentiable loss is the theory's ε_g of the infinite-width network with per-patch
    # priors λ1/q_i: an LCN with that fixed Q̄ (and a CNN with the diagonal Q̄) gives the same.
    theory = fit_theory(x[:40], y[:40], spec, math.inf, 0.05, fixed_q_bar=baseline.q)
    assert theory.test_loss(x[40:], y[40:]).loss == pytest.approx(baseline.validation_loss,
                                                                   rel=1e-9)
    cnn = fit_theory(x[:40], y[:40], ArchitectureSpec("cnn", "erf", 4, 4), math.inf, 0.05,
                     fixed_q_bar=torch.diag(torch.tensor(baseline.q)))
    assert cnn.test_loss(x[40:], y[40:]).loss == pytest.approx(baseline.validation_loss,
                                                                rel=1e-9)
    # At q = 1 the loss is the untuned NNGP's.
    nngp = fit_theory(x[:40], y[:40], spec, math.inf, 0.05)
    assert nngp.test_loss(x[40:], y[40:]).loss == pytest.approx(baseline.initial_loss, rel=1e-9)
