"""Deep CNN and LCN kernel renormalization, formulation A (docs/math/deep.md §4; an ansatz).

One order parameter on the last layer's d positions, with the L-th-root prior of L equal-width
layers:
    CNN: Q d×d SPD,     K_R = (1/(λ_L d)) Σ_ij Q_ij K^L_ij,   S₀ = L tr Q^{1/L} − ln det Q
    LCN: Q = diag(q_i), K_R = (1/(λ_L d)) Σ_i q_i K^L_ii,      S₀ = Σ_i (L q_i^{1/L} − ln q_i)
and the data term (1/N)[ln det A + yᵀA⁻¹y] of `GramLinearAction` on the deep blocks.

    ∂S₀ = Q^{1/L−1} − Q⁻¹,
    ∂²S₀[V] = U (Γ ∘ UᵀVU) Uᵀ + Q⁻¹VQ⁻¹,  Q = U diag(λ) Uᵀ,
    Γ_ab = (g(λ_a) − g(λ_b))/(λ_a − λ_b), Γ_aa = g'(λ_a), g(λ) = λ^{1/L−1}
(the Daleckii–Krein derivative of the matrix function Q^{1/L−1}). Stationarity
Q^{1/L−1} − Q⁻¹ + G = 0 gives the fixed-point map Q ↦ (Q^{1/L−1} + G)⁻¹, which at L = 1 is
docs/math/theory.md §3's Q̄ ↦ (1 + G)⁻¹; L = 1 is the one-layer CNN/LCN action exactly (the code
delegates to the one-layer structures there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm.theory.order_parameters import DiagonalStructure, MatrixStructure

__all__ = ["RootPriorDiagonalStructure", "RootPriorMatrixStructure"]


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}.")


def _power_divided_differences(values: torch.Tensor, exponent: float) -> torch.Tensor:
    """Γ_ab of g(λ) = λ^exponent on eigenvalues λ (first divided differences, g' on ties)."""
    powered = values**exponent
    derivative = exponent * values ** (exponent - 1)
    gap = values[:, None] - values[None, :]
    close = gap.abs() <= 1e-10 * values.abs().max()
    safe = torch.where(close, torch.ones_like(gap), gap)
    divided = (powered[:, None] - powered[None, :]) / safe
    tie = (derivative[:, None] + derivative[None, :]) / 2
    return torch.where(close, tie, divided)


@dataclass(frozen=True)
class RootPriorMatrixStructure(MatrixStructure):
    """Q d×d SPD with S₀ = L tr Q^{1/L} − ln det Q (deep CNN, formulation A)."""

    depth: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_depth(self.depth)

    def _power(self, point: torch.Tensor, exponent: float) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(self.symmetrize(point))
        return (vectors * values**exponent) @ vectors.T

    def prior_value(self, point: torch.Tensor) -> float:
        if self.depth == 1:
            return super().prior_value(point)
        values = torch.linalg.eigvalsh(self.symmetrize(point))
        return float(self.depth * (values ** (1 / self.depth)).sum() - torch.log(values).sum())

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        if self.depth == 1:
            return super().prior_gradient(point)
        return self._power(point, 1 / self.depth - 1) - self.inverse(point)

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        inverse_part = super().prior_hessian_vector(point, direction)
        if self.depth == 1:
            return inverse_part
        values, vectors = torch.linalg.eigh(self.symmetrize(point))
        gamma = _power_divided_differences(values, 1 / self.depth - 1)
        rotated = vectors.T @ direction @ vectors
        return vectors @ (gamma * rotated) @ vectors.T + inverse_part

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        """(Q^{1/L−1} + G)⁻¹ with G = ∇S − ∇S₀; None when Q^{1/L−1} + G is not SPD."""
        if self.depth == 1:
            return super().fixed_point_target(point, gradient)
        shifted = self.symmetrize(self._power(point, 1 / self.depth - 1)
                                  + gradient - self.prior_gradient(point))
        if not self.is_admissible(shifted):
            return None
        return self.symmetrize(self.inverse(shifted))


@dataclass(frozen=True)
class RootPriorDiagonalStructure(DiagonalStructure):
    """q_i > 0 with S₀ = Σ_i (L q_i^{1/L} − ln q_i) (deep LCN, formulation A)."""

    depth: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_depth(self.depth)

    def prior_value(self, point: torch.Tensor) -> float:
        if self.depth == 1:
            return super().prior_value(point)
        return float((self.depth * point ** (1 / self.depth) - torch.log(point)).sum())

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        if self.depth == 1:
            return super().prior_gradient(point)
        return point ** (1 / self.depth - 1) - 1 / point

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        exponent = 1 / self.depth - 1
        return (exponent * point ** (exponent - 1) + 1 / point**2) * direction

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        """q_i = 1/(q_i^{1/L−1} + G_i); None outside the domain."""
        if self.depth == 1:
            return super().fixed_point_target(point, gradient)
        shifted = point ** (1 / self.depth - 1) + gradient - self.prior_gradient(point)
        if not bool((shifted > 0).all()):
            return None
        return 1 / shifted
