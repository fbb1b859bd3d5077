"""Patch-AGOP of Conv2d layers by hooks (G = WᵀΔW) against explicit patch Jacobians
(docs/math/features.md §2)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from krenorm.features.agop import brute_force_patch_agop, conv_patches, patch_agop


class ResidualCNN(nn.Module):
    """Circular-padded stem, a residual block (skip path around two convs, the second strided
    and grouped), a strided conv without padding, and a linear readout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular")
        self.block_conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.block_conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.down = nn.Conv2d(4, 6, 2, stride=2, bias=False)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        h = h + self.block_conv2(torch.relu(self.block_conv1(h)))
        h = torch.relu(self.down(h))
        return self.head(h.flatten(1))


class StridedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, stride=1)
        self.conv2 = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.head = nn.Linear(5 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.nn.functional.softplus(self.conv1(x))))
        return self.head(h.flatten(1))


def _model(cls: type[nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls().double()


@pytest.mark.parametrize(
    ("cls", "shape"), [(StridedCNN, (4, 1, 7, 7)), (ResidualCNN, (3, 2, 8, 8))]
)
def test_hook_agop_equals_patch_jacobian_agop(cls, shape):
    model = _model(cls, seed=1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hooks = patch_agop(model, x, batch_size=2)
    for name, result in hooks.items():
        reference = brute_force_patch_agop(model, name, x)
        assert result.agop.shape == reference.shape
        scale = reference.abs().max()
        assert scale > 0
        error = (result.agop - reference).abs().max() / scale
        assert error < 1e-10, f"{name}: relative error {error:.2e}"


def test_residual_skip_path_is_excluded():
    """The AGOP of a conv inside a residual block must not include the gradient through the skip
    path: it differs from the gradient outer product with respect to the block input's patches."""
    model = _model(ResidualCNN, seed=3)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    conv = model.block_conv1
    hooked = patch_agop(model, x, layers="block_conv1")["block_conv1"].matrix
    # Gradient with respect to the block input h (which also feeds the skip path), contracted
    # back onto patches: this is what an AGOP that wrongly kept the skip path would see.
    stored = {}
    handle = conv.register_forward_hook(lambda m, i, o: stored.setdefault("input", i[0]))
    outputs = model(x)
    handle.remove()
    h = stored["input"]
    total = torch.zeros_like(hooked)
    for o in range(outputs.shape[1]):
        (grad_h,) = torch.autograd.grad(outputs[:, o].sum(), h, retain_graph=True)
        patches = conv_patches(conv, grad_h)
        total += torch.einsum("brd,bre->de", patches, patches)
    assert (hooked - total / x.shape[0]).abs().max() > 1e-3 * hooked.abs().max()


def test_per_output_loop_and_vmap_agree_and_streaming_matches_tensor_input():
    model = _model(StridedCNN, seed=5)
    x = torch.randn(6, 1, 7, 7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    vectorized = patch_agop(model, x, batch_size=6)
    looped = patch_agop(model, x, batch_size=4, vectorize=False)
    loader = DataLoader(TensorDataset(x, torch.zeros(6)), batch_size=4)
    streamed = patch_agop(model, loader, keep_per_image=True)
    for name in vectorized:
        assert torch.allclose(vectorized[name].agop, looped[name].agop, rtol=1e-12, atol=0)
        assert torch.allclose(vectorized[name].agop, streamed[name].agop, rtol=1e-12, atol=0)
        per_image = streamed[name].per_image_output_covariance
        assert per_image.shape[0] == 6
        assert torch.allclose(per_image.mean(0), streamed[name].output_covariance, rtol=1e-12)


def test_gaussian_probe_estimator_is_unbiased():
    """E over Gaussian probes g of (Jᵀg)(Jᵀg)ᵀ is JᵀJ. Averaging 8 independent runs of 64 probes
    per image, each entry's Monte-Carlo standard error is at most ~√(2/512)·‖G‖ ≈ 0.06‖G‖ (the
    variance of a quadratic form in Gaussians is at most twice its squared mean), so a 0.25
    relative Frobenius tolerance is several standard errors wide yet fails for a biased or
    mis-scaled estimator (e.g. a missing 1/n_probes is off by 64×)."""
    model = _model(StridedCNN, seed=7)
    x = torch.randn(5, 1, 7, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    exact = patch_agop(model, x)
    runs = [patch_agop(model, x, estimator="probes", n_probes=64, seed=s) for s in range(8)]
    for name, result in exact.items():
        estimate = torch.stack([run[name].agop for run in runs]).mean(0)
        error = (estimate - result.agop).norm() / result.agop.norm()
        assert error < 0.25, f"{name}: relative error {error:.3f}"


def test_invalid_layer_and_estimator_are_refused():
    model = _model(StridedCNN, seed=9)
    x = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="no Conv2d named"):
        patch_agop(model, x, layers="head")
    with pytest.raises(ValueError, match="estimator"):
        patch_agop(model, x, estimator="sampled")
    with pytest.raises(ValueError, match="shape"):
        patch_agop(model, torch.zeros(7, 7))
    model.unused = nn.Conv2d(1, 1, 1).double()
    with pytest.raises(ValueError, match="never called"):
        patch_agop(model, x, layers=["conv1", "unused"])
