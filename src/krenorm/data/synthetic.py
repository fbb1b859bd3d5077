"""Seeded synthetic tasks returning the same `Dataset` as the real loaders (docs/math/theory.md §1).

    linear teacher      x ~ N(0, I_D),  y = w·x / √D,                         w ~ N(0, I_D)
    FC teacher          x ~ N(0, I_D),  y = Σ_i a_i σ(w_i·x / √D) / √N,        w_i ~ N(0, I_D/λ0),
                                                                              a_i ~ N(0, 1/λ1)
    local (CNN) teacher x ~ N(0, 1) pixels (or given images),
                        y = Σ_{k,i} a_{k,i} σ(w_k·r_i(x) / √M) / √(N·Np),     w_k ~ N(0, I_M/λ0),
                                                                              a_{k,i} ~ N(0, 1/λ1)
    hypercube           x uniform on {±1}^d,  y = target(x) (a callable, or Walsh coefficients
                        {S: c_S} meaning Σ_S c_S Π_{j∈S} x_j)

r_i(x) are Conv2d-ordered patches (krenorm.kernels.extract_patches), so the local teacher is
exactly a one-hidden-layer CNN of docs/math/theory.md §1 with N channels and a dense readout.
Label noise: Gaussian with standard deviation `noise` (variance T = noise²) on the training
targets only; test targets are the noiseless teacher, so the test loss measures the teacher.
Random streams are independent per role (teacher, train inputs, test inputs, noise): changing
n_train leaves the teacher and the test set unchanged, and a larger n_train extends a smaller
one (the first rows agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from krenorm._validation import check_finite, check_images
from krenorm.data.dataset import Dataset, Provenance
from krenorm.data.preprocess import check_seed
from krenorm.kernels.activations import get_activation
from krenorm.kernels.patches import PatchGeometry

HypercubeTarget = Callable[[torch.Tensor], torch.Tensor] | Mapping[tuple[int, ...], float]
_STREAMS = {"teacher": 0, "train": 1, "test": 2, "noise": 3}


def _generator(seed: int, role: str) -> np.random.Generator:
    """The random stream of one role (teacher, train, test, noise) for this seed."""
    return np.random.default_rng(np.random.SeedSequence([check_seed(seed), _STREAMS[role]]))


def _normal(shape: tuple[int, ...], generator: np.random.Generator) -> torch.Tensor:
    # numpy fills arrays sequentially, so the first rows of a longer draw equal a shorter draw:
    # training sets of growing P from one seed are nested (learning curves reuse examples).
    return torch.from_numpy(generator.standard_normal(shape))


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_noise(noise: float) -> float:
    if not math.isfinite(float(noise)) or float(noise) < 0:
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}.")
    return float(noise)


def _check_precision(name: str, value: float) -> float:
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite positive prior precision, got {value!r}.")
    return float(value)


def _noisy(y: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    if noise == 0:
        return y
    return y + noise * _normal(tuple(y.shape), _generator(seed, "noise"))


def assemble_synthetic(
    name: str,
    description: str,
    inputs: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    steps: tuple[str, ...],
    parameters: dict,
    teacher: dict[str, torch.Tensor],
) -> Dataset:
    """A generated data set with its provenance (no source file; `steps` describe how it was
    made, `parameters` its sizes and knobs, `teacher` its ground-truth objects)."""
    provenance = Provenance(
        dataset=name,
        description=description,
        source=None,
        classes=(),
        class_names=(),
        seed=seed,
        preprocessing=steps,
        parameters=tuple(parameters.items()),
    )
    return Dataset(name, inputs[0], targets[0], inputs[1], targets[1], provenance, teacher)


def _noise_step(noise: float) -> str:
    if noise == 0:
        return "no label noise"
    return f"Gaussian label noise, std {noise}, on training targets only; test targets noiseless"


def linear_teacher(
    n_train: int, n_test: int, dimension: int, noise: float = 0.0, seed: int = 0
) -> Dataset:
    """Inputs x ~ N(0, I_D) as (P, D), targets y = w·x/√D with w ~ N(0, I_D) (+ noise on train)."""
    n_train, n_test = _check_int("n_train", n_train, 1), _check_int("n_test", n_test, 0)
    dimension = _check_int("dimension", dimension, 1)
    noise, seed = _check_noise(noise), check_seed(seed)
    weights = _normal((dimension,), _generator(seed, "teacher"))
    x_train = _normal((n_train, dimension), _generator(seed, "train"))
    x_test = _normal((n_test, dimension), _generator(seed, "test"))

    def teach(x: torch.Tensor) -> torch.Tensor:
        return x @ weights / math.sqrt(dimension)

    return assemble_synthetic(
        "synthetic-linear", f"synthetic linear teacher (D = {dimension})", (x_train, x_test),
        (_noisy(teach(x_train), noise, seed), teach(x_test)), seed,
        ("inputs x ~ N(0, I_D)", "targets y = w·x/√D, w ~ N(0, I_D)", _noise_step(noise)),
        {"n_train": n_train, "n_test": n_test, "dimension": dimension, "noise": noise},
        {"w": weights},
    )  # fmt: skip


def fc_teacher(
    n_train: int,
    n_test: int,
    dimension: int,
    hidden_units: int = 100,
    activation: str = "erf",
    noise: float = 0.0,
    lambda0: float = 1.0,
    lambda1: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """One-hidden-layer FC teacher of docs/math/theory.md §1: y = Σ_i a_i σ(w_i·x/√D)/√N, x ~ N(0,
    I_D)."""
    n_train, n_test = _check_int("n_train", n_train, 1), _check_int("n_test", n_test, 0)
    dimension = _check_int("dimension", dimension, 1)
    hidden_units = _check_int("hidden_units", hidden_units, 1)
    noise, seed = _check_noise(noise), check_seed(seed)
    lambda0, lambda1 = _check_precision("lambda0", lambda0), _check_precision("lambda1", lambda1)
    sigma = get_activation(activation)
    generator = _generator(seed, "teacher")
    first = _normal((hidden_units, dimension), generator) / math.sqrt(lambda0)
    readout = _normal((hidden_units,), generator) / math.sqrt(lambda1)
    x_train = _normal((n_train, dimension), _generator(seed, "train"))
    x_test = _normal((n_test, dimension), _generator(seed, "test"))

    def teach(x: torch.Tensor) -> torch.Tensor:
        return sigma(x @ first.T / math.sqrt(dimension)) @ readout / math.sqrt(hidden_units)

    return assemble_synthetic(
        "synthetic-fc", f"synthetic FC {sigma.name} teacher (D = {dimension}, N = {hidden_units})",
        (x_train, x_test), (_noisy(teach(x_train), noise, seed), teach(x_test)), seed,
        ("inputs x ~ N(0, I_D)",
         f"targets y = Σ_i a_i {sigma.name}(w_i·x/√D)/√N, w_i ~ N(0, I/λ0), a_i ~ N(0, 1/λ1)",
         _noise_step(noise)),
        {"n_train": n_train, "n_test": n_test, "dimension": dimension,
         "hidden_units": hidden_units, "activation": sigma.name, "noise": noise,
         "lambda0": lambda0, "lambda1": lambda1},
        {"first_layer": first, "readout": readout},
    )  # fmt: skip


def local_teacher(
    n_train: int,
    n_test: int,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    mask: int | tuple[int, int] = 7,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    channels: int = 1,
    activation: str = "erf",
    noise: float = 0.0,
    lambda0: float = 1.0,
    lambda1: float = 1.0,
    seed: int = 0,
    images: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Dataset:
    """Local (CNN) teacher of docs/math/theory.md §1 on images (P, c, H, W):

        y = Σ_{k,i} a_{k,i} σ(w_k·r_i(x)/√M) / √(N·Np),  N = channels, M = c·m_h·m_w.

    Inputs are i.i.d. N(0, 1) pixels of `image_shape`, or the given (x_train, x_test) images
    (e.g. from load_dataset; then n_train and n_test must equal their lengths).
    """
    n_train, n_test = _check_int("n_train", n_train, 1), _check_int("n_test", n_test, 0)
    channels = _check_int("channels", channels, 1)
    noise, seed = _check_noise(noise), check_seed(seed)
    lambda0, lambda1 = _check_precision("lambda0", lambda0), _check_precision("lambda1", lambda1)
    geometry = PatchGeometry(mask, stride, padding)
    mask_hw, stride_hw, padding_hw = geometry.mask, geometry.stride, geometry.padding
    sigma = get_activation(activation)
    if images is None:
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (c, H, W), got {image_shape!r}.")
        depth, height, breadth = (_check_int("image_shape entries", v, 1) for v in image_shape)
        x_train = _normal((n_train, depth, height, breadth), _generator(seed, "train"))
        x_test = _normal((n_test, depth, height, breadth), _generator(seed, "test"))
        input_step = "inputs: i.i.d. N(0, 1) pixels"
    else:
        x_train, x_test = (check_images("images[0]", images[0]).to(torch.float64),
                           images[1].to(torch.float64))
        if x_test.ndim != 4 or x_test.shape[1:] != x_train.shape[1:]:
            raise ValueError("images[1] must be (P_test, c, H, W) like images[0].")
        check_finite("images[1]", x_test)
        if (x_train.shape[0], x_test.shape[0]) != (n_train, n_test):
            raise ValueError(
                f"n_train, n_test = {n_train}, {n_test} but the given images hold "
                f"{x_train.shape[0]}, {x_test.shape[0]}; pass matching counts."
            )
        depth, height, breadth = (int(v) for v in x_train.shape[1:])
        input_step = "inputs: given images"
    image_shape = (depth, height, breadth)
    out_h, out_w = geometry.grid((height, breadth))
    n_patches = out_h * out_w
    patch_dimension = depth * mask_hw[0] * mask_hw[1]
    generator = _generator(seed, "teacher")
    filters = _normal((channels, depth, *mask_hw), generator) / math.sqrt(lambda0)
    readout = _normal((channels, n_patches), generator) / math.sqrt(lambda1)
    flat_filters = filters.reshape(channels, patch_dimension)

    def teach(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros(0)
        patches = geometry.patches(x)  # (P, Np, M)
        fields = patches @ flat_filters.T / math.sqrt(patch_dimension)  # (P, Np, N)
        return torch.einsum("pik,ki->p", sigma(fields), readout) / math.sqrt(channels * n_patches)

    return assemble_synthetic(
        "synthetic-local",
        f"synthetic local {sigma.name} CNN teacher (mask {mask_hw}, N = {channels}, "
        f"Np = {n_patches})",
        (x_train, x_test), (_noisy(teach(x_train), noise, seed), teach(x_test)), seed,
        (input_step,
         f"targets y = Σ_(k,i) a_(k,i) {sigma.name}(w_k·r_i(x)/√M)/√(N·Np), w_k ~ N(0, I/λ0), "
         "a ~ N(0, 1/λ1), Conv2d patch layout",
         _noise_step(noise)),
        {"n_train": n_train, "n_test": n_test, "image_shape": image_shape, "mask": mask_hw,
         "stride": stride_hw, "padding": padding_hw, "channels": channels,
         "activation": sigma.name, "noise": noise, "lambda0": lambda0, "lambda1": lambda1},
        {"filters": filters, "readout": readout},
    )  # fmt: skip


def walsh_target(
    coefficients: Mapping[tuple[int, ...], float], dimension: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = Σ_S c_S Π_{j∈S} x_j on {±1}^d; S are tuples of distinct indices in [0, d)."""
    if not coefficients:
        raise ValueError("target coefficients are empty; give at least one {subset: value}.")
    terms = []
    for subset, value in coefficients.items():
        indices = tuple(subset)
        if len(set(indices)) != len(indices) or any(
            not isinstance(j, (int, np.integer)) or not 0 <= j < dimension for j in indices
        ):
            raise ValueError(
                f"subset {subset!r} must hold distinct indices in [0, {dimension}); fix the target."
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"coefficient of {subset!r} is {value!r}; use a finite number.")
        terms.append((list(indices), float(value)))

    def target(x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for indices, value in terms:
            total = total + value * x[:, indices].prod(dim=1)
        return total

    return target


def hypercube_task(
    n_train: int,
    n_test: int,
    dimension: int,
    target: HypercubeTarget,
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Inputs uniform on {±1}^d as (P, d), sampled with replacement; y = target(x).

    target: a function of the (P, d) float64 inputs returning (P,) values, or Walsh coefficients
    {S: c_S} (e.g. {(0, 1, 2): 1.0} is the parity of the first three bits).
    """
    n_train, n_test = _check_int("n_train", n_train, 1), _check_int("n_test", n_test, 0)
    dimension = _check_int("dimension", dimension, 1)
    noise, seed = _check_noise(noise), check_seed(seed)
    if isinstance(target, Mapping):
        described = "Walsh sum " + " + ".join(f"{c}·χ{tuple(s)}" for s, c in target.items())
        function = walsh_target(target, dimension)
    elif callable(target):
        described = getattr(target, "__name__", type(target).__name__)
        function = target
    else:
        raise ValueError("target must be a callable or a mapping {subset: coefficient}.")

    def draw(count: int, role: str) -> torch.Tensor:
        bits = _generator(seed, role).integers(0, 2, size=(count, dimension))
        return torch.from_numpy(2.0 * bits - 1.0)

    x_train, x_test = draw(n_train, "train"), draw(n_test, "test")
    targets = []
    for x in (x_train, x_test):
        y = torch.as_tensor(function(x), dtype=torch.float64)
        if y.shape != (x.shape[0],):
            raise ValueError(f"target returned shape {tuple(y.shape)}, expected ({x.shape[0]},).")
        check_finite("target values", y)
        targets.append(y)
    return assemble_synthetic(
        "synthetic-hypercube", f"synthetic hypercube task (d = {dimension}, target {described})",
        (x_train, x_test), (_noisy(targets[0], noise, seed), targets[1]), seed,
        ("inputs x uniform on {±1}^d, with replacement", f"targets y = {described}",
         _noise_step(noise)),
        {"n_train": n_train, "n_test": n_test, "dimension": dimension, "target": described,
         "noise": noise},
        {},
    )  # fmt: skip
