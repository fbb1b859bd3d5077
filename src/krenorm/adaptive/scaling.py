"""The scaling parameter χ ∈ [1, N] and its conversions (docs/math/adaptive.md §1).

Model:  f(x) = Σ_{i=1}^N w_i φ(v_i·x),  v_i ~ N(0, (g_v/D) I),  w_i ~ N(0, g_w/(χN)),
likelihood noise (= sampler temperature) κ/χ.  χ = 1 is standard scaling, χ = N mean-field.

docs/math/theory.md §1 writes the same network as f = Σ a_i σ(h_i)/√N, h_i = u_i·x/√D with
u_i ~ N(0, 1/λ0), a_i ~ N(0, 1/λ1) and temperature T, so

    λ0 = 1/g_v,   λ1 = χ/g_w,   T = κ/χ        (χ = 1: λ1 = 1/g_w, T = κ).

The NNGP kernel K̂ = g_w E[φφᵀ] equals g_w times the FC kernel of docs/math/theory.md §2 at λ0 =
1/g_v, and does not depend on χ (the readout prior and the noise both carry 1/χ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from krenorm._validation import check_positive
from krenorm.kernels.activations import Activation
from krenorm.kernels.grams import fc_kernel, fc_kernel_diagonal

#: What to change when Q K̂ + κ (or Ĉ + κ) is not positive definite.
INCREASE_KAPPA = "increase kappa"

#: Named regimes: the three points of the χ axis the study reports.
REGIME_NAMES: tuple[str, ...] = ("standard", "intermediate", "mean-field")


def chi_for_regime(regime: str | float, width: int) -> float:
    """χ for a named regime: 'standard' → 1, 'intermediate' → √N, 'mean-field' → N; numbers pass."""
    if isinstance(regime, str):
        named = {"standard": 1.0, "intermediate": math.sqrt(width), "mean-field": float(width)}
        if regime not in named:
            raise ValueError(
                f"unknown regime {regime!r}; choose one of {REGIME_NAMES} or a number."
            )
        return named[regime]
    return float(regime)


@dataclass(frozen=True)
class ScalingRegime:
    """One point on the χ axis for a width-N network on D-dimensional inputs.

    chi: scaling parameter in [1, N]; g_w, g_v: readout and first-layer prior scales;
    kappa: likelihood noise at χ = 1 (the noise and the sampler temperature are κ/χ).
    """

    chi: float
    width: int
    input_dim: int
    g_w: float = 1.0
    g_v: float = 1.0
    kappa: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive int, got {self.width!r}.")
        if not isinstance(self.input_dim, int) or self.input_dim < 1:
            raise ValueError(f"input_dim must be a positive int, got {self.input_dim!r}.")
        for name in ("chi", "g_w", "g_v", "kappa"):
            check_positive(name, getattr(self, name))
        # A relative slack so that χ = √N² or χ = N computed in floating point is accepted.
        if not (1.0 - 1e-12 <= self.chi <= self.width * (1.0 + 1e-12)):
            raise ValueError(
                f"chi must lie in [1, N] = [1, {self.width}], got {self.chi}; "
                "χ = 1 is standard scaling and χ = N mean-field."
            )

    @property
    def readout_prior_variance(self) -> float:
        """Var w_i = g_w/(χN)."""
        return self.g_w / (self.chi * self.width)

    @property
    def first_layer_prior_variance(self) -> float:
        """Var of each entry of v_i: g_v/D."""
        return self.g_v / self.input_dim

    @property
    def temperature(self) -> float:
        """Likelihood noise variance κ/χ, which is also the sampler temperature."""
        return self.kappa / self.chi

    @property
    def theory_lambda0(self) -> float:
        """docs/math/theory.md §1 first-layer prior precision λ0 = 1/g_v."""
        return 1.0 / self.g_v

    @property
    def theory_lambda1(self) -> float:
        """docs/math/theory.md §1 readout prior precision λ1 = χ/g_w (a_i = √N w_i)."""
        return self.chi / self.g_w

    @property
    def theory_temperature(self) -> float:
        """docs/math/theory.md §1 temperature T = κ/χ."""
        return self.kappa / self.chi

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(
            readout_prior_variance=self.readout_prior_variance,
            first_layer_prior_variance=self.first_layer_prior_variance,
            temperature=self.temperature,
            theory_lambda0=self.theory_lambda0,
            theory_lambda1=self.theory_lambda1,
        )
        return out


def nngp_kernel_hat(
    x: torch.Tensor,
    z: torch.Tensor | None,
    activation: str | Activation,
    g_w: float = 1.0,
    g_v: float = 1.0,
) -> torch.Tensor:
    """K̂(x, z) = g_w E_v[φ(v·x) φ(v·z)], v ~ N(0, (g_v/D) I)  (docs/math/adaptive.md §1), float64.

    Equals g_w κ(C) with the FC input Gram C = g_v x·z/D of docs/math/theory.md §2 (λ0 = 1/g_v);
    linear φ gives K̂ = (g_w g_v/D) x zᵀ.
    """
    check_positive("g_w", g_w)
    check_positive("g_v", g_v)
    return g_w * fc_kernel(x, z, activation, lambda0=1.0 / g_v, dtype=torch.float64)


def nngp_kernel_hat_diagonal(
    x: torch.Tensor, activation: str | Activation, g_w: float = 1.0, g_v: float = 1.0
) -> torch.Tensor:
    """K̂(x, x) for each row of x (never a test×test matrix)."""
    check_positive("g_w", g_w)
    check_positive("g_v", g_v)
    return g_w * fc_kernel_diagonal(x, activation, lambda0=1.0 / g_v, dtype=torch.float64)
