"""The scikit-learn estimator: conventions, GridSearchCV, agreement with the functional API."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from krenorm.architectures import ArchitectureSpec
from krenorm.theory import RenormalizedKernelRegressor, fit_theory


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 6, 6))
    y = np.tanh(x[:, 0, :3].mean((1, 2)) * 3) + 0.05 * rng.standard_normal(n)
    return x, y


def test_fit_predict_matches_functional_api():
    x, y = _data()
    model = RenormalizedKernelRegressor("cnn", width=20, temperature=0.05, mask=3, stride=3)
    model.fit(x[:40], y[:40])
    fit = fit_theory(torch.as_tensor(x[:40]), torch.as_tensor(y[:40]),
                     ArchitectureSpec("cnn", "erf", 3, 3), 20, 0.05)
    mean, std = model.predict(x[40:], return_std=True)
    prediction = fit.predict(torch.as_tensor(x[40:]))
    np.testing.assert_allclose(mean, prediction.mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(std**2, prediction.variance.numpy(), atol=1e-12)
    assert model.q_bar_.shape == (4, 4)
    assert model.diagnostics_["converged"]
    loss, bias2, variance = model.test_loss(x[40:], y[40:])
    assert loss == pytest.approx(bias2 + variance)
    assert np.isfinite(model.log_evidence_)
    assert isinstance(model.score(x[40:], y[40:]), float)


def test_clone_pickle_and_grid_search_over_temperature():
    x, y = _data(n=60)
    model = RenormalizedKernelRegressor("fc", width=30, temperature=0.1)
    assert clone(model).get_params() == model.get_params()
    search = GridSearchCV(model, {"temperature": [0.01, 0.1, 1.0], "lambda1": [0.5, 2.0]}, cv=3)
    search.fit(x, y)
    assert search.best_params_["temperature"] in (0.01, 0.1, 1.0)
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_allclose(restored.predict(x[:5]), search.best_estimator_.predict(x[:5]))
    assert isinstance(search.best_estimator_.q_bar_, float)


def test_n_outputs_is_checked_and_lcn_q_bar_is_a_vector():
    x, y = _data()
    with pytest.raises(ValueError, match="n_outputs"):
        RenormalizedKernelRegressor(n_outputs=2).fit(x, y)
    lcn = RenormalizedKernelRegressor("lcn", width=20, temperature=0.05, mask=3, stride=3).fit(x, y)
    assert lcn.q_bar_.shape == (4,)


def test_theory_cli_reports_the_curvature_of_each_kind_of_saddle():
    # FC + ReLU: a saddle in (Q̄, Q), one Hessian eigenvalue of each sign; CNN: a minimum.
    from typer.testing import CliRunner

    from krenorm.cli import app
    from krenorm.data import DatasetUnavailableError, load_dataset

    try:
        load_dataset("mnist", n_train=40, n_test=40, allow_fetch=False)
    except DatasetUnavailableError as error:
        pytest.skip(f"MNIST is not available offline here: {error}")
    common = ["theory", "--n-train", "40", "--n-test", "40", "--width", "10"]
    relu = CliRunner().invoke(app, [*common, "--arch", "fc", "--activation", "relu"])
    assert relu.exit_code == 0, relu.output
    text = " ".join(relu.output.split())  # rich wraps long lines
    assert "Hessian eigenvalues in (Q̄, Q) = (-" in text and "a saddle as expected" in text, text
    cnn = CliRunner().invoke(app, [*common, "--arch", "cnn"])
    assert cnn.exit_code == 0, cnn.output
    text = " ".join(cnn.output.split())
    assert float(text.split("min Hessian eigenvalue=")[1].split()[0]) > 0, text
