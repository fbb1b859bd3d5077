"""Deep FC (and deep CNN-GAP) kernel renormalization: one scalar order parameter per hidden
layer (docs/math/deep.md §3; an ansatz, the equivalent Wishart ansatz).

    K_R = U K_NNGP,  U = Π_ℓ Q_ℓ,  A = T·1 + K_R,
    S(Q_1..Q_L) = Σ_ℓ ν_ℓ (Q_ℓ − ln Q_ℓ) + (1/N_1)[ln det A + yᵀA⁻¹y],   ν_ℓ = N_ℓ/N_1.

With D(U) = (1/N_1)[ln det A + yᵀA⁻¹y] (the one-layer FC data term at Q̄ = U, from
`SpectralAction`) and its first two derivatives D', D'' in U:
    ∂S/∂Q_ℓ = ν_ℓ(1 − 1/Q_ℓ) + D' U/Q_ℓ,
    ∂²S/∂Q_ℓ∂Q_m = δ_ℓm ν_ℓ/Q_ℓ² + D'' U²/(Q_ℓ Q_m) + (1 − δ_ℓm) D' U/(Q_ℓ Q_m).
Stationarity gives N_ℓ(Q_ℓ − 1) = −N_1 U D'(U) for every layer: the back-propagating kernel
renormalization of deep linear networks when σ is the identity (tests/test_deep_theory.py checks
the two agree). With one layer this is docs/math/theory.md §3's FC action exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from krenorm.theory.action import ActionEvaluation, EffectiveAction, SpectralAction
from krenorm.theory.order_parameters import DiagonalStructure
from krenorm.width import check_width, is_infinite

__all__ = ["DeepProductAction", "LayerScalarsStructure"]


@dataclass(frozen=True)
class LayerScalarsStructure(DiagonalStructure):
    """Q_1..Q_L > 0 with prior S₀ = Σ_ℓ ν_ℓ (Q_ℓ − ln Q_ℓ) (docs/math/deep.md §3)."""

    weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.weights) != self.size or not all(w > 0 for w in self.weights):
            raise ValueError(f"weights must hold {self.size} positive width ratios ν_ℓ, got "
                             f"{self.weights!r}.")

    def _nu(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.weights, dtype=like.dtype)

    def prior_value(self, point: torch.Tensor) -> float:
        return float((self._nu(point) * (point - torch.log(point))).sum())

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        return self._nu(point) * (1 - 1 / point)

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return self._nu(point) * direction / point**2

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        """Q_ℓ = 1/(1 + G_ℓ/ν_ℓ), G the data part of the gradient; None outside the domain."""
        shifted = 1 + (gradient - self.prior_gradient(point)) / self._nu(point)
        if not bool((shifted > 0).all()):
            return None
        return 1 / shifted

    def congruence(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return point * direction * point / self._nu(point)

    def soft_prior_directions(self, point: torch.Tensor, count: int) -> torch.Tensor:
        return torch.eye(self.size, dtype=point.dtype)[
            torch.topk(point**2 / self._nu(point), count).indices]

    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        """U = Π_ℓ Q_ℓ, the scale of the equivalent infinite-width network's kernel."""
        return torch.prod(point).reshape(1)


class DeepProductAction(EffectiveAction):
    """The deep FC action of the module docstring on one fixed kernel (FC or pooled CNN)."""

    cheap_hessian = True
    structure: LayerScalarsStructure

    def __init__(self, inner: SpectralAction, widths: tuple[float, ...],
                 ratios: tuple[float, ...] | None = None):
        """`inner`: the one-layer action on the deep kernel; widths N_1..N_L (all math.inf for
        the infinite-width limit, then `ratios` ν_ℓ keep the shape for continuation)."""
        if inner.basis.n_outputs != 1:
            raise NotImplementedError("the deep FC theory is implemented for one output; fit "
                                      "one output at a time.")
        widths = tuple(check_width(w) for w in widths)
        if any(is_infinite(w) for w in widths) and not all(is_infinite(w) for w in widths):
            raise ValueError("widths must be all finite or all math.inf.")
        self.widths = widths
        self.width = widths[0]
        self.temperature = inner.temperature
        if ratios is None:
            ratios = (tuple(1.0 for _ in widths) if is_infinite(widths[0])
                      else tuple(w / widths[0] for w in widths))
        self.ratios = tuple(float(r) for r in ratios)
        self.inner = SpectralAction.from_basis(inner.basis, widths[0], inner.temperature)
        self.structure = LayerScalarsStructure(len(widths), self.ratios)

    def at_width(self, width: float) -> DeepProductAction:
        """All widths scaled together (N_1 = width, the ratios ν_ℓ kept)."""
        width = check_width(width)
        widths = tuple(math.inf if is_infinite(width) else width * r for r in self.ratios)
        return DeepProductAction(self.inner, widths, self.ratios)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return self.inner.train_kernel(torch.prod(point).reshape(1))

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        total = torch.prod(point)
        evaluation = self.inner.data_term(total.reshape(1))
        first = evaluation.gradient[0]
        second = evaluation.hessian_vector(torch.ones(1, dtype=point.dtype))[0]
        ratio = total / point  # ∂U/∂Q_ℓ
        gradient = first * ratio
        hessian = second * torch.outer(ratio, ratio) + first * total / torch.outer(point, point)
        hessian = hessian - torch.diag(torch.diagonal(hessian) - second * ratio**2)

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            return direction @ hessian.to(direction)

        return ActionEvaluation(point, evaluation.value, gradient, hessian_vector)
