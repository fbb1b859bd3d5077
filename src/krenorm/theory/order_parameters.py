"""Order-parameter structures and their unconstrained parameterisations (THEORY.md §3).

Q̄ is a positive scalar (FC, CNN-GAP), a positive diagonal (LCN) or a symmetric positive
definite matrix (FC with D outputs, CNN). Solvers work on an unconstrained vector θ:

    scalar / diagonal:  q = exp(θ)             (positivity by construction)
    matrix:             Q = L Lᵀ, θ = lower triangle of L   (SPD whenever L is non-singular)

The prior part of the action is  Tr Q̄ − ln det Q̄  (Σ_i (q_i − ln q_i) for a diagonal).
Gradients and Hessian-vector products are mapped from Q-space to θ-space by the chain rule:
    diagonal:  ∂θ S = q ⊙ g,   H_θ e = q ⊙ H_q[q ⊙ e] + q ⊙ g ⊙ e
    matrix:    ∂L S = 2 g L,   H_L E = 2 H_Q[E Lᵀ + L Eᵀ] L + 2 g E     (then lower triangle)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

StructureKind = Literal["diagonal", "matrix"]


@dataclass(frozen=True)
class OrderParameterStructure:
    """Shape of Q̄: `diagonal` (a positive vector of length `size`; a scalar is size 1) or
    `matrix` (a size × size SPD matrix)."""

    kind: StructureKind
    size: int

    @property
    def n_parameters(self) -> int:
        return self.size if self.kind == "diagonal" else self.size * (self.size + 1) // 2

    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Q̄ at infinite width (α → 0): 1, 1_D or 1_Np."""
        if self.kind == "diagonal":
            return torch.ones(self.size, dtype=dtype)
        return torch.eye(self.size, dtype=dtype)

    # -- prior part: Tr Q − ln det Q --------------------------------------------------------

    def prior_value(self, q: torch.Tensor) -> float:
        if self.kind == "diagonal":
            return float((q - torch.log(q)).sum())
        return float(torch.trace(q) - torch.linalg.slogdet(q)[1])

    def prior_gradient(self, q: torch.Tensor) -> torch.Tensor:
        """1 − Q⁻¹ (elementwise 1 − 1/q for a diagonal)."""
        if self.kind == "diagonal":
            return 1 - 1 / q
        return torch.eye(self.size, dtype=q.dtype) - torch.linalg.inv(q)

    def prior_hessian_vector(self, q: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """Q⁻¹ V Q⁻¹ (V / q² for a diagonal)."""
        if self.kind == "diagonal":
            return direction / q**2
        inverse = torch.linalg.inv(q)
        return inverse @ direction @ inverse

    # -- unconstrained parameterisation ------------------------------------------------------

    def _tril(self) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.tril_indices(self.size, self.size))  # type: ignore[return-value]

    def to_theta(self, q: torch.Tensor) -> torch.Tensor:
        if self.kind == "diagonal":
            return torch.log(q)
        rows, cols = self._tril()
        return torch.linalg.cholesky(q)[rows, cols]

    def _cholesky_factor(self, theta: torch.Tensor) -> torch.Tensor:
        rows, cols = self._tril()
        factor = theta.new_zeros(self.size, self.size)
        factor[rows, cols] = theta
        return factor

    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        if self.kind == "diagonal":
            return torch.exp(theta)
        factor = self._cholesky_factor(theta)
        return factor @ factor.T

    def gradient_to_theta(self, theta: torch.Tensor, gradient_q: torch.Tensor) -> torch.Tensor:
        if self.kind == "diagonal":
            return torch.exp(theta) * gradient_q
        rows, cols = self._tril()
        return (2 * gradient_q @ self._cholesky_factor(theta))[rows, cols]

    def hessian_vector_to_theta(
        self,
        theta: torch.Tensor,
        gradient_q: torch.Tensor,
        hessian_vector_q: Callable[[torch.Tensor], torch.Tensor],
        direction_theta: torch.Tensor,
    ) -> torch.Tensor:
        if self.kind == "diagonal":
            q = torch.exp(theta)
            return q * hessian_vector_q(q * direction_theta) + q * gradient_q * direction_theta
        factor = self._cholesky_factor(theta)
        direction = self._cholesky_factor(direction_theta)
        dq = direction @ factor.T + factor @ direction.T
        out = 2 * hessian_vector_q(dq) @ factor + 2 * gradient_q @ direction
        rows, cols = self._tril()
        return out[rows, cols]

    # -- an orthonormal basis of the tangent space (for Hessian spectra in Q coordinates) -----

    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        """Orthonormal basis (Frobenius) of diagonal vectors or of symmetric matrices."""
        if self.kind == "diagonal":
            return list(torch.eye(self.size, dtype=dtype))
        basis = []
        for i, j in zip(*self._tril(), strict=True):
            element = torch.zeros(self.size, self.size, dtype=dtype)
            if i == j:
                element[i, i] = 1.0
            else:
                element[i, j] = element[j, i] = 2**-0.5
            basis.append(element)
        return basis

    def symmetrize(self, q: torch.Tensor) -> torch.Tensor:
        return q if self.kind == "diagonal" else (q + q.T) / 2
