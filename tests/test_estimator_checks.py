"""scikit-learn's own estimator checks (`parametrize_with_checks`) for every estimator of the
package, plus the contract points scikit-learn's generic checks cannot reach (image input,
binary decision_function shape, NaN at predict).

Justified expected failures (ConvRFM only): scikit-learn's generic checks feed 2-D arrays
(n_samples, n_features); ConvRFM's input is images (P, c, H, W) — a 2-D array has no patch
geometry — so these checks fail on the message "ConvRFM… takes images X of shape (P, c, H, W)".
scikit-learn has no tag for 4-D input, so they are listed here, one reason for all. The
properties they would test are checked on images in `test_convrfm_contract_on_images`.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from krenorm.features import ConvRFMClassifier, ConvRFMRegressor, RFMClassifier, RFMRegressor
from krenorm.theory.estimator import RenormalizedKernelRegressor

_IMAGES_ONLY = ("ConvRFM takes images (P, c, H, W); scikit-learn's generic check feeds a 2-D "
                "array, refused with a message saying images are required")
_CONV_SHARED = (
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimators_dtypes", "check_estimators_fit_returns_self", "check_estimators_nan_inf",
    "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_predict1d",
    "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_n_features_in", "check_n_features_in_after_fitting", "check_pipeline_consistency",
    "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
    "check_supervised_y_2d",
)
EXPECTED_FAILURES = {
    "ConvRFMClassifier": dict.fromkeys(
        (*_CONV_SHARED, "check_classifier_data_not_an_array", "check_classifiers_classes",
         "check_classifiers_train"), _IMAGES_ONLY),
    "ConvRFMRegressor": dict.fromkeys(
        (*_CONV_SHARED, "check_fit2d_1sample", "check_regressor_data_not_an_array",
         "check_regressor_multioutput", "check_regressors_int",
         "check_regressors_no_decision_function", "check_regressors_train"), _IMAGES_ONLY),
}

ESTIMATORS = [
    RenormalizedKernelRegressor(),
    RenormalizedKernelRegressor(width=float("inf")),
    RFMRegressor(n_rounds=1, agop_samples=50),
    RFMClassifier(n_rounds=1, agop_samples=50),
    ConvRFMClassifier(n_rounds=1, agop_samples=50),
    ConvRFMRegressor(n_rounds=1, agop_samples=50),
]


@parametrize_with_checks(
    ESTIMATORS,
    expected_failed_checks=lambda estimator: EXPECTED_FAILURES.get(type(estimator).__name__, {}),
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 6, 6))
    return x, np.where(x[:, 0, 2:4, 2:4].sum((1, 2)) > 0, 1, 0)


def test_convrfm_contract_on_images():
    """What the listed expected failures would check, on images: fit returns self, clone,
    pickle round trip, NotFittedError, n_features_in_, NaN refused, 2-D refused with advice."""
    x, y = _images(40, 0)
    estimator = ConvRFMClassifier(mask=3, n_rounds=1, agop_samples=50)
    with pytest.raises(NotFittedError):
        estimator.predict(x)
    assert estimator.fit(x, y) is estimator
    assert estimator.n_features_in_ == 1
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict(x), estimator.predict(x))
    assert clone(estimator).get_params() == estimator.get_params()
    assert estimator.score(x, y) > 0.8
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimator.predict(bad)
    with pytest.raises(ValueError, match=r"images X of shape \(P, c, H, W\)"):
        estimator.predict(x.reshape(40, -1))
    with pytest.raises(ValueError, match=r"images X of shape \(P, c, H, W\).*RFMClassifier"):
        ConvRFMClassifier().fit(x.reshape(40, -1), y)


def test_binary_decision_function_is_one_column_and_roc_auc_works():
    """scikit-learn's convention: (n,) for two classes, positive where classes_[1] wins."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    y = np.where(x[:, 0] > 0, "pos", "neg")
    estimator = RFMClassifier(n_rounds=1, agop_samples=50).fit(x, y)
    scores = estimator.decision_function(x)
    assert scores.shape == (60,)
    np.testing.assert_array_equal(estimator.classes_[(scores > 0).astype(int)],
                                  estimator.predict(x))
    assert cross_val_score(RFMClassifier(n_rounds=1, agop_samples=50), x, y, cv=3,
                           scoring="roc_auc").mean() > 0.8
    three = RFMClassifier(n_rounds=0).fit(x, np.digitize(x[:, 0], [-0.5, 0.5]))
    assert three.decision_function(x).shape == (60, 3)


def test_rfm_predict_refuses_nan():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    estimator = RFMRegressor(n_rounds=1, agop_samples=50).fit(x, x[:, 0])
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimator.predict(x)


def test_grid_search_with_numpy_integer_masks():
    """GridSearchCV hands numpy integers (np.int64) from a numpy grid; mask=True is refused."""
    x, y = _images(24, 3)
    search = GridSearchCV(RenormalizedKernelRegressor("cnn", width=20.0, mask=3, stride=3),
                          {"mask": np.array([2, 3])}, cv=2).fit(x, y.astype(float) * 2 - 1)
    assert int(search.best_params_["mask"]) in (2, 3)
    with pytest.raises(ValueError, match="mask must be an int or a pair of ints"):
        RenormalizedKernelRegressor("cnn", mask=True).fit(x, y.astype(float))
