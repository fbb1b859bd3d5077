"""Replicated deep networks (L ≥ 1 hidden layers) in the parameterisation of docs/math/deep.md §1.

    FC:   h¹ = W¹x/√N_0,  h^{ℓ+1} = W^{ℓ+1}σ(h^ℓ)/√N_ℓ,  f = a·σ(h^L)/√N_L
    CNN:  Conv2d layers, pre-activations divided by √(channels × mask area), zero padding of the
          post-activation maps; readout dense over channels × positions of layer L, 1/√(N_L d)
    LCN:  the same without weight sharing (one filter per output position)
    GAP:  shared filters, readout Σ_k a_k (1/d) Σ_i σ(h^L_{k,i})/√N_L

Weights into layer ℓ are drawn from N(0, 1/λ_{ℓ−1}), the readout from N(0, 1/λ_L); R replicas are
evaluated in one batched pass (grouped convolutions). `features(x)` is Φ (R, P, F) with the
readout normalisation included, so that f = Φ a (the collapsed readout posterior reads Φ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from krenorm.deep_architecture import DeepArchitectureSpec, check_layer_values
from krenorm.kernels.activations import get_activation
from krenorm.networks.modules import PreparedInputs
from krenorm.networks.posterior_density import PosteriorDensity
from krenorm.networks.readout_posterior import GaussianReadout

__all__ = ["DeepCollapsedPosterior", "DeepFullPosterior", "DeepNetwork"]


class DeepNetwork(nn.Module):
    """R replicas of a deep FC/CNN/LCN/GAP network (see the module docstring).

    widths: N_1..N_L (channels for the convolutional kinds); priors: λ_0..λ_L (they set the
    initial draw); input_shape: (N_0,) for 'fc', (c, H, W) otherwise.
    """

    def __init__(self, spec: DeepArchitectureSpec, input_shape: Sequence[int],
                 widths: Sequence[int], priors: Sequence[float] | float = 1.0, *,
                 replicas: int = 1, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if not isinstance(spec, DeepArchitectureSpec):
            raise ValueError("spec must be a DeepArchitectureSpec.")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive int, got {replicas!r}.")
        self.spec = spec
        self.replicas = replicas
        self.widths = tuple(int(n) for n in check_layer_values("widths", widths, spec.depth))
        self.priors = check_layer_values("priors", priors, spec.depth + 1)
        self.activation = get_activation(spec.activation)
        self.input_shape = tuple(int(s) for s in input_shape)
        generator = generator or torch.Generator().manual_seed(0)
        shapes: list[tuple[int, ...]] = []
        if spec.kind == "fc":
            if len(self.input_shape) != 1:
                raise ValueError("an 'fc' network takes input_shape (N_0,); flatten images.")
            fan_in = self.input_shape[0]
            for width in self.widths:
                shapes.append((replicas, width, fan_in))
                fan_in = width
            self.n_positions = 1
        else:
            if len(self.input_shape) != 3:
                raise ValueError("a convolutional network takes input_shape (c, H, W).")
            channels = self.input_shape[0]
            self.grids = spec.grids(self.input_shape)
            for geometry, width, grid in zip(spec.geometries, self.widths, self.grids,
                                             strict=True):
                if geometry.padding_mode != "zeros":
                    raise ValueError("the deep network modules pad with zeros only.")
                if spec.kind == "lcn":
                    shapes.append((replicas, grid[0] * grid[1], width,
                                   channels * geometry.mask[0] * geometry.mask[1]))
                else:
                    shapes.append((replicas, width, channels, *geometry.mask))
                channels = width
            self.n_positions = self.grids[-1][0] * self.grids[-1][1]
        self.layers = nn.ParameterList(
            nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)
                         / math.sqrt(prior))
            for shape, prior in zip(shapes, self.priors, strict=False))
        features = self.widths[-1] * (self.n_positions if spec.kind in ("cnn", "lcn") else 1)
        self.readout = nn.Parameter(torch.randn(replicas, features, generator=generator,
                                                dtype=dtype) / math.sqrt(self.priors[-1]))

    def _conv_layer(self, index: int, inputs: torch.Tensor) -> torch.Tensor:
        """Pre-activations of hidden layer index+1 from (P, R·C, H, W) maps."""
        geometry = self.spec.geometries[index]
        weight = self.layers[index]
        n_samples = inputs.shape[0]
        if self.spec.kind == "lcn":
            _, positions, width, fan_in = weight.shape
            patches = F.unfold(inputs, geometry.mask, padding=geometry.padding,
                               stride=geometry.stride)  # (P, R·C·m, d)
            patches = patches.reshape(n_samples, self.replicas, fan_in, positions)
            out = torch.einsum("prmd,rdnm->prnd", patches, weight) / math.sqrt(fan_in)
            h, w = self.grids[index]
            return out.reshape(n_samples, self.replicas * width, h, w)
        replicas, width, channels, mh, mw = weight.shape
        out = F.conv2d(inputs, weight.reshape(replicas * width, channels, mh, mw),
                       stride=geometry.stride, padding=geometry.padding, groups=replicas)
        return out / math.sqrt(channels * mh * mw)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Φ (R, P, F) with f = Φ a: the last post-activations times the readout scale."""
        x = x.to(self.readout.dtype)
        sigma = self.activation.function
        if self.spec.kind == "fc":
            hidden = x.reshape(x.shape[0], -1)
            hidden = torch.einsum("pi,rni->rpn", hidden, self.layers[0]) / math.sqrt(
                hidden.shape[1])
            for weight in self.layers[1:]:
                hidden = torch.einsum("rpi,rni->rpn", sigma(hidden), weight) / math.sqrt(
                    weight.shape[2])
            return sigma(hidden) / math.sqrt(self.widths[-1])
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs must be (P, {self.input_shape}), got {tuple(x.shape)}.")
        maps = x.repeat(1, self.replicas, 1, 1)
        for index in range(self.spec.depth):
            pre = self._conv_layer(index, maps)
            maps = sigma(pre)
        n_samples = x.shape[0]
        width = self.widths[-1]
        grouped = maps.reshape(n_samples, self.replicas, width, self.n_positions)
        if self.spec.kind == "cnn-gap":
            return grouped.mean(-1).transpose(0, 1) / math.sqrt(width)
        return grouped.reshape(n_samples, self.replicas, -1).transpose(0, 1) / math.sqrt(
            width * self.n_positions)

    @property
    def n_replicas(self) -> int:
        return self.replicas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f (R, P)."""
        return torch.einsum("rpf,rf->rp", self.features(x), self.readout)

    def empirical_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """(1/λ_L) Φ Φᵀ per replica (R, P, P): the output covariance given the hidden weights,
        whose average over the prior tends to the deep NNGP kernel as the widths grow."""
        phi = self.features(x)
        return phi @ phi.mT / self.priors[-1]


class DeepFullPosterior(PosteriorDensity):
    """All parameters of a `DeepNetwork`: U = (1/2T) Σ_μ (f − y)² + Σ_ℓ (λ_{ℓ−1}/2)|W^ℓ|²
    + (λ_L/2)|a|², so the transition kernels of `krenorm.networks.transitions` (Langevin, MALA,
    HMC with mass = prior precision per layer) sample deep networks unchanged. One output."""

    name = "deep-full"

    def __init__(self, model: DeepNetwork, x_train: torch.Tensor, y_train: torch.Tensor, *,
                 temperature: float) -> None:
        # The base initialiser expects a one-hidden-layer ReplicatedNetwork; set its fields here.
        if not isinstance(model, DeepNetwork):
            raise ValueError(f"model must be a DeepNetwork, got {type(model).__name__}.")
        if temperature <= 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be positive and finite, got {temperature!r}.")
        self.model = model  # type: ignore[assignment]
        self.x_train = x_train.to(model.readout.dtype)
        self.targets = y_train.to(model.readout.dtype).reshape(1, -1)
        self.inputs = PreparedInputs(self.x_train, model.spec.kind)
        self.temperature = float(temperature)
        self.lambda0, self.lambda1 = model.priors[0], model.priors[-1]

    @property
    def n_replicas(self) -> int:
        return self.model.n_replicas

    def parameters(self) -> list[torch.nn.Parameter]:
        model = self.model
        assert isinstance(model, DeepNetwork)
        return [*model.layers, model.readout]

    def prior_precisions(self) -> list[float]:
        model = self.model
        assert isinstance(model, DeepNetwork)
        return list(model.priors)

    def potential(self) -> torch.Tensor:
        residual = self.model(self.x_train) - self.targets
        value = (residual**2).sum(1) / (2 * self.temperature)
        for parameter, precision in zip(self.parameters(), self.prior_precisions(), strict=True):
            value = value + 0.5 * precision * parameter.pow(2).flatten(1).sum(1)
        return value

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (R, Pt, 1) at the current state and zero variance (nothing integrated out)."""
        outputs = self.model(inputs.values)[..., None]
        return outputs, torch.zeros(outputs.shape[:2], dtype=outputs.dtype)

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        """(1/N_L) Σ_k a_k a_k per replica (R, 1, 1) for FC/GAP, the position blocks otherwise."""
        model = self.model
        assert isinstance(model, DeepNetwork)
        width = model.widths[-1]
        readout = model.readout.reshape(model.n_replicas, width, -1)
        return torch.einsum("rki,rkj->rij", readout, readout)


class DeepCollapsedPosterior(DeepFullPosterior):
    """The hidden layers of a `DeepNetwork` with the readout integrated out exactly.

    Given the hidden weights the output f = Φ a is linear in the readout a ~ N(0, 1/λ_L), so
    (docs/math/deep.md §6, as for one hidden layer)

        U(W¹..W^L) = Σ_ℓ (λ_{ℓ−1}/2)|W^ℓ|² − ln N(y; 0, T·1 + ΦΦᵀ/λ_L),

    with Φ = `model.features(x)` (the last hidden layer, readout normalisation included). The
    transition kernels move the hidden layers only; observables are conditional expectations
    given them (`GaussianReadout`: predictive mean and variance, Rao–Blackwellised), and
    `sample_readout` writes an exact draw of a | W into the model. One output."""

    name = "deep-collapsed"

    def __init__(self, model: DeepNetwork, x_train: torch.Tensor, y_train: torch.Tensor, *,
                 temperature: float) -> None:
        super().__init__(model, x_train, y_train, temperature=temperature)
        # (parameter versions, factorisation): several observables read one state.
        self._conditional: tuple[tuple[int, ...], GaussianReadout] | None = None

    def _deep(self) -> DeepNetwork:
        model = self.model
        assert isinstance(model, DeepNetwork)
        return model

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self._deep().layers)

    def prior_precisions(self) -> list[float]:
        return list(self._deep().priors[:-1])

    def readout_posterior(self) -> GaussianReadout:
        """The closed-form readout posterior at the current hidden weights (differentiable)."""
        model = self._deep()
        return GaussianReadout(model.features(self.x_train), self.targets.reshape(-1, 1),
                               self.temperature, model.priors[-1])

    def potential(self) -> torch.Tensor:
        value = -self.readout_posterior().log_evidence()
        for parameter, precision in zip(self.parameters(), self.prior_precisions(), strict=True):
            value = value + 0.5 * precision * parameter.pow(2).flatten(1).sum(1)
        return value

    @torch.no_grad()
    def conditional_readout(self) -> GaussianReadout:
        """`readout_posterior()` without gradients, factorised once per state of the hidden
        layers (keyed on their in-place version counters, which every move bumps)."""
        versions = tuple(parameter._version for parameter in self.parameters())
        if self._conditional is None or self._conditional[0] != versions:
            self._conditional = (versions, self.readout_posterior())
        return self._conditional[1]

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (R, Pt, 1) and variance (R, Pt) of the output given the hidden layers."""
        return self.conditional_readout().predictive(self._deep().features(inputs.values))

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        model = self._deep()
        positions = model.n_positions if model.spec.kind in ("cnn", "lcn") else 1
        return self.conditional_readout().readout_block_second_moments(model.widths[-1],
                                                                       positions)

    @torch.no_grad()
    def sample_readout(self, generator: torch.Generator) -> torch.Tensor:
        """Draw a ~ p(a | hidden layers, data) for every replica into `model.readout`."""
        draw = self.conditional_readout().sample_readout(generator)
        model = self._deep()
        model.readout.copy_(draw.reshape(model.readout.shape))
        return draw
