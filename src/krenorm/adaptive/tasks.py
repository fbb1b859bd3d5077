"""Tasks of the adaptive lens (docs/math/adaptive.md §5), as krenorm.data `Dataset`s with vector
inputs (P, D). `teacher["directions"]` (k, D) holds the unit teacher directions where one exists.

    teacher–student linear   x ~ N(0, I_D), y = w·x/√D (krenorm.data.linear_teacher)
    Ising spins              x uniform on {±1}^D, y = sign(w·x), w ~ N(0, I_D)
    Hermite single index     x ~ N(0, I_D), z = x·e1, y = He1(z) − 0.1 He3(z) = z − 0.1(z³ − 3z)
                             (probabilists' Hermite polynomials; teacher direction e1; D = 30)
    XOR                      x ~ N(0, I_D), y = sign(x1 x2) (teacher plane e1, e2)
    MNIST 0 vs 3             krenorm.data.load_dataset('mnist', classes=(0, 3)), images flattened
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from krenorm.data import Dataset, hypercube_task, linear_teacher, load_dataset
from krenorm.data.synthetic import assemble_synthetic

TASK_NAMES: tuple[str, ...] = ("teacher", "ising", "hermite", "xor", "mnist-0-3")


def _check_sizes(n_train: int, n_test: int, input_dim: int) -> None:
    for name, value, minimum in (
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("input_dim", input_dim, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def _gaussian_inputs(count: int, input_dim: int, generator: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(generator.standard_normal((count, input_dim)))


def _synthetic(
    name: str, description: str, x_train: torch.Tensor, y_train: torch.Tensor,
    x_test: torch.Tensor, y_test: torch.Tensor, seed: int, steps: Sequence[str],
    directions: torch.Tensor,
) -> Dataset:
    sizes = {"n_train": x_train.shape[0], "n_test": x_test.shape[0],
             "input_dim": x_train.shape[1]}
    return assemble_synthetic(name, description, (x_train, x_test), (y_train, y_test), seed,
                              tuple(steps), sizes, {"directions": directions})


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return (vector / vector.norm()).reshape(1, -1)


def teacher_task(
    n_train: int, n_test: int, input_dim: int, noise: float = 0.0, seed: int = 0
) -> Dataset:
    """Linear teacher–student task y = w·x/√D (krenorm.data.linear_teacher) with its direction."""
    _check_sizes(n_train, n_test, input_dim)
    data = linear_teacher(n_train, n_test, input_dim, noise=noise, seed=seed)
    return dataclasses.replace(
        data, teacher={**data.teacher, "directions": _unit(data.teacher["w"])}
    )


def ising_task(n_train: int, n_test: int, input_dim: int, seed: int = 0) -> Dataset:
    """Linearly separable Ising-spin task: x ∈ {±1}^D, y = sign(w·x), w ~ N(0, I_D) (seeded)."""
    _check_sizes(n_train, n_test, input_dim)
    weights = torch.from_numpy(np.random.default_rng([seed, 7]).standard_normal(input_dim))

    def perceptron(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x @ weights >= 0, 1.0, -1.0).to(torch.float64)

    data = hypercube_task(n_train, n_test, input_dim, perceptron, seed=seed)
    return dataclasses.replace(data, name="ising", teacher={"directions": _unit(weights)})


def hermite_polynomial(order: int, z: torch.Tensor) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_n(z) by the recurrence He_{n+1} = z He_n − n He_{n−1}."""
    previous, current = torch.ones_like(z), z.clone()
    if order == 0:
        return previous
    for n in range(1, order):
        previous, current = current, z * current - n * previous
    return current


def hermite_task(n_train: int, n_test: int, input_dim: int = 30, seed: int = 0) -> Dataset:
    """Single-index task y = He1(z) − 0.1 He3(z), z = x·e1, x ~ N(0, I_D)."""
    _check_sizes(n_train, n_test, input_dim)
    generator = np.random.default_rng([seed, 11])
    x_train, x_test = (
        _gaussian_inputs(n_train, input_dim, generator),
        _gaussian_inputs(n_test, input_dim, generator),
    )

    def target(x: torch.Tensor) -> torch.Tensor:
        z = x[:, 0]
        return hermite_polynomial(1, z) - 0.1 * hermite_polynomial(3, z)

    direction = torch.zeros(1, input_dim, dtype=torch.float64)
    direction[0, 0] = 1.0
    return _synthetic(
        "hermite", f"synthetic Hermite single-index task (D = {input_dim})",
        x_train, target(x_train), x_test, target(x_test), seed,
        ("inputs x ~ N(0, I_D)", "targets y = He1(z) − 0.1 He3(z), z = x·e1"), direction,
    )  # fmt: skip


def xor_task(n_train: int, n_test: int, input_dim: int, seed: int = 0) -> Dataset:
    """XOR: y = sign(x1 x2), x ~ N(0, I_D); the teacher plane is spanned by e1 and e2."""
    _check_sizes(n_train, n_test, input_dim)
    if input_dim < 2:
        raise ValueError(f"XOR needs input_dim >= 2, got {input_dim}.")
    generator = np.random.default_rng([seed, 13])
    x_train, x_test = (
        _gaussian_inputs(n_train, input_dim, generator),
        _gaussian_inputs(n_test, input_dim, generator),
    )

    def target(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 0] * x[:, 1] >= 0, 1.0, -1.0).to(torch.float64)

    directions = torch.eye(input_dim, dtype=torch.float64)[:2]
    return _synthetic(
        "xor", f"synthetic XOR task (D = {input_dim})", x_train, target(x_train), x_test,
        target(x_test), seed, ("inputs x ~ N(0, I_D)", "targets y = sign(x1 x2)"), directions,
    )  # fmt: skip


def mnist_task(n_train: int, n_test: int, seed: int = 0, side: int | None = None) -> Dataset:
    """MNIST 0 vs 3 (±1 labels) from krenorm.data.load_dataset, images flattened to (P, D)."""
    _check_sizes(n_train, n_test, 1)
    data = load_dataset(
        "mnist", classes=(0, 3), n_train=n_train, n_test=n_test, side=side, seed=seed
    )
    return dataclasses.replace(
        data,
        x_train=data.x_train.reshape(n_train, -1),
        x_test=data.x_test.reshape(n_test, -1),
    )


def make_task(name: str, n_train: int, n_test: int, input_dim: int, seed: int = 0) -> Dataset:
    """Build one of TASK_NAMES (input_dim is ignored for MNIST, whose D is 784)."""
    builders = {
        "teacher": lambda: teacher_task(n_train, n_test, input_dim, seed=seed),
        "ising": lambda: ising_task(n_train, n_test, input_dim, seed=seed),
        "hermite": lambda: hermite_task(n_train, n_test, input_dim, seed=seed),
        "xor": lambda: xor_task(n_train, n_test, input_dim, seed=seed),
        "mnist-0-3": lambda: mnist_task(n_train, n_test, seed=seed),
    }
    if name not in builders:
        raise ValueError(f"unknown task {name!r}; choose one of {TASK_NAMES}.")
    return builders[name]()


def teacher_directions(data: Dataset) -> torch.Tensor | None:
    """Unit teacher directions (k, D), or None for tasks without one (MNIST)."""
    return data.teacher.get("directions")
