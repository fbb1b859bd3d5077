"""float32 RFM / ConvRFM end to end (docs/math/features.md §3, "ConvRFM iteration"): the PSD
check of metric.psd_eigh is tied to the dtype's rounding."""

import pytest
import torch

from krenorm.features.convrfm import ConvRFMClassifier
from krenorm.features.metric import negative_eigenvalue_tolerance, psd_eigh
from krenorm.features.rfm import RFMRegressor
from krenorm.features.synthetic import star_task


def test_psd_tolerance_scales_with_dtype_and_still_refuses_negative_matrices():
    assert negative_eigenvalue_tolerance(27, torch.float64) == 1e-8
    assert negative_eigenvalue_tolerance(27, torch.float32) == pytest.approx(64 * 27 * 2**-23)
    # A rank-deficient PSD Gram in float32: its zero eigenvalues come out at ±ε·λ_max.
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(49, 5, generator=generator)
    gram = factor @ factor.T
    eigenvalues, _ = psd_eigh(gram)
    assert float(eigenvalues.min()) >= 0
    # A genuinely indefinite matrix (relative eigenvalue −1e-2) is refused in both dtypes.
    indefinite = torch.diag(torch.tensor([1.0, 0.5, -1e-2]))
    for dtype in (torch.float32, torch.float64):
        with pytest.raises(ValueError, match="not positive semi-definite"):
            psd_eigh(indefinite.to(dtype))


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_convrfm_float32_matches_float64(kernel):
    """Three metric updates in float32 used to crash ("matrix is not positive semi-definite",
    relative eigenvalue −2e-8 to −6e-8). Now they run, and the learned metric agrees with float64
    to float32 accuracy amplified by three rounds (relative Frobenius difference < 1e-3; observed
    3.7e-6 for both kernels)."""
    task = star_task(60, seed=1)
    metrics = {}
    for dtype in ("float32", "float64"):
        estimator = ConvRFMClassifier(
            kernel=kernel, mask=7, n_rounds=3, ridge=1e-1, dtype=dtype
        ).fit(task.images, task.labels)
        assert estimator.metric_.dtype == getattr(torch, dtype)
        metrics[dtype] = estimator.history_.metrics[-1].to(torch.float64)
    difference = (metrics["float32"] - metrics["float64"]).norm() / metrics["float64"].norm()
    assert float(difference) < 1e-3


def test_rfm_float32_runs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=generator)
    y = x[:, 0] * x[:, 1]
    estimator = RFMRegressor(kernel="gaussian", n_rounds=2, bandwidth=5.0, dtype="float32")
    estimator.fit(x, y)
    assert estimator.predict(x[:5]).dtype.name == "float32"
