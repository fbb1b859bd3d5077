"""The depth-L convolutional NNGP as a ConvRFM kernel (docs/math/features.md §6)."""

from __future__ import annotations

import math

import pytest
import torch

from krenorm.features import ConvRFMClassifier
from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.features.deep_conv_kernels import DeepNNGPPatchKernel, deep_geometries
from krenorm.kernels.deep import deep_local_cross_blocks, deep_local_gram
from krenorm.kernels.patches import PatchGeometry

torch.manual_seed(0)
X = torch.randn(6, 2, 8, 8, dtype=torch.float64)
Z = torch.randn(4, 2, 8, 8, dtype=torch.float64)
FIRST = PatchGeometry(3, 1, 0)
LAYERS = (FIRST, PatchGeometry(2, 2, 0), PatchGeometry(3, 1, 1))


def _random_metric(d: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_identity_metric_is_the_deep_nngp(readout: str) -> None:
    kernel = DeepNNGPPatchKernel(LAYERS, readout)
    eye = torch.eye(kernel.dimension(X), dtype=torch.float64)
    blocks = deep_local_cross_blocks(X, Z, LAYERS, "relu", (1.0, 1.0, 1.0))
    d = blocks.shape[0]
    reference = (torch.einsum("iiab->ab", blocks) / d if readout == "flatten"
                 else blocks.sum((0, 1)) / d**2)
    assert torch.allclose(kernel.gram(X, Z, eye), reference, rtol=0, atol=1e-12)
    square = deep_local_cross_blocks(X, X, LAYERS, "relu", (1.0, 1.0, 1.0))
    reference = (torch.einsum("iiab->ab", square) / d if readout == "flatten"
                 else square.sum((0, 1)) / d**2)
    assert torch.allclose(kernel.gram(X, None, eye), reference, rtol=0, atol=1e-12)


def test_depth_one_is_the_one_layer_convrfm_kernel() -> None:
    metric = _random_metric(FIRST.patch_dimension(2))
    deep = DeepNNGPPatchKernel((FIRST,))
    one = MahalanobisPatchKernel("nngp", "aligned", FIRST)
    assert torch.allclose(deep.gram(X, Z, metric), one.gram(X, Z, metric), rtol=0, atol=1e-12)
    assert torch.allclose(deep.gram(X, None, metric), one.gram(X, None, metric),
                          rtol=0, atol=1e-12)
    alpha = torch.randn(Z.shape[0], 2, dtype=torch.float64)
    assert torch.allclose(deep.agop(X, Z, alpha, metric), one.agop(X, Z, alpha, metric),
                          rtol=1e-9, atol=1e-12)


def test_metric_is_a_linear_map_of_the_first_layer_patches() -> None:
    """M = R Rᵀ in the first layer equals the plain NNGP of images whose first-layer patches are
    Rᵀp: with a 1×1 first layer that is a channel mixing of the images by Rᵀ."""
    first = PatchGeometry(1, 1, 0)
    layers = (first, PatchGeometry(2, 2, 0), PatchGeometry(2, 1, 0))
    g = torch.Generator().manual_seed(3)
    r = torch.randn(2, 2, generator=g, dtype=torch.float64)
    mixed_x = torch.einsum("ck,pchw->pkhw", r, X)
    mixed_z = torch.einsum("ck,pchw->pkhw", r, Z)
    kernel = DeepNNGPPatchKernel(layers, "gap")
    expected = deep_local_gram(mixed_x, mixed_z, layers, "relu", (1.0,) * 3, readout="gap")
    assert torch.allclose(kernel.gram(X, Z, r @ r.T), expected, rtol=0, atol=1e-12)


def test_metric_matches_a_monte_carlo_network() -> None:
    """Depth 2, flatten readout: the NNGP with metric M against the empirical kernel of wide
    random ReLU CNNs whose first layer reads Lᵀp (tolerance: 4 Monte-Carlo standard errors + 1 %,
    finite-width bias O(1/width))."""
    first = PatchGeometry(2, 2, 0)
    layers = (first, PatchGeometry(2, 2, 0))
    x = X[:2, :, :4, :4]
    d = first.patch_dimension(2)
    metric = _random_metric(d)
    exact = DeepNNGPPatchKernel(layers).gram(x, None, metric)[0, 1].item()
    factor = torch.linalg.cholesky(metric)  # M = L Lᵀ
    patches = first.patches(x) @ factor / math.sqrt(d)  # (2, 4, d)
    g = torch.Generator().manual_seed(5)
    width, samples = 256, 200
    values = []
    for _ in range(samples):
        w1 = torch.randn(d, width, generator=g, dtype=torch.float64)
        h1 = torch.relu(patches @ w1)  # (2, 4 positions, width)
        w2 = torch.randn(4, width, width, generator=g, dtype=torch.float64)
        h2 = torch.relu(torch.einsum("ptc,tcw->pw", h1, w2) / math.sqrt(4 * width))
        values.append((h2[0] @ h2[1] / width).item())
    mean = sum(values) / samples
    stderr = (sum((v - mean) ** 2 for v in values) / (samples - 1) / samples) ** 0.5
    # Measured: |Δ| ≈ 0.8 SE; M = I or a trace-matched isotropic M are off by > 10 SE.
    assert abs(mean - exact) < 4 * stderr + 0.01 * abs(exact)


def test_convrfm_with_deep_nngp_fits_and_refuses_misuse() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64)
    y = (x[:, 0, 2:5, 2:5].sum((1, 2)) > 0).long().numpy()
    model = ConvRFMClassifier(kernel="deep-nngp", mask=2, stride=2, deep_layers=(2,),
                              n_rounds=1, ridge=(1e-3, 1e-1), agop_samples=20)
    model.fit(x, y)
    assert model.kernel_.depth == 2
    assert model.metric_.shape == (4, 4)
    assert (model.predict(x) == y).mean() > 0.8
    with pytest.raises(ValueError, match="deep_layers needs kernel='deep-nngp'"):
        ConvRFMClassifier(kernel="nngp", deep_layers=(2,)).fit(x, y)
    with pytest.raises(ValueError, match="readout"):
        ConvRFMClassifier(kernel="deep-nngp", readout="max").fit(x, y)
    with pytest.raises(ValueError, match=r"deep_layers\[0\]"):
        deep_geometries(FIRST, ("two",))  # type: ignore[arg-type]


def test_relu_kernel_partials_match_finite_differences() -> None:
    from krenorm.kernels.activations import get_activation

    act = get_activation("relu")
    a = torch.tensor([1.3, 0.7], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.4, 0.7], dtype=torch.float64, requires_grad=True)  # ρ = 1 in entry 2
    c = torch.tensor([0.9, 0.7], dtype=torch.float64, requires_grad=True)
    act.kernel(a, b, c).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    step = 1e-6
    for tensor, grad in ((a, a.grad), (b, b.grad), (c, c.grad)):
        shift = torch.zeros(2, dtype=torch.float64)
        shift[0] = step
        with torch.no_grad():
            args = [t + shift if t is tensor else t for t in (a, b, c)]
            minus = [t - shift if t is tensor else t for t in (a, b, c)]
            numeric = (act.kernel(*args) - act.kernel(*minus))[0] / (2 * step)
        assert abs(numeric - grad[0]) < 1e-8
    assert b.grad[1] == pytest.approx(0.5)  # ∂κ/∂b = (π − 0)/(2π) at ρ = 1


def test_deep_convrfm_levels_use_the_multi_layer_kernel() -> None:
    from krenorm.features import DeepConvRFMClassifier

    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 1, 12, 12, generator=g, dtype=torch.float64)
    y = (x[:, 0, 4:8, 4:8].sum((1, 2)) > 0).long().numpy()
    model = DeepConvRFMClassifier(n_levels=2, n_filters=4, kernel="deep-nngp", mask=[2, 1],
                                  stride=[2, 1], deep_layers=(2,), n_rounds=1,
                                  ridge=(1e-3, 1e-1), agop_samples=20)
    model.fit(x, y)
    assert model.final_.kernel_.depth == 2
    assert model.final_.kernel_.geometries[0].mask == (1, 1)
    assert model.levels_[1].input_shape == (4, 6, 6)
    assert model.predict(x).shape == (40,)


def test_deep_nngp_convrfm_in_float32() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = (x[:, 0, 2:5, 2:5].sum((1, 2)) > 0).long().numpy()
    model = ConvRFMClassifier(kernel="deep-nngp", mask=2, stride=2, deep_layers=(2,),
                              n_rounds=2, ridge=(1e-3, 1e-1), agop_samples=20, dtype="float32")
    model.fit(x, y)
    assert model.metric_.dtype == torch.float32
    assert model.decision_function(x).dtype.name == "float32"
    double = ConvRFMClassifier(kernel="deep-nngp", mask=2, stride=2, deep_layers=(2,),
                               n_rounds=0, ridge=1e-1).fit(x.double(), y)
    single = ConvRFMClassifier(kernel="deep-nngp", mask=2, stride=2, deep_layers=(2,),
                               n_rounds=0, ridge=1e-1, dtype="float32").fit(x, y)
    assert abs(double.decision_function(x) - single.decision_function(x)).max() < 1e-3
