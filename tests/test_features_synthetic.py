"""Seeded synthetic tasks of docs/math/features.md ("Synthetic tasks where fixed convolutional
kernels fail")."""

import math

import pytest
import torch
import torch.nn.functional as F

from krenorm.features.synthetic import (
    bars_task,
    local_signal_task,
    noisy_frame_task,
    star_glyph,
    star_task,
)


def _best_match(images: torch.Tensor, glyph: torch.Tensor) -> torch.Tensor:
    """Largest correlation of each image (P, 1, H, W) with the glyph over all offsets."""
    return F.conv2d(images, glyph[None, None]).flatten(1).amax(1)


def test_star_task_shapes_balance_seeds_and_glyph():
    task = star_task(40, seed=3)
    assert task.images.shape == (40, 3, 32, 32)
    assert int(task.labels.sum()) == 20
    assert torch.equal(task.images, star_task(40, seed=3).images)
    assert not torch.equal(task.images, star_task(40, seed=4).images)
    glyph = star_glyph()
    assert (
        int(glyph.sum()) == 25 and torch.equal(glyph, glyph.flip(0)) and torch.equal(glyph, glyph.T)
    )
    clean = star_task(40, seed=3, noise_std=1e-9)
    positives, negatives = clean.labels == 1, clean.labels == 0
    for channel in (0, 1):
        matches = _best_match(clean.images[:, channel : channel + 1], glyph)
        assert torch.allclose(
            matches[positives], torch.full_like(matches[positives], 25.0), atol=1e-6
        )
        assert matches[negatives].abs().max() < 1e-6
    assert clean.images[:, 2].abs().max() < 1e-7  # the star lives in channels 0 and 1 only
    assert task.to_dict()["class_counts"] == [20, 20]


def test_bars_task_orientation_by_class():
    clean = bars_task(30, seed=5, noise_std=1e-9)
    assert clean.images.shape == (30, 1, 16, 16)
    horizontal = _best_match(clean.images, torch.ones(3, 7))
    vertical = _best_match(clean.images, torch.ones(7, 3))
    assert torch.allclose(horizontal[clean.labels == 0], torch.tensor(21.0), atol=1e-6)
    assert torch.allclose(vertical[clean.labels == 1], torch.tensor(21.0), atol=1e-6)
    assert (vertical[clean.labels == 0] < 10).all() and (horizontal[clean.labels == 1] < 10).all()


def test_local_signal_task_row_and_noise_scale():
    task = local_signal_task(2000, seed=6, sigma=2.0)
    assert task.images.shape == (2000, 1, 16, 32)
    signs = 2 * task.labels.to(torch.float32) - 1
    row_is_signal = (task.images[:, 0] - signs[:, None, None] / math.sqrt(32)).abs().amax(-1) == 0
    assert (row_is_signal.sum(1) == 1).all()
    noise = task.images[:, 0][~row_is_signal]
    # 2000·15·32 ≈ 10⁶ noise entries: the sample variance has relative standard error ≈ 0.0014.
    assert abs(float(noise.var()) / (2.0 / 32) - 1) < 0.01


def test_noisy_frame_pastes_digits():
    digits = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    labels = torch.arange(5)
    task = noisy_frame_task(digits, labels, seed=8)
    assert task.images.shape == (5, 1, 42, 42) and torch.equal(task.labels, labels)
    windows = task.images.unfold(2, 28, 1).unfold(3, 28, 1)  # (5, 1, 15, 15, 28, 28)
    for index in range(5):
        exact = (windows[index, 0] == digits[index, 0]).flatten(-2).all(-1)
        assert int(exact.sum()) == 1
    with pytest.raises(ValueError, match="frame_size"):
        noisy_frame_task(digits, labels, seed=0, frame_size=20)


def test_noisy_frame_mnist_from_the_data_loader():
    from krenorm.data import DatasetUnavailableError
    from krenorm.features.synthetic import noisy_frame_mnist

    try:
        task = noisy_frame_mnist(20, seed=1, allow_fetch=False)
    except DatasetUnavailableError as error:
        pytest.skip(f"MNIST is not available offline here: {error}")
    assert task.images.shape == (20, 1, 42, 42)
    assert task.to_dict()["class_counts"] == [2] * 10
    # Each frame holds a 28×28 window with every pixel in [0, 1]: the pasted digit (a window of
    # N(0, 0.25) noise leaves [0, 1] somewhere with overwhelming probability).
    windows = task.images.unfold(2, 28, 1).unfold(3, 28, 1)[:, 0]  # (20, 15, 15, 28, 28)
    in_range = ((windows >= 0) & (windows <= 1)).flatten(-2).all(-1)
    assert in_range.flatten(1).any(1).all()
