"""Target densities of the samplers: the network posterior of R replicas, as a potential U = −ln p
(up to a constant) and its gradient in the parameters that move (docs/math/theory.md §1).

    full       θ = (W, a):  U = (1/2T) Σ_μ |f(x^μ) − y^μ|² + (λ0/2)|W|² + (λ1/2)|a|²
    collapsed  θ = W:       U = (λ0/2)|W|² − ln N(y; 0, T·1 + ΦΦᵀ/λ1)   (readout integrated out)

A density reads the model's current parameters; transition kernels (`transitions`) move them.
Potentials are per replica, shape (R,): replicas share no parameters, so the gradient of the sum
over replicas is the per-replica gradient. A density also answers the posterior observables of the
current state: the predictive mean and variance (the outputs themselves for the full posterior,
the closed-form Gaussian readout given W for the collapsed one, i.e. Rao–Blackwellised) and the
readout block second moments behind the Q̄ estimate (docs/math/theory.md §3, §4).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from krenorm._validation import check_finite, check_positive
from krenorm.networks.modules import PreparedInputs, ReplicatedNetwork
from krenorm.networks.readout_posterior import GaussianReadout


def as_targets(y: torch.Tensor, n_outputs: int, n_samples: int) -> torch.Tensor:
    """Targets (P,) or (P, D) as (P, D), checked against the network's outputs."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
    check_finite("targets", y)
    targets = y[:, None] if y.ndim == 1 else y
    if targets.ndim != 2 or targets.shape != (n_samples, n_outputs):
        raise ValueError(
            f"targets must be ({n_samples},) or ({n_samples}, {n_outputs}) to match the inputs "
            f"and the network's outputs, got {tuple(y.shape)}."
        )
    return targets


class PosteriorDensity(ABC):
    """p(θ | data) ∝ exp(−U(θ)) of the R replicas of `model`, at temperature T with prior
    precisions λ0 (first layer) and λ1 (readout). Subclasses define which parameters θ are
    sampled and U; everything is evaluated at the model's current parameters."""

    #: Short name ('full' or 'collapsed').
    name = ""

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        *,
        temperature: float,
        lambda0: float,
        lambda1: float,
    ) -> None:
        if not isinstance(model, ReplicatedNetwork):
            raise ValueError(f"model must be a ReplicatedNetwork, got {type(model).__name__}.")
        self.model = model
        self.inputs = x_train if isinstance(x_train, PreparedInputs) else model.prepare(x_train)
        self.targets = as_targets(y_train, model.n_outputs, self.inputs.n_samples).to(
            model.first_layer
        )
        self.temperature = check_positive("temperature", temperature)
        self.lambda0 = check_positive("lambda0", lambda0)
        self.lambda1 = check_positive("lambda1", lambda1)

    @property
    def n_replicas(self) -> int:
        return self.model.n_replicas

    # --- what subclasses define ---------------------------------------------------------------

    @abstractmethod
    def parameters(self) -> list[torch.nn.Parameter]:
        """The sampled parameters θ, each with the replica axis first."""

    @abstractmethod
    def prior_precisions(self) -> list[float]:
        """The prior precision of each entry of each sampled parameter (λ0 or λ1)."""

    @abstractmethod
    def potential(self) -> torch.Tensor:
        """U per replica (R,) at the current parameters, differentiable in them."""

    @abstractmethod
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (R, Pt, D) and variance (R, Pt) of the outputs at the current state."""

    @abstractmethod
    def readout_block_second_moments(self) -> torch.Tensor:
        """(1/D) Σ_{k,d} a_{k,i,d} a_{k,j,d} per replica (R, pos, pos), or its conditional
        expectation given W when the readout is integrated out."""

    # --- shared -------------------------------------------------------------------------------

    def potential_and_gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """U (R,) and ∇U per sampled parameter, detached. A replica with a non-finite U gets a
        zero-weighted contribution, so it cannot poison the others' gradients."""
        parameters = self.parameters()
        with torch.enable_grad():
            value = self.potential()
            finite_sum = torch.where(torch.isfinite(value), value, torch.zeros_like(value)).sum()
            gradients = torch.autograd.grad(finite_sum, parameters)
        return value.detach(), [gradient.detach() for gradient in gradients]

    @torch.no_grad()
    def expected_squared_error(
        self, inputs: PreparedInputs, targets: torch.Tensor
    ) -> torch.Tensor:
        """E[(y − f)²] under the current state's predictive, per replica (R,): averaged over
        points and summed over outputs (the instantaneous MSE of docs/math/theory.md §4,
        Rao–Blackwellised where the readout is integrated out)."""
        mean, variance = self.predictive(inputs)
        targets = as_targets(targets, self.model.n_outputs, inputs.n_samples).to(mean)
        return (((targets - mean) ** 2).sum(-1) + mean.shape[-1] * variance).mean(-1)


class FullPosterior(PosteriorDensity):
    """All parameters θ = (W, a): U = (1/2T) Σ_μ |f − y|² + (λ0/2)|W|² + (λ1/2)|a|²."""

    name = "full"

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.first_layer, self.model.readout]

    def prior_precisions(self) -> list[float]:
        return [self.lambda0, self.lambda1]

    def potential(self) -> torch.Tensor:
        residual = self.model(self.inputs) - self.targets
        data_term = (residual**2).sum((1, 2)) / (2 * self.temperature)
        prior_term = 0.5 * (
            self.lambda0 * self.model.first_layer.pow(2).flatten(1).sum(1)
            + self.lambda1 * self.model.readout.pow(2).flatten(1).sum(1)
        )
        return data_term + prior_term

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(inputs)
        return outputs, torch.zeros(outputs.shape[:2], dtype=outputs.dtype, device=outputs.device)

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        model = self.model
        readout = model.readout.reshape(
            model.n_replicas, model.width, model.readout_positions, model.n_outputs
        )
        return torch.einsum("rkid,rkjd->rij", readout, readout) / model.n_outputs


class CollapsedPosterior(PosteriorDensity):
    """First layer only, θ = W: the readout is Gaussian given W (`GaussianReadout`) and is
    integrated out exactly, U(W) = (λ0/2)|W|² − ln N(y; 0, T·1 + ΦΦᵀ/λ1). Observables are
    conditional expectations given W; `sample_readout` draws a exactly given W."""

    name = "collapsed"

    def __init__(
        self,
        model: ReplicatedNetwork,
        x_train: PreparedInputs | torch.Tensor,
        y_train: torch.Tensor,
        *,
        temperature: float,
        lambda0: float,
        lambda1: float,
    ) -> None:
        super().__init__(model, x_train, y_train, temperature=temperature, lambda0=lambda0,
                         lambda1=lambda1)
        # (parameter version, its factorisation): several observables read the same state.
        self._conditional: tuple[int, GaussianReadout] | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.first_layer]

    def prior_precisions(self) -> list[float]:
        return [self.lambda0]

    def readout_posterior(self) -> GaussianReadout:
        """The closed-form readout posterior at the current W (differentiable in W)."""
        features = self.model.hidden_features(self.inputs)
        return GaussianReadout(features, self.targets, self.temperature, self.lambda1)

    def potential(self) -> torch.Tensor:
        prior_term = 0.5 * self.lambda0 * self.model.first_layer.pow(2).flatten(1).sum(1)
        return prior_term - self.readout_posterior().log_evidence()

    @torch.no_grad()
    def conditional_readout(self) -> GaussianReadout:
        """`readout_posterior()` without gradients, factorised once per state of W (keyed on the
        parameter's in-place version counter, which every move and every load bumps)."""
        version = self.model.first_layer._version
        if self._conditional is None or self._conditional[0] != version:
            self._conditional = (version, self.readout_posterior())
        return self._conditional[1]

    @torch.no_grad()
    def predictive(self, inputs: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conditional_readout().predictive(self.model.hidden_features(inputs))

    @torch.no_grad()
    def readout_block_second_moments(self) -> torch.Tensor:
        return self.conditional_readout().readout_block_second_moments(
            self.model.width, self.model.readout_positions
        )

    @torch.no_grad()
    def sample_readout(self, generator: torch.Generator) -> torch.Tensor:
        """Draw a ~ p(a | W, data) for every replica and write it into `model.readout`, so the
        model holds an exact joint posterior sample; returns it as (R, F, D)."""
        draw = self.conditional_readout().sample_readout(generator)
        self.model.readout.copy_(draw.reshape(self.model.readout.shape))
        return draw


#: Posterior densities by name.
POSTERIOR_DENSITIES: dict[str, type[PosteriorDensity]] = {
    "full": FullPosterior,
    "collapsed": CollapsedPosterior,
}
