"""Sampled finite networks at scaling χ, through krenorm.networks (docs/math/adaptive.md §1).

The FC network of docs/math/theory.md §1 with λ0 = 1/g_v, λ1 = χ/g_w and temperature T = κ/χ is
exactly f(x) = Σ_i w_i φ(v_i·x) with v_i ~ N(0, (g_v/D) I), w_i ~ N(0, g_w/(χN)) and noise κ/χ
(w_i = a_i/√N, v_i = W_i/√D), so χ needs no special network: `ScalingRegime` supplies the numbers.
Besides the networks' own summary (test loss ± standard error, predictive mean and variance,
Q estimate (λ1/N)Σ⟨a²⟩, kernel alignment), this records the first-layer second moment
⟨VᵀV⟩/N = ⟨(1/N)Σ_i v_i v_iᵀ⟩ on every recorded state (per replica, for standard errors) and
the posterior hidden kernel Ĉ = g_w⟨(1/N)Σ_i φ_i φ_iᵀ⟩ on the training inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from krenorm.adaptive.scaling import ScalingRegime
from krenorm.architectures import ArchitectureSpec
from krenorm.networks import PosteriorRun, PosteriorSummary
from krenorm.networks.settings import SamplerSettings

#: The study's sampling defaults where they differ from `SamplerSettings`: fewer replicas than
#: a compare run, and a first-layer moment recorded every 5 steps.
STUDY_SAMPLING_DEFAULTS: dict[str, int] = {"n_replicas": 8, "thin": 5}


def study_sampler_settings(**fields: object) -> SamplerSettings:
    """`SamplerSettings` with the study's defaults (STUDY_SAMPLING_DEFAULTS) under `fields`."""
    return SamplerSettings.from_dict({**STUDY_SAMPLING_DEFAULTS, **fields}, where="sampling")


@dataclass(frozen=True)
class SampledNetwork:
    """Posterior averages of sampled networks at one χ (module docstring).

    weight_covariance ⟨VᵀV⟩/N (D, D) with its per-entry standard error over replicas;
    hidden_kernel Ĉ (P, P); scale: the Q estimate (λ1/N)Σ⟨a²⟩ (for a linear network, the
    Gamma(N/2) scale of the exact oracle) ± standard error over replicas.
    """

    regime: ScalingRegime
    activation: str
    summary: PosteriorSummary
    weight_covariance: torch.Tensor
    weight_covariance_stderr: torch.Tensor
    hidden_kernel: torch.Tensor

    @property
    def test_mean(self) -> torch.Tensor:
        return self.summary.predictive_mean

    @property
    def test_variance(self) -> torch.Tensor:
        return self.summary.predictive_variance

    @property
    def scale(self) -> float:
        return float(self.summary.q_matrix.reshape(-1)[0])

    @property
    def scale_stderr(self) -> float:
        stderr = self.summary.q_matrix_stderr
        return math.nan if stderr is None else float(stderr.reshape(-1)[0])

    def to_dict(self) -> dict:
        return {
            "regime": self.regime.to_dict(),
            "activation": self.activation,
            "summary": self.summary.to_dict(),
            "weight_covariance": self.weight_covariance.tolist(),
            "weight_covariance_stderr": self.weight_covariance_stderr.tolist(),
        }


def sample_network(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    regime: ScalingRegime,
    activation: str,
    settings: SamplerSettings | None = None,
) -> SampledNetwork:
    """Sample R replicas of the width-N FC network at χ and collect the observables above."""
    settings = settings or study_sampler_settings()
    x_train, x_test = (torch.as_tensor(x, dtype=torch.float64) for x in (x_train, x_test))
    y_train, y_test = (torch.as_tensor(y, dtype=torch.float64) for y in (y_train, y_test))
    if x_train.ndim != 2 or x_train.shape[1] != regime.input_dim:
        raise ValueError(
            f"x_train must be (P, D = {regime.input_dim}), got {tuple(x_train.shape)}."
        )
    burn_in, thin = settings.effective_burn_in, settings.effective_thin
    run = PosteriorRun(
        ArchitectureSpec("fc", activation),
        regime.width,
        x_train,
        y_train,
        x_test,
        y_test,
        temperature=regime.temperature,
        lambda0=regime.theory_lambda0,
        lambda1=regime.theory_lambda1,
        settings=settings,
    )
    shape = (settings.n_replicas, regime.input_dim, regime.input_dim)
    per_replica = torch.zeros(shape, dtype=torch.float64)
    records = 0
    for stop in range(burn_in + thin, settings.n_steps + 1, thin):
        run.advance(until_step=stop)
        first_layer = run.model.first_layer.detach().to(torch.float64)  # (R, N, D), W = √D v
        per_replica += torch.einsum("rnd,rne->rde", first_layer, first_layer)
        records += 1
    # ⟨(1/N) Σ_i v_i v_iᵀ⟩ with v = W/√D.
    per_replica /= records * regime.width * regime.input_dim
    accumulator = run.accumulator
    if accumulator.kernel_sum is None:
        raise ValueError("no hidden-kernel records were taken; raise n_steps or lower thin.")
    hidden = regime.g_w * accumulator.kernel_sum / accumulator.n_kernel_records
    replicas = settings.n_replicas
    stderr = (
        per_replica.std(0) / math.sqrt(replicas)
        if replicas > 1
        else torch.full_like(per_replica[0], math.nan)
    )
    return SampledNetwork(
        regime=regime,
        activation=activation,
        summary=run.summary(),
        weight_covariance=per_replica.mean(0),
        weight_covariance_stderr=stderr,
        hidden_kernel=hidden,
    )
