"""Synthetic tasks (krenorm.data.synthetic, docs/math/theory.md §1): seeded determinism,
independence of the test set from n_train, and each teacher against an independent evaluation of
its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from krenorm.data import Dataset, fc_teacher, hypercube_task, linear_teacher, local_teacher

SMALL_TASKS = {
    "linear": lambda seed, n: linear_teacher(n, 7, dimension=9, noise=0.1, seed=seed),
    "fc": lambda seed, n: fc_teacher(n, 7, dimension=9, hidden_units=5, noise=0.1, seed=seed),
    "local": lambda seed, n: local_teacher(
        n, 7, image_shape=(2, 9, 9), mask=3, stride=2, channels=3, noise=0.1, seed=seed
    ),
    "hypercube": lambda seed, n: hypercube_task(n, 7, dimension=6, target={(0, 2): 1.0},
                                                noise=0.1, seed=seed),
}


def tensors(data: Dataset) -> list[torch.Tensor]:
    return [data.x_train, data.y_train, data.x_test, data.y_test, *data.teacher.values()]


@pytest.mark.parametrize("task", sorted(SMALL_TASKS))
def test_tasks_are_deterministic_per_seed(task):
    make = SMALL_TASKS[task]
    first, again, other = make(3, 11), make(3, 11), make(4, 11)
    assert all(torch.equal(a, b) for a, b in zip(tensors(first), tensors(again), strict=True))
    assert not torch.equal(first.x_train, other.x_train)
    assert not torch.equal(first.y_train, other.y_train)
    assert first.x_train.dtype == torch.float64 and first.y_train.shape == (11,)


@pytest.mark.parametrize("task", sorted(SMALL_TASKS))
def test_teacher_and_test_set_do_not_depend_on_n_train(task):
    small, large = SMALL_TASKS[task](5, 6), SMALL_TASKS[task](5, 20)
    assert torch.equal(small.x_test, large.x_test) and torch.equal(small.y_test, large.y_test)
    assert torch.equal(small.x_train, large.x_train[:6])  # nested: same stream, longer draw
    # Targets agree to rounding: batched matmuls may sum in a different order for other P.
    torch.testing.assert_close(small.y_train, large.y_train[:6], rtol=0, atol=1e-12)
    for name, weights in small.teacher.items():
        assert torch.equal(weights, large.teacher[name])


def test_linear_teacher_formula_and_noise_level():
    noise = 0.5
    data = linear_teacher(4000, 50, dimension=20, noise=noise, seed=0)
    w = data.teacher["w"]
    torch.testing.assert_close(data.y_test, data.x_test @ w / math.sqrt(20), rtol=0, atol=1e-12)
    residual = data.y_train - data.x_train @ w / math.sqrt(20)
    # Gaussian residuals, n = 4000: SE of the sample std is σ/√(2n) ≈ 0.0056 and of the mean
    # σ/√n ≈ 0.0079; the tolerances below are about 5 standard errors.
    assert abs(float(residual.std()) - noise) < 0.03
    assert abs(float(residual.mean())) < 0.04


def test_fc_teacher_formula_and_prior_scaling():
    data = fc_teacher(12, 5, dimension=8, hidden_units=6, activation="erf", seed=2)
    first, readout = data.teacher["first_layer"], data.teacher["readout"]
    expected = torch.erf(data.x_train @ first.T / math.sqrt(8)) @ readout / math.sqrt(6)
    torch.testing.assert_close(data.y_train, expected, rtol=0, atol=1e-12)
    scaled = fc_teacher(12, 5, dimension=8, hidden_units=6, lambda0=4.0, lambda1=9.0, seed=2)
    torch.testing.assert_close(scaled.teacher["first_layer"], first / 2, rtol=0, atol=1e-15)
    torch.testing.assert_close(scaled.teacher["readout"], readout / 3, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("image_shape", "mask", "stride", "padding"),
    [((1, 10, 10), 4, 1, 0), ((3, 9, 11), (3, 2), 2, 1)],
)
def test_local_teacher_equals_a_conv2d_network(image_shape, mask, stride, padding):
    channels = 4
    data = local_teacher(9, 4, image_shape=image_shape, mask=mask, stride=stride,
                         padding=padding, channels=channels, seed=6)
    filters, readout = data.teacher["filters"], data.teacher["readout"]
    patch_dimension = filters[0].numel()
    n_patches = readout.shape[1]
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        fields = F.conv2d(x, filters, stride=stride, padding=padding) / math.sqrt(patch_dimension)
        assert fields.shape[2] * fields.shape[3] == n_patches
        hidden = torch.erf(fields).flatten(2)  # (P, N, Np), positions row-major like Conv2d
        expected = (hidden * readout).sum(dim=(1, 2)) / math.sqrt(channels * n_patches)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_local_teacher_on_given_images():
    images = (torch.rand(5, 1, 8, 8, dtype=torch.float64),
              torch.rand(3, 1, 8, 8, dtype=torch.float64))
    data = local_teacher(5, 3, mask=3, images=images, seed=1)
    assert torch.equal(data.x_train, images[0]) and data.y_test.shape == (3,)
    with pytest.raises(ValueError, match="pass matching counts"):
        local_teacher(4, 3, mask=3, images=images)


def test_hypercube_inputs_and_targets():
    data = hypercube_task(64, 16, dimension=5, target={(0, 1, 4): 1.0, (2,): -0.5}, seed=0)
    assert set(data.x_train.unique().tolist()) == {-1.0, 1.0}
    x = data.x_train
    torch.testing.assert_close(data.y_train, x[:, 0] * x[:, 1] * x[:, 4] - 0.5 * x[:, 2])

    def majority(inputs: torch.Tensor) -> torch.Tensor:
        return torch.sign(inputs.sum(dim=1))

    voted = hypercube_task(10, 4, dimension=3, target=majority, seed=0)
    assert torch.equal(voted.y_train, torch.sign(voted.x_train.sum(dim=1)))
    assert "majority" in voted.provenance.description


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: hypercube_task(4, 2, dimension=3, target={(0, 3): 1.0}), "distinct indices"),
        (lambda: hypercube_task(4, 2, dimension=3, target={(1, 1): 1.0}), "distinct indices"),
        (lambda: hypercube_task(4, 2, dimension=3, target=lambda x: x), "shape"),
        (lambda: linear_teacher(4, 2, dimension=0), "dimension"),
        (lambda: linear_teacher(4, 2, dimension=3, noise=-1.0), "noise"),
        (lambda: fc_teacher(4, 2, dimension=3, activation="softsign"), "activation"),
        (lambda: fc_teacher(4, 2, dimension=3, lambda0=0.0), "lambda0"),
        (lambda: local_teacher(4, 2, image_shape=(1, 4, 4), mask=5), "larger than"),
        (lambda: linear_teacher(4, 2, dimension=3, seed=-2), "seed"),
    ],
)
def test_invalid_synthetic_requests_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_synthetic_provenance_is_serialisable():
    data = local_teacher(3, 2, image_shape=(1, 6, 6), mask=3, noise=0.2, seed=1)
    record = data.to_dict()
    assert record["provenance"]["source"] is None and record["provenance"]["seed"] == 1
    assert record["provenance"]["parameters"]["mask"] == [3, 3]
    assert record["teacher"] == ["filters", "readout"]
