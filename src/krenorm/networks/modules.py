"""Replicated one-hidden-layer networks in exactly the docs/math/theory.md §1 parameterisation.

    FC:      h_i(x) = w_i·x/√N0,                  f(x) = Σ_i a_i σ(h_i(x))/√N
    CNN:     h_{k,i}(x) = w_k·r_i(x)/√M,          f(x) = Σ_{k,i} a_{k,i} σ(h_{k,i}(x))/√(N·Np)
    LCN:     h_{k,i}(x) = w_{k,i}·r_i(x)/√M,      f(x) = Σ_{k,i} a_{k,i} σ(h_{k,i}(x))/√(N·Np)
    CNN-GAP: h_{k,i}(x) = w_k·r_i(x)/√M,          f(x) = Σ_k a_k (1/Np) Σ_i σ(h_{k,i}(x))/√N

R independent replicas are evaluated in one batched pass: every weight carries a leading replica
axis. The input scaling (1/√N0 or patches r_i/√M, Conv2d layout) is applied once per data set by
`prepare` — patches are data, not parameters — and the forward pass is a pair of einsums.

Every network writes its output as f = Φ a with hidden features Φ (R, P, F) that already carry the
readout normalisation (1/√N, 1/√(N·Np) or the pooled 1/(Np·√N)); the collapsed sampler and the
posterior observables use Φ directly (docs/math/theory.md §1, §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from krenorm._validation import check_finite, check_positive
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.activations import Activation, get_activation
from krenorm.memory import check_allocation


@dataclass(frozen=True)
class PreparedInputs:
    """Inputs scaled for the first layer of one network: FC x/√N0 of shape (P, N0); CNN, LCN and
    CNN-GAP patches r_i(x)/√M of shape (P, Np, M). Built once per data set by `prepare`."""

    values: torch.Tensor
    kind: str

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (all randomness here is explicit)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}.")
    return torch.Generator(device=torch.device(device or "cpu")).manual_seed(seed)

#: Parameter-sized tensors a sampler holds at once: the parameters, a momentum, a gradient and a
#: proposal (HMC/MALA), plus one for autograd's temporaries.
_SAMPLER_COPIES = 5


class ReplicatedNetwork(nn.Module):
    """Base class: R replicas of a one-hidden-layer network with first layer W and readout a.

    Parameters `first_layer` (replica axis first) and `readout` (R, N, [Np,] D) are drawn from the
    prior N(0, 1/λ0) and N(0, 1/λ1) with an explicit generator; each replica gets its own draws.
    `lambda0` and `lambda1` here only set the initial draw — the sampler owns the posterior's
    (T, λ0, λ1), so prior variances such as the adaptive lens's g_w/(χN) are plain arguments.
    """

    kind: str = ""

    def __init__(
        self,
        spec: ArchitectureSpec,
        width: int,
        input_shape: tuple[int, ...],
        n_replicas: int = 1,
        n_outputs: int = 1,
        lambda0: float = 1.0,
        lambda1: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        *,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__()
        if spec.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__} implements '{self.kind}', got a '{spec.kind}' spec; "
                "use build_network(spec, ...)."
            )
        for name, value in (("width", width), ("n_replicas", n_replicas), ("n_outputs", n_outputs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if generator is None:
            raise ValueError("pass an explicit torch.Generator (see make_generator(seed, device)).")
        self.spec = spec
        self.width = width
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_replicas = n_replicas
        self.n_outputs = n_outputs
        self.activation: Activation = get_activation(spec.activation)
        self._check_input_shape()
        device = torch.device(device) if device is not None else generator.device
        first_shape, readout_shape = self.parameter_shapes()
        # Estimate before allocating: a sampler keeps the parameters and, per copy, a momentum,
        # a gradient and a proposal (_SAMPLER_COPIES), so a width of 1e9 is refused here with
        # advice instead of failing inside the allocator.
        n_parameters = math.prod(first_shape) + math.prod(readout_shape)
        check_allocation(f"the {self.kind} network's parameters and sampler state at width "
                         f"{width} with {n_replicas} replica(s)", _SAMPLER_COPIES * n_parameters,
                         dtype, memory_limit,
                         advice="use a smaller width, fewer replicas or float32")
        self.first_layer = nn.Parameter(torch.empty(first_shape, dtype=dtype, device=device))
        self.readout = nn.Parameter(torch.empty(readout_shape, dtype=dtype, device=device))
        self.initialise_from_prior(lambda0, lambda1, generator)

    # --- geometry ---------------------------------------------------------------------------

    def _check_input_shape(self) -> None:
        if len(self.input_shape) != 3:
            raise ValueError(
                f"{self.kind} networks take images; input_shape must be (c, H, W), "
                f"got {self.input_shape}."
            )
        self.spec.output_grid(self.input_shape)  # raises if the mask does not fit

    @property
    def n_patches(self) -> int:
        """Np, the number of output positions (1 for FC)."""
        channels, height, width = self.input_shape  # (c, H, W), checked at construction
        return self.spec.n_patches((channels, height, width))

    @property
    def patch_dimension(self) -> int:
        """M = c·m_h·m_w (N0 for FC)."""
        c = self.input_shape[0]
        return c * self.spec.mask[0] * self.spec.mask[1]

    @property
    def readout_positions(self) -> int:
        """Positions carrying separate readout weights: Np for CNN/LCN, 1 for FC and CNN-GAP."""
        return 1

    @property
    def n_features(self) -> int:
        """F = number of readout weights per output (N, or N·Np)."""
        return self.width * self.readout_positions

    def parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def initialise_from_prior(
        self, lambda0: float, lambda1: float, generator: torch.Generator
    ) -> None:
        """W ~ N(0, 1/λ0), a ~ N(0, 1/λ1) entrywise, independently for every replica."""
        check_positive("lambda0", lambda0)
        check_positive("lambda1", lambda1)
        with torch.no_grad():
            for parameter, precision in ((self.first_layer, lambda0), (self.readout, lambda1)):
                # Drawn on the generator's device so any (generator, device) pair works.
                draw = torch.randn(
                    parameter.shape, generator=generator, dtype=parameter.dtype,
                    device=generator.device,
                )
                parameter.copy_(draw.to(parameter.device) / math.sqrt(precision))

    # --- data ---------------------------------------------------------------------------------

    def check_inputs(self, x: torch.Tensor) -> None:
        """Refuse non-tensors, a per-sample shape other than the network's, and NaN/inf."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"inputs must be a torch.Tensor, got {type(x).__name__}.")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"inputs have per-sample shape {tuple(x.shape[1:])}, the network was built for "
                f"{self.input_shape}."
            )
        check_finite("inputs", x)

    def prepare(self, x: torch.Tensor) -> PreparedInputs:
        """Scale inputs for the first layer once: patches r_i(x)/√M in Conv2d layout (P, Np, M)."""
        self.check_inputs(x)
        x = x.to(dtype=self.first_layer.dtype, device=self.first_layer.device)
        patches = self.spec.geometry.patches(x)
        return PreparedInputs(patches / math.sqrt(patches.shape[-1]), self.kind)

    def _as_prepared(self, inputs: PreparedInputs | torch.Tensor) -> PreparedInputs:
        if isinstance(inputs, PreparedInputs):
            if inputs.kind != self.kind:
                raise ValueError(f"inputs were prepared for '{inputs.kind}', not '{self.kind}'.")
            return inputs
        return self.prepare(inputs)

    # --- forward ------------------------------------------------------------------------------

    def pre_activations(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        """Local fields h: (R, P, N) for FC, (R, P, N, Np) for the convolutional kinds."""
        raise NotImplementedError

    def hidden_features(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        """Φ (R, P, F) with f = Φ a: σ(h) times the readout normalisation of docs/math/theory.md
        §1."""
        raise NotImplementedError

    def readout_matrix(self) -> torch.Tensor:
        """The readout as (R, F, D), ordered like the feature axis of `hidden_features`."""
        return self.readout.reshape(self.n_replicas, self.n_features, self.n_outputs)

    def forward(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        """Outputs f (R, P, D) of every replica."""
        return torch.einsum("rpf,rfd->rpd", self.hidden_features(inputs), self.readout_matrix())

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, activation={self.activation.name}, width={self.width}, "
            f"input_shape={self.input_shape}, n_replicas={self.n_replicas}, "
            f"n_outputs={self.n_outputs}, n_patches={self.n_patches}"
        )


class FCNetwork(ReplicatedNetwork):
    """h_i = w_i·x/√N0, f = Σ_i a_i σ(h_i)/√N; W (R, N, N0), a (R, N, D). Inputs (P, N0) or
    images (P, c, H, W), flattened."""

    kind = "fc"

    def _check_input_shape(self) -> None:
        if len(self.input_shape) not in (1, 3):
            raise ValueError(
                f"FC input_shape must be (N0,) or (c, H, W), got {self.input_shape}."
            )

    @property
    def n_patches(self) -> int:
        return 1

    @property
    def patch_dimension(self) -> int:
        return math.prod(self.input_shape)

    def parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            (self.n_replicas, self.width, self.patch_dimension),
            (self.n_replicas, self.width, self.n_outputs),
        )

    def prepare(self, x: torch.Tensor) -> PreparedInputs:
        """x/√N0, flattened to (P, N0)."""
        self.check_inputs(x)
        flat = x.reshape(x.shape[0], -1).to(
            dtype=self.first_layer.dtype, device=self.first_layer.device
        )
        return PreparedInputs(flat / math.sqrt(flat.shape[1]), self.kind)

    def pre_activations(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        values = self._as_prepared(inputs).values
        return torch.einsum("rnd,pd->rpn", self.first_layer, values)

    def hidden_features(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activations(inputs)) / math.sqrt(self.width)


class CNNNetwork(ReplicatedNetwork):
    """Shared filters, dense readout: h_{k,i} = w_k·r_i/√M, f = Σ_{k,i} a_{k,i} σ(h_{k,i})/√(N·Np);
    W (R, N, M), a (R, N, Np, D)."""

    kind = "cnn"

    @property
    def readout_positions(self) -> int:
        return self.n_patches

    def parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            (self.n_replicas, self.width, self.patch_dimension),
            (self.n_replicas, self.width, self.n_patches, self.n_outputs),
        )

    def pre_activations(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        values = self._as_prepared(inputs).values
        return torch.einsum("rkm,pim->rpki", self.first_layer, values)

    def hidden_features(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        fields = self.activation(self.pre_activations(inputs))
        scale = math.sqrt(self.width * self.n_patches)
        return fields.reshape(fields.shape[0], fields.shape[1], -1) / scale


class LCNNetwork(CNNNetwork):
    """One filter per position: h_{k,i} = w_{k,i}·r_i/√M; W (R, N, Np, M), a (R, N, Np, D)."""

    kind = "lcn"

    def parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            (self.n_replicas, self.width, self.n_patches, self.patch_dimension),
            (self.n_replicas, self.width, self.n_patches, self.n_outputs),
        )

    def pre_activations(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        values = self._as_prepared(inputs).values
        return torch.einsum("rkim,pim->rpki", self.first_layer, values)


class CNNGAPNetwork(ReplicatedNetwork):
    """Shared filters, global average pooling: f = Σ_k a_k (1/Np) Σ_i σ(h_{k,i})/√N;
    W (R, N, M), a (R, N, D)."""

    kind = "cnn-gap"

    def parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            (self.n_replicas, self.width, self.patch_dimension),
            (self.n_replicas, self.width, self.n_outputs),
        )

    def pre_activations(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        values = self._as_prepared(inputs).values
        return torch.einsum("rkm,pim->rpki", self.first_layer, values)

    def hidden_features(self, inputs: PreparedInputs | torch.Tensor) -> torch.Tensor:
        pooled = self.activation(self.pre_activations(inputs)).mean(-1)
        return pooled / math.sqrt(self.width)


NETWORK_CLASSES: dict[str, type[ReplicatedNetwork]] = {
    "fc": FCNetwork,
    "cnn": CNNNetwork,
    "lcn": LCNNetwork,
    "cnn-gap": CNNGAPNetwork,
}


def build_network(
    spec: ArchitectureSpec,
    width: int,
    input_shape: tuple[int, ...],
    n_replicas: int = 1,
    n_outputs: int = 1,
    lambda0: float = 1.0,
    lambda1: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    *,
    memory_limit: int | None = None,
) -> ReplicatedNetwork:
    """The network of `spec` (docs/math/theory.md §1) with R replicas drawn from the prior N(0,
    1/λ0), N(0, 1/λ1). Give `seed` (a fresh generator on `device`) or an explicit `generator`."""
    if (seed is None) == (generator is None):
        raise ValueError("give exactly one of seed= or generator= (randomness is explicit).")
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    return NETWORK_CLASSES[spec.kind](
        spec, width, input_shape, n_replicas, n_outputs, lambda0, lambda1, generator, dtype,
        device, memory_limit=memory_limit,
    )
