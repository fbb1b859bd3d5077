"""Effective actions in the proportional limit (docs/math/theory.md §3).

Every action is S(point) = S₀(point) + (1/N)[ln det A + yᵀA⁻¹y], A = T·1 + K_R(point), with the
prior part S₀ given by its `OrderParameterStructure`, and implements one interface
(`EffectiveAction`): value, gradient and Hessian-vector product (`evaluate`), the structure,
the infinite-width point (`identity`), the training kernel K_R(point) and the same data at
another width (`at_width`). At N = ∞ the data term vanishes (α = 0) and the stationary point is
the identity.

For kernels linear in Q̄ (this module), with v = A⁻¹ y and F(B)_ab = ⟨∂K_R/∂Q̄_ab, B⟩_F:
    ∂S/∂Q̄ = 1 − Q̄⁻¹ + G,   G = (1/N) F(A⁻¹ − v vᵀ),
    H[V] = Q̄⁻¹ V Q̄⁻¹ + (1/N) F(−A⁻¹ K_R(V) A⁻¹ + u vᵀ + v uᵀ),   u = A⁻¹ K_R(V) v,
which is docs/math/theory.md §3's ∂²S/∂Q̄_ab∂Q̄_cd applied to V. Two implementations:
- `GramLinearAction`: K_R(Q̄) = Σ_ab Q̄_ab K'_ab over P×P blocks (CNN: all pairs, LCN: diagonal);
  one Cholesky of A per evaluation.
- `SpectralAction`: K_R = (Q̄ ⊗ K)/λ1 with one fixed kernel K (FC, FC with D outputs, CNN-GAP);
  after one eigendecomposition K = U Λ Uᵀ (`SpectralBasis`) every evaluation costs O(P·D³).
The (Q̄, Q) action of a non-odd activation is `mean_term.MeanTermAction`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Self

import torch

from krenorm._validation import check_positive, check_targets
from krenorm.kernels.grams import LocalGramBlocks
from krenorm.linalg import factor_noisy_kernel, log_det_from_factor, spd_inverse
from krenorm.theory.order_parameters import (
    MatrixStructure,
    OrderParameterStructure,
    PositiveDefiniteStructure,
    ScalarStructure,
)
from krenorm.width import check_width, is_infinite

__all__ = [
    "ActionEvaluation",
    "DiagonalBlocksBasis",
    "EffectiveAction",
    "GramBasis",
    "GramLinearAction",
    "LocalBlocksBasis",
    "SpectralAction",
    "SpectralBasis",
    "spd_inverse",
]


@dataclass(frozen=True)
class ActionEvaluation:
    """S, its gradient and Hessian-vector product at one point (all in point coordinates)."""

    point: torch.Tensor
    value: float
    gradient: torch.Tensor
    hessian_vector: Callable[[torch.Tensor], torch.Tensor]
    #: (directions, their Hessian-vector products) computed together with S, when asked for
    #: by `EffectiveAction.evaluate_with_products` (a curvature check seeds itself with them).
    known_products: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def q_bar(self) -> torch.Tensor:
        """Deprecated name of `point`."""
        warnings.warn("ActionEvaluation.q_bar is deprecated; use .point.", DeprecationWarning,
                      stacklevel=2)
        return self.point


class EffectiveAction(ABC):
    """S(point) for one data set, width N and temperature T (docs/math/theory.md §3)."""

    structure: OrderParameterStructure
    width: float
    temperature: float
    #: True when a Hessian-vector product costs about as little as an evaluation (few
    #: parameters after a one-off decomposition): solvers may then assemble dense Hessians.
    cheap_hessian: ClassVar[bool] = False

    @abstractmethod
    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        """(1/N)[ln det A + yᵀA⁻¹y] with its gradient and Hessian-vector product (finite N)."""

    @abstractmethod
    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        """K_R(point) on the training set (P×P; PD×PD output-major with D outputs)."""

    @abstractmethod
    def at_width(self, width: float) -> EffectiveAction:
        """The same data, kernels and temperature at width N = `width` (continuation in N)."""

    def identity(self) -> torch.Tensor:
        """The infinite-width point (Q̄ = 1; (Q̄, Q) = (1, 0))."""
        return self.structure.identity()

    def evaluate(self, point: torch.Tensor) -> ActionEvaluation:
        """The full action S₀ + data term. At N = ∞ the data term is identically zero."""
        return self._with_prior(point, None if is_infinite(self.width)
                                else self.data_term(point))

    def data_term_with_products(self, point: torch.Tensor, directions: torch.Tensor
                                ) -> ActionEvaluation:
        """`data_term` with the products of its Hessian with a batch of `directions` already
        computed (`known_products`). Actions whose products share work with the evaluation
        (the Gram-linear passes over the kernel blocks) override this."""
        data = self.data_term(point)
        return replace(data, known_products=(directions, data.hessian_vector(directions)))

    def evaluate_with_products(self, point: torch.Tensor, directions: torch.Tensor
                               ) -> ActionEvaluation:
        """`evaluate` plus the Hessian-vector products of a batch of directions (…, *shape),
        stored in `known_products` (docs/scale.md §4: for a Gram-linear action they ride on the
        evaluation's two passes over the kernel blocks)."""
        if is_infinite(self.width):
            evaluation = self.evaluate(point)
            return replace(evaluation, known_products=(
                directions, evaluation.hessian_vector(directions)))
        return self._with_prior(point, self.data_term_with_products(point, directions))

    def _with_prior(self, point: torch.Tensor, data: ActionEvaluation | None
                    ) -> ActionEvaluation:
        """S₀ + data term (data None: the prior alone, N = ∞)."""
        structure = self.structure
        prior_value = structure.prior_value(point)
        prior_gradient = structure.prior_gradient(point)
        if data is None:
            return ActionEvaluation(
                point, prior_value, prior_gradient,
                lambda direction: structure.prior_hessian_vector(point, direction))

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            return structure.prior_hessian_vector(point, direction) + data.hessian_vector(direction)

        known = None
        if data.known_products is not None:
            directions, images = data.known_products
            known = (directions, structure.prior_hessian_vector(point, directions) + images)
        return ActionEvaluation(point, prior_value + data.value, prior_gradient + data.gradient,
                                hessian_vector, known)

    def __call__(self, point: torch.Tensor) -> float:
        return self.evaluate(point).value

    def block_passes(self) -> int | None:
        """Passes over the kernel blocks so far (None where the action holds no blocks): a
        solver reports the difference over a solve (docs/scale.md §4)."""
        return None


class GramBasis(ABC):
    """A family of P×P blocks K'_ab with K_R(Q̄) = Σ_ab Q̄_ab K'_ab.

    `passes` counts the contractions (`combine`, `project`): each is one pass over the blocks,
    however many weights or matrices it is batched over."""

    passes: int = 0

    @abstractmethod
    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_ab W_ab K'_ab (P×P), batched over leading axes of W."""

    @abstractmethod
    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """F(B)_ab = ⟨K'_ab, B⟩_F for symmetric B, batched over leading axes."""

    @property
    @abstractmethod
    def n_samples(self) -> int: ...

    @abstractmethod
    def with_lambda1(self, lambda1: float) -> Self:
        """The same blocks (shared, not copied) scaled for another readout precision λ1:
        K'_ab = K_ab/(λ1 Np) holds λ1 only in its scale (docs/math/theory.md §3), so a λ1 scan
        reuses the blocks; the new basis starts with no cached combination."""

    def remember(self, coefficients: torch.Tensor, kernel: torch.Tensor) -> None:
        """Told that `kernel` = combine(coefficients) was computed as part of a batch: a basis
        that caches its last combination (streamed blocks) keeps it; others ignore it."""
        return None


class LocalBlocksBasis(GramBasis):
    """CNN: K'_ab = K_ab/(λ1 Np) over all pairs of patches (docs/math/theory.md §3)."""

    def __init__(self, blocks: LocalGramBlocks, lambda1: float):
        self.blocks = blocks
        self.scale = 1.0 / (check_positive("lambda1", lambda1) * blocks.n_patches)

    @property
    def n_samples(self) -> int:
        return self.blocks.n_samples

    def with_lambda1(self, lambda1: float) -> Self:
        return type(self)(self.blocks, lambda1)

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.blocks.contract(coefficients) * self.scale

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.blocks.frobenius(matrix) * self.scale


class DiagonalBlocksBasis(GramBasis):
    """LCN: K'_i = K_ii/(λ1 Np), one block per patch (no weight sharing, no cross blocks)."""

    def __init__(self, diagonal_blocks: torch.Tensor, lambda1: float):
        self.stack = diagonal_blocks
        self.scale = 1.0 / (check_positive("lambda1", lambda1) * diagonal_blocks.shape[0])

    @property
    def n_samples(self) -> int:
        return self.stack.shape[-1]

    def with_lambda1(self, lambda1: float) -> Self:
        return type(self)(self.stack, lambda1)

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        flat = self.stack.reshape(self.stack.shape[0], -1)
        combined = coefficients.to(flat) @ flat
        return combined.reshape(*coefficients.shape[:-1], self.n_samples, self.n_samples) * (
            self.scale)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        flat = self.stack.reshape(self.stack.shape[0], -1)
        values = (flat @ matrix.reshape(-1, flat.shape[1]).T).T
        return values.reshape(*matrix.shape[:-2], flat.shape[0]) * self.scale


def _single_output(y: torch.Tensor, what: str) -> torch.Tensor:
    if y.ndim != 1:
        raise ValueError(f"{what} is implemented for one output; pass y of shape (P,).")
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
        self.y = _single_output(check_targets("y", y, basis.n_samples), "local renormalization")
        self.width = check_width(width)
        self.temperature = check_positive("temperature", temperature)
        self.structure = structure

    def at_width(self, width: float) -> GramLinearAction:
        return GramLinearAction(self.basis, self.y, width, self.temperature, self.structure)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return self.basis.combine(point)

    def block_passes(self) -> int | None:
        return self.basis.passes

    def factorize(self, q_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cholesky factor of A = T·1 + K_R(Q̄) and v = A⁻¹ y."""
        factor = factor_noisy_kernel(self.basis.combine(q_bar), self.temperature, overwrite=True)
        return factor, torch.cholesky_solve(self.y[:, None].to(factor), factor)[:, 0]

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        factor, v = self.factorize(point)
        return self._data_term(point, factor, v)

    def data_term_with_products(self, point: torch.Tensor, directions: torch.Tensor
                                ) -> ActionEvaluation:
        """The data term and its Hessian applied to a batch of directions in the same two
        passes over the blocks (docs/scale.md §4): combine [Q̄, V_1…V_k] in one pass, the P×P
        algebra, then project [A⁻¹ − vvᵀ, T(V_1)…T(V_k)] in one pass."""
        batch = directions.reshape(-1, *point.shape)
        kernels = self.basis.combine(torch.cat([point[None], batch.to(point)]))
        self.basis.remember(point, kernels[0])
        factor = factor_noisy_kernel(kernels[0], self.temperature, overwrite=True)
        v = torch.cholesky_solve(self.y[:, None].to(factor), factor)[:, 0]
        data = self._data_term(point, factor, v, kernels[1:], directions)
        return data

    def _data_term(self, point: torch.Tensor, factor: torch.Tensor, v: torch.Tensor,
                   direction_kernels: torch.Tensor | None = None,
                   directions: torch.Tensor | None = None) -> ActionEvaluation:
        """The data term from the factor of A at `point`; with `direction_kernels` K_R(V_k) of a
        batch of `directions`, their Hessian-vector products share the projection pass."""
        a_inverse = spd_inverse(factor)
        data_fit = float(log_det_from_factor(factor) + self.y.to(v) @ v)

        def hessian_term(kernel: torch.Tensor) -> torch.Tensor:
            solved = a_inverse @ kernel  # A⁻¹ K_R(V)
            u = solved @ v
            cross = u[..., :, None] * v
            return -solved @ a_inverse + cross + cross.transpose(-1, -2)

        gradient_matrix = a_inverse - torch.outer(v, v)
        known = None
        if direction_kernels is None or directions is None:
            # Q̄ lives on the CPU (it is small); the P×P algebra runs where the kernels are.
            gradient = self.basis.project(gradient_matrix).to(point) / self.width
        else:
            projected = self.basis.project(torch.cat([gradient_matrix[None],
                                                      hessian_term(direction_kernels)]))
            gradient = projected[0].to(point) / self.width
            known = (directions, (projected[1:] / self.width).to(directions).reshape(
                directions.shape))

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            # Batched over leading axes of `direction`: one pass over the blocks per call.
            term = hessian_term(self.basis.combine(direction))
            return self.basis.project(term).to(direction) / self.width

        return ActionEvaluation(point, data_fit / self.width, gradient, hessian_vector, known)


@dataclass(frozen=True)
class SpectralBasis:
    """K/λ1 = U diag(λ_μ) Uᵀ with targets Y (P, D) and their projections ỹ = Uᵀ Y, computed
    once per kernel and data set and shared by the actions at every width and the posterior."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    targets: torch.Tensor
    projected_targets: torch.Tensor

    @classmethod
    def from_kernel(cls, kernel: torch.Tensor, y: torch.Tensor, lambda1: float = 1.0
                    ) -> SpectralBasis:
        """Eigendecomposition of K/λ1; refuses kernels that are not positive semi-definite."""
        y = check_targets("y", y, kernel.shape[0])
        check_positive("lambda1", lambda1)
        targets = y[:, None] if y.ndim == 1 else y
        eigenvalues, eigenvectors = torch.linalg.eigh(kernel / lambda1)
        if float(eigenvalues.min()) < -1e-8 * max(1.0, float(eigenvalues.max())):
            raise ValueError("the kernel is not positive semi-definite "
                             f"(smallest eigenvalue {float(eigenvalues.min()):.3g}).")
        return cls(eigenvalues.clamp_min(0), eigenvectors, targets,
                   eigenvectors.T @ targets.to(kernel))

    @property
    def n_outputs(self) -> int:
        return self.targets.shape[1]

    def block_inverses(self, q_matrix: torch.Tensor, temperature: float
                       ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """M_μ⁻¹ (P, D, D), w_μ = M_μ⁻¹ ỹ_μ (P, D) and ln det A = Σ_μ ln det M_μ, with
        M_μ = T·1_D + λ_μ Q̄ (on the kernel's device)."""
        q = q_matrix.to(self.eigenvalues)
        factor = factor_noisy_kernel(self.eigenvalues[:, None, None] * q, temperature,
                                     overwrite=True)
        inverses = spd_inverse(factor)
        w = (inverses @ self.projected_targets[:, :, None])[:, :, 0]
        return inverses, w, float(log_det_from_factor(factor).sum())


class SpectralAction(EffectiveAction):
    """S(Q̄) for K_R = (Q̄ ⊗ K)/λ1 on labels stacked output-major (docs/math/theory.md §3, FC
    and CNN-GAP).

    A is block diagonal in the eigenbasis of K/λ1 (`SpectralBasis`):
        ln det A = Σ_μ ln det M_μ,  yᵀA⁻¹y = Σ_μ ỹ_μᵀ M_μ⁻¹ ỹ_μ,  M_μ = T·1_D + λ_μ Q̄,
        G = (1/N) Σ_μ λ_μ (M_μ⁻¹ − w_μ w_μᵀ),  w_μ = M_μ⁻¹ ỹ_μ.
    A scalar Q̄ is the case D = 1.
    """

    cheap_hessian = True
    structure: PositiveDefiniteStructure

    def __init__(
        self,
        kernel: torch.Tensor,
        y: torch.Tensor,
        width: float,
        temperature: float,
        lambda1: float = 1.0,
    ):
        self._setup(SpectralBasis.from_kernel(kernel, y, lambda1), width, temperature)

    def _setup(self, basis: SpectralBasis, width: float, temperature: float) -> None:
        self.basis = basis
        self.width = check_width(width)
        self.temperature = check_positive("temperature", temperature)
        n_outputs = basis.n_outputs
        self.structure = ScalarStructure() if n_outputs == 1 else MatrixStructure(n_outputs)

    @classmethod
    def from_basis(cls, basis: SpectralBasis, width: float, temperature: float
                   ) -> SpectralAction:
        """The action on an eigendecomposition already computed (no new eigh)."""
        action = cls.__new__(cls)
        action._setup(basis, width, temperature)
        return action

    def at_width(self, width: float) -> SpectralAction:
        return SpectralAction.from_basis(self.basis, width, self.temperature)

    @property
    def eigenvalues(self) -> torch.Tensor:
        return self.basis.eigenvalues

    @property
    def eigenvectors(self) -> torch.Tensor:
        return self.basis.eigenvectors

    @property
    def projected_targets(self) -> torch.Tensor:
        return self.basis.projected_targets

    def block_inverses(self, q_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """`SpectralBasis.block_inverses` at this Q̄ and temperature."""
        return self.basis.block_inverses(self.structure.to_matrix(q_bar), self.temperature)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        """(Q̄ ⊗ K)/λ1, rebuilt from the eigendecomposition (O(P³); for inspection)."""
        vectors = self.basis.eigenvectors
        kernel = (vectors * self.basis.eigenvalues) @ vectors.T
        return torch.kron(self.structure.to_matrix(point).to(kernel), kernel)

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        inverses, w, log_det = self.block_inverses(point)
        lam = self.basis.eigenvalues
        structure = self.structure
        data_fit = log_det + float((self.basis.projected_targets * w).sum())
        outer = w[:, :, None] * w[:, None, :]
        gradient = torch.einsum("p,pab->ab", lam, inverses - outer).to(point) / self.width

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            v = structure.to_matrix(direction).to(lam)
            scaled = lam[:, None, None] * v  # K_R(V) block per eigen-direction
            solved = inverses @ scaled  # M⁻¹ λ V
            u = (solved @ w[:, :, None])[:, :, 0]
            cross = u[:, :, None] * w[:, None, :]
            term = -solved @ inverses + cross + cross.mT
            return structure.from_matrix(torch.einsum("p,pab->ab", lam, term).to(direction)
                                         / self.width)

        return ActionEvaluation(point, data_fit / self.width, structure.from_matrix(gradient),
                                hessian_vector)
