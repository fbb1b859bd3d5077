"""RFM, ConvRFM and Deep ConvRFM estimators (docs/math/features.md §5, "Deep ConvRFM")."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from krenorm.features.convrfm import ConvRFMClassifier
from krenorm.features.deep_convrfm import DeepConvRFMClassifier, sample_filters
from krenorm.features.rfm import RFMClassifier, RFMRegressor
from krenorm.features.synthetic import bars_task, star_task


@pytest.fixture(scope="module")
def star_data():
    return star_task(50, seed=1), star_task(50, seed=2), star_task(300, seed=3)


def test_convrfm_improves_over_identity_metric_on_star_task(star_data):
    """50 training images, validation on a separate draw of 50, test on 300 (docs/math/features.md:
    one-layer CNTK ≈ 78% → ≈ 95% in the reference). Each accuracy has a binomial standard error
    of at most √(0.25/300) ≈ 0.029; requiring a gain of 0.08 (observed ≈ 0.13) is ~2.8 standard
    errors of a paired difference below the observed gain and fails if the metric update does
    nothing (gain ≈ 0)."""
    train, validation, test = star_data
    accuracies = {}
    for rounds in (0, 1):
        estimator = ConvRFMClassifier(
            kernel="ntk", mask=7, n_rounds=rounds, ridge=(1e-3, 1e-1), refit=False, dtype="float32"
        ).fit(train.images, train.labels, validation.images, validation.labels)
        accuracies[rounds] = estimator.score(test.images, test.labels)
        assert estimator.best_round_ == rounds
        # Selection used the validation split: its score is the selected predictor's accuracy there.
        assert np.isclose(
            estimator.validation_score_, estimator.score(validation.images, validation.labels)
        )
    message = (
        f"star task, 50 training images, one-layer CNTK (mask 7): test accuracy with M = I "
        f"{accuracies[0]:.3f}, after one AGOP update {accuracies[1]:.3f}"
    )
    assert accuracies[1] >= accuracies[0] + 0.08, message
    assert accuracies[0] > 0.55, message  # the fixed kernel is above chance: the task is learnable


def test_rfm_learns_the_relevant_coordinates():
    """y = x0·x1 on 10-dimensional Gaussian inputs: the learned metric concentrates on
    coordinates 0 and 1 and the validation error drops (docs/math/features.md RFM)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 10, generator=generator, dtype=torch.float64)
    y = x[:, 0] * x[:, 1]
    estimator = RFMRegressor(kernel="laplace", n_rounds=3, ridge=1e-3, bandwidth=5.0).fit(x, y)
    rounds = estimator.history_.rounds
    assert rounds[-1].validation_score > 2 * rounds[0].validation_score  # −MSE: at least halved
    metric = estimator.history_.metrics[-1]
    top = torch.linalg.eigh(metric).eigenvectors[:, -2:]
    mass = float((top[:2] ** 2).sum() / 2)
    assert mass > 0.9, f"share of the top-2 eigenvectors on coordinates 0, 1: {mass:.3f}"


def test_sklearn_api_round_trip():
    estimator = RFMClassifier(kernel="gaussian", bandwidth=(1.0, 3.0), n_rounds=1)
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    copy.set_params(ridge=0.5)
    assert copy.ridge == 0.5
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = np.where(x[:, 0] > 0, "pos", "neg")
    fitted = copy.fit(x, labels)
    assert set(fitted.predict(x)) <= {"pos", "neg"}
    assert fitted.bandwidth_ in (1.0, 3.0)
    assert fitted.score(x, labels) > 0.8
    assert len(fitted.history_.rounds) == 2
    with pytest.raises(ValueError, match="not fitted"):
        RFMClassifier().predict(x)
    with pytest.raises(ValueError, match="kernel"):
        RFMClassifier(kernel="ntk").fit(x, labels)


def test_deep_convrfm_levels_and_sampled_filters():
    data = bars_task(60, seed=4)
    estimator = DeepConvRFMClassifier(
        n_levels=2, n_filters=6, mask=3, n_rounds=1, ridge=1e-2, agop_samples=30
    ).fit(data.images, data.labels)
    assert [level.input_shape for level in estimator.levels_] == [(1, 16, 16), (6, 14, 14)]
    for level in estimator.levels_:
        assert np.isclose(sum(level.metric_eigenvalues), level.metric.shape[0])  # trace = d
    assert estimator.transform(data.images[:3]).shape == (3, 6, 14, 14)
    assert estimator.predict(data.images[:5]).shape == (5,)
    metric = estimator.levels_[0].metric
    filters = sample_filters(metric, 4000, (1, 3, 3), seed=0).reshape(4000, -1)
    covariance = filters.T @ filters / 4000
    # Sample covariance of 4000 Gaussian filters: entrywise standard error ≈ ‖M‖/√4000 ≈ 0.016‖M‖.
    assert (covariance - metric).abs().max() < 0.1 * metric.abs().max()


def test_deep_convrfm_per_level_patch_shapes():
    """Issue 16: a (1, 14) row mask at level 2 (on level 1's 14×14 maps) failed when one patch
    shape was forced on every level. Per-level lists give each level its own geometry; the level
    metric has that level's patch dimension, and a list of the wrong length is refused."""
    data = bars_task(40, seed=4)
    estimator = DeepConvRFMClassifier(
        n_levels=2, n_filters=4, mask=[3, (1, 14)], stride=[1, 1], n_rounds=1, ridge=1e-2,
        agop_samples=20,
    ).fit(data.images, data.labels)
    assert [level.input_shape for level in estimator.levels_] == [(1, 16, 16), (4, 14, 14)]
    assert estimator.levels_[0].metric.shape == (9, 9)
    assert estimator.levels_[1].metric.shape == (4 * 14, 4 * 14)  # c·q_h·q_w = 4·1·14
    assert estimator.final_.geometry().patch_shape(4) == (4, 1, 14)
    assert estimator.predict(data.images[:3]).shape == (3,)
    with pytest.raises(ValueError, match="one per level"):
        DeepConvRFMClassifier(n_levels=3, mask=[3, 3]).fit(data.images, data.labels)
