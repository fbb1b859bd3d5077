"""Effective actions for renormalized kernels linear in the order parameter (THEORY.md §3).

    S(Q̄) = Tr Q̄ − ln det Q̄ + (1/N) [ ln det A + yᵀ A⁻¹ y ],   A = T·1 + K_R(Q̄)

Gradient (A⁻¹ never used for predictions, only for this Frobenius contraction):
    ∂S/∂Q̄ = 1 − Q̄⁻¹ + G,   G_ab = (1/N) ⟨∂K_R/∂Q̄_ab, A⁻¹ − v vᵀ⟩_F,   v = A⁻¹ y
Hessian-vector product in direction V (symmetric), with u = A⁻¹ K_R(V) v:
    H[V] = Q̄⁻¹ V Q̄⁻¹ + (1/N) F(−A⁻¹ K_R(V) A⁻¹ + u vᵀ + v uᵀ),   F(B)_ab = ⟨∂K_R/∂Q̄_ab, B⟩_F
which is THEORY.md's ∂²S/∂Q̄_ab∂Q̄_cd applied to V.

Two implementations share this interface:
- `GramLinearAction`: K_R(Q̄) = Σ_ab Q̄_ab K'_ab over P×P blocks (CNN: all pairs, LCN: diagonal);
  one Cholesky of A per evaluation.
- `SpectralAction`: K_R = (Q̄ ⊗ K)/λ1 with one fixed kernel K (FC, FC with D outputs, CNN-GAP);
  after one eigendecomposition K = U Λ Uᵀ every evaluation costs O(P·D³).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from krenorm._validation import check_positive
from krenorm.kernels.grams import LocalGramBlocks
from krenorm.theory.order_parameters import OrderParameterStructure


@dataclass(frozen=True)
class ActionEvaluation:
    """S, its gradient and Hessian-vector product at one Q̄ (all in Q̄ coordinates)."""

    q_bar: torch.Tensor
    value: float
    gradient: torch.Tensor
    hessian_vector: Callable[[torch.Tensor], torch.Tensor]


def spd_inverse(factor: torch.Tensor) -> torch.Tensor:
    """A⁻¹ = L⁻ᵀ L⁻¹ from the Cholesky factor L (a triangular solve and one product; faster
    than torch.cholesky_inverse on CPU). Used only for Frobenius contractions, never to predict."""
    identity = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    inverse_factor = torch.linalg.solve_triangular(factor, identity, upper=False)
    return inverse_factor.mT @ inverse_factor


def _cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info.max()) > 0:
        raise torch.linalg.LinAlgError(
            f"{what} is not positive definite (Cholesky failed); increase the temperature T or "
            "check the kernel for NaN/duplicated inputs."
        )
    return factor


class EffectiveAction(ABC):
    """S(Q̄) for one data set, width N and temperature T."""

    structure: OrderParameterStructure
    width: float
    temperature: float

    @abstractmethod
    def data_term(self, q_bar: torch.Tensor) -> ActionEvaluation:
        """(1/N)[ln det A + yᵀA⁻¹y] with its gradient and Hessian-vector product."""

    def evaluate(self, q_bar: torch.Tensor) -> ActionEvaluation:
        """The full action: prior part Tr Q̄ − ln det Q̄ plus the data term."""
        data = self.data_term(q_bar)
        structure = self.structure

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            return structure.prior_hessian_vector(q_bar, direction) + data.hessian_vector(direction)

        return ActionEvaluation(
            q_bar=q_bar,
            value=structure.prior_value(q_bar) + data.value,
            gradient=structure.prior_gradient(q_bar) + data.gradient,
            hessian_vector=hessian_vector,
        )

    def __call__(self, q_bar: torch.Tensor) -> float:
        return self.evaluate(q_bar).value


class GramBasis(ABC):
    """A family of P×P blocks K'_ab with K_R(Q̄) = Σ_ab Q̄_ab K'_ab."""

    @abstractmethod
    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_ab W_ab K'_ab (P×P)."""

    @abstractmethod
    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """F(B)_ab = ⟨K'_ab, B⟩_F for symmetric B."""

    @property
    @abstractmethod
    def n_samples(self) -> int: ...


class LocalBlocksBasis(GramBasis):
    """CNN: K'_ab = K_ab/(λ1 Np) over all pairs of patches (THEORY.md §3, local renormalization)."""

    def __init__(self, blocks: LocalGramBlocks, lambda1: float):
        self.blocks = blocks
        self.scale = 1.0 / (check_positive("lambda1", lambda1) * blocks.n_patches)

    @property
    def n_samples(self) -> int:
        return self.blocks.n_samples

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self.blocks.contract(coefficients) * self.scale

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.blocks.frobenius(matrix) * self.scale


class DiagonalBlocksBasis(GramBasis):
    """LCN: K'_i = K_ii/(λ1 Np), one block per patch (no weight sharing, no cross blocks)."""

    def __init__(self, diagonal_blocks: torch.Tensor, lambda1: float):
        self.stack = diagonal_blocks
        self.scale = 1.0 / (check_positive("lambda1", lambda1) * diagonal_blocks.shape[0])

    @property
    def n_samples(self) -> int:
        return self.stack.shape[-1]

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        flat = self.stack.reshape(self.stack.shape[0], -1)
        combined = coefficients.to(flat) @ flat
        return combined.reshape(*coefficients.shape[:-1], self.n_samples, self.n_samples) * (
            self.scale)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        flat = self.stack.reshape(self.stack.shape[0], -1)
        values = (flat @ matrix.reshape(-1, flat.shape[1]).T).T
        return values.reshape(*matrix.shape[:-2], flat.shape[0]) * self.scale


def _check_targets(y: torch.Tensor, n_samples: int) -> torch.Tensor:
    if y.ndim not in (1, 2) or y.shape[0] != n_samples:
        raise ValueError(f"targets must have shape ({n_samples},) or ({n_samples}, D), got "
                         f"{tuple(y.shape)}.")
    if not torch.isfinite(y).all():
        raise ValueError("targets contain NaN or infinite values.")
    return y


class GramLinearAction(EffectiveAction):
    """S(Q̄) for K_R(Q̄) = Σ_ab Q̄_ab K'_ab (CNN with an Np×Np matrix, LCN with a diagonal)."""

    def __init__(
        self,
        basis: GramBasis,
        y: torch.Tensor,
        width: float,
        temperature: float,
        structure: OrderParameterStructure,
    ):
        self.basis = basis
        self.y = _check_targets(y, basis.n_samples)
        if self.y.ndim != 1:
            raise ValueError("local renormalization is implemented for one output; pass y of "
                             "shape (P,).")
        self.width = check_positive("width", width)
        self.temperature = check_positive("temperature", temperature)
        self.structure = structure

    def factorize(self, q_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cholesky factor of A = T·1 + K_R(Q̄) and v = A⁻¹ y."""
        a = self.basis.combine(q_bar)
        a.diagonal().add_(self.temperature)
        factor = _cholesky(a, "A = T·1 + K_R(Q̄)")
        return factor, torch.cholesky_solve(self.y[:, None].to(a), factor)[:, 0]

    def data_term(self, q_bar: torch.Tensor) -> ActionEvaluation:
        factor, v = self.factorize(q_bar)
        a_inverse = spd_inverse(factor)
        log_det = 2 * torch.log(torch.diagonal(factor)).sum()
        value = float(log_det + self.y.to(v) @ v) / self.width
        # Q̄ lives on the CPU (it is small); the P×P algebra runs where the kernels are.
        gradient = self.basis.project(a_inverse - torch.outer(v, v)).to(q_bar) / self.width

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            # Batched over leading axes of `direction`: one pass over the blocks per call.
            solved = a_inverse @ self.basis.combine(direction)  # A⁻¹ K_R(V)
            u = solved @ v
            cross = u[..., :, None] * v
            term = -solved @ a_inverse + cross + cross.transpose(-1, -2)
            return self.basis.project(term).to(direction) / self.width

        return ActionEvaluation(q_bar, value, gradient, hessian_vector)


class SpectralAction(EffectiveAction):
    """S(Q̄) for K_R = (Q̄ ⊗ K)/λ1 on labels stacked output-major (THEORY.md §3, FC and CNN-GAP).

    With K/λ1 = U diag(λ_μ) Uᵀ and ỹ_μ = (Uᵀ Y)_μ ∈ R^D, A is block diagonal in the eigenbasis:
        ln det A = Σ_μ ln det M_μ,  yᵀA⁻¹y = Σ_μ ỹ_μᵀ M_μ⁻¹ ỹ_μ,  M_μ = T·1_D + λ_μ Q̄,
        G = (1/N) Σ_μ λ_μ (M_μ⁻¹ − w_μ w_μᵀ),  w_μ = M_μ⁻¹ ỹ_μ.
    A scalar Q̄ is the case D = 1.
    """

    def __init__(
        self,
        kernel: torch.Tensor,
        y: torch.Tensor,
        width: float,
        temperature: float,
        lambda1: float = 1.0,
    ):
        y = _check_targets(y, kernel.shape[0])
        self.width = check_positive("width", width)
        self.temperature = check_positive("temperature", temperature)
        check_positive("lambda1", lambda1)
        self.targets = y[:, None] if y.ndim == 1 else y
        n_outputs = self.targets.shape[1]
        self.structure = OrderParameterStructure("diagonal" if n_outputs == 1 else "matrix",
                                                 n_outputs)
        eigenvalues, self.eigenvectors = torch.linalg.eigh(kernel / lambda1)
        if float(eigenvalues.min()) < -1e-8 * max(1.0, float(eigenvalues.max())):
            raise ValueError("the kernel is not positive semi-definite "
                             f"(smallest eigenvalue {float(eigenvalues.min()):.3g}).")
        self.eigenvalues = eigenvalues.clamp_min(0)
        self.projected_targets = self.eigenvectors.T @ self.targets.to(kernel)  # (P, D)

    def _as_matrix(self, q_bar: torch.Tensor) -> torch.Tensor:
        return q_bar.reshape(1, 1) if self.structure.kind == "diagonal" else q_bar

    def _from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix.reshape(1) if self.structure.kind == "diagonal" else matrix

    def block_inverses(self, q_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """M_μ⁻¹ (P, D, D), w_μ (P, D) and ln det A (on the kernel's device)."""
        q = self._as_matrix(q_bar).to(self.eigenvalues)
        n_outputs = q.shape[0]
        blocks = self.eigenvalues[:, None, None] * q + self.temperature * torch.eye(
            n_outputs, dtype=q.dtype, device=q.device
        )
        factor = _cholesky(blocks, "A = T·1 + K_R(Q̄)")
        log_det = float(2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum())
        inverses = spd_inverse(factor)
        w = (inverses @ self.projected_targets[:, :, None])[:, :, 0]
        return inverses, w, log_det

    def data_term(self, q_bar: torch.Tensor) -> ActionEvaluation:
        inverses, w, log_det = self.block_inverses(q_bar)
        lam = self.eigenvalues
        value = (log_det + float((self.projected_targets * w).sum())) / self.width
        outer = w[:, :, None] * w[:, None, :]
        gradient = torch.einsum("p,pab->ab", lam, inverses - outer).to(q_bar) / self.width

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            v = self._as_matrix(direction).to(lam)
            scaled = lam[:, None, None] * v  # K_R(V) block per eigen-direction
            solved = inverses @ scaled  # M⁻¹ λ V
            u = (solved @ w[:, :, None])[:, :, 0]
            cross = u[:, :, None] * w[:, None, :]
            term = -solved @ inverses + cross + cross.mT
            return self._from_matrix(torch.einsum("p,pab->ab", lam, term).to(direction)
                                     / self.width)

        return ActionEvaluation(q_bar, value, self._from_matrix(gradient), hessian_vector)
