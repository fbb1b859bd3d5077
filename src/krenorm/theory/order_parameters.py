"""Order-parameter structures: where the order parameters live and what the solver may do with
them (docs/math/theory.md §3).

A structure knows the shape of its point, the infinite-width point, the prior part S₀ of the
action with its gradient and Hessian-vector product, which points are admissible, a fixed-point
map, an orthonormal tangent basis and an unconstrained parameterisation. Solvers ask it instead
of testing kinds, so a new order parameter plugs in as a new class.

Minimised (`stationary = "minimum"`), S₀(Q̄) = Tr Q̄ − ln det Q̄:
    ScalarStructure     Q̄ > 0 (FC, CNN-GAP), stored with shape (1,)
    DiagonalStructure   Q̄ = diag(q̄_i), q̄_i > 0 (LCN), S₀ = Σ_i (q̄_i − ln q̄_i)
    MatrixStructure     Q̄ SPD (FC with D outputs, CNN)
Stationary but not minimal (`stationary = "saddle"`):
    MeanTermStructure   (Q̄, Q) with Q̄ > 0, Q > −1 (FC with a non-odd activation),
                        S₀ = −Q̄Q + ln(1 + Q), stored as the vector (Q̄, Q)

Unconstrained parameterisations θ (for quasi-Newton solvers):
    scalar / diagonal:  q = exp(θ)
    matrix:             Q = L Lᵀ, θ = lower triangle of L
    (Q̄, Q):             Q̄ = exp(θ₁), Q = exp(θ₂) − 1
with the chain rule  diagonal: ∂θ S = s ⊙ g,  H_θ e = s ⊙ H[s ⊙ e] + s ⊙ g ⊙ e  (s = ∂q/∂θ),
                     matrix:   ∂L S = 2 g L,  H_L E = 2 H[E Lᵀ + L Eᵀ] L + 2 g E  (lower triangle).
"""

from __future__ import annotations

import math
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

Stationary = Literal["minimum", "saddle"]
HessianVector = Callable[[torch.Tensor], torch.Tensor]


class _StructureMeta(ABCMeta):
    """Keeps the old call ``OrderParameterStructure(kind, size)`` working, with a warning."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is OrderParameterStructure:
            warnings.warn(
                "OrderParameterStructure(kind, size) is deprecated; use MatrixStructure(size), "
                "DiagonalStructure(size) or ScalarStructure().",
                DeprecationWarning, stacklevel=2)
            return structure_of_kind(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class OrderParameterStructure(metaclass=_StructureMeta):
    """Where a saddle point of the effective action is searched (see the module docstring)."""

    #: "minimum": the physical point minimises S; "saddle": it is a stationary point with
    #: `n_negative_directions` directions of negative curvature.
    stationary: ClassVar[Stationary] = "minimum"
    n_negative_directions: ClassVar[int] = 0

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Shape of a point."""

    @property
    @abstractmethod
    def n_parameters(self) -> int:
        """Free real parameters (the dimension of the tangent space)."""

    @abstractmethod
    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The infinite-width point (α → 0), where the data term vanishes and ∇S₀ = 0."""

    @abstractmethod
    def is_admissible(self, point: torch.Tensor) -> bool:
        """True where S is defined (finite and inside the domain)."""

    def symmetrize(self, point: torch.Tensor) -> torch.Tensor:
        """Project round-off out of a point (symmetric part of a matrix)."""
        return point

    # -- prior part S₀ ----------------------------------------------------------------------

    @abstractmethod
    def prior_value(self, point: torch.Tensor) -> float:
        """S₀."""

    @abstractmethod
    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        """∂S₀."""

    @abstractmethod
    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """∂²S₀[V], batched over leading axes of the direction."""

    def prior_gap(self, point: torch.Tensor) -> float:
        """S₀(point) − S₀(identity): the prior's share of −(2/N) ln Z (docs/math/theory.md §3).
        Zero at the identity; ≥ 0 for the minimised structures."""
        return self.prior_value(point) - self.prior_value(self.identity(point.dtype))

    # -- solver support ---------------------------------------------------------------------

    @abstractmethod
    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        """An orthonormal (Frobenius) basis of the tangent space."""

    @abstractmethod
    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        """The image of the point under the fixed-point map of the stationarity conditions,
        or None where the map is not defined."""

    @abstractmethod
    def random_start(self, generator: torch.Generator) -> torch.Tensor:
        """A random admissible point around the identity (for multi-start solves)."""

    @abstractmethod
    def to_theta(self, point: torch.Tensor) -> torch.Tensor:
        """Unconstrained parameters θ of a point."""

    @abstractmethod
    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """The point of θ (admissible for every θ)."""

    @abstractmethod
    def gradient_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """∂S/∂θ from ∂S at from_theta(θ)."""

    @abstractmethod
    def hessian_vector_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor,
                                hessian_vector: HessianVector, direction_theta: torch.Tensor
                                ) -> torch.Tensor:
        """H_θ e from the gradient and Hessian-vector product at from_theta(θ)."""

    def congruence(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """Q̄ V Q̄: the inverse of the prior's Hessian at Q̄, and the Riemannian (affine-invariant)
        gradient map. Defined for the minimised structures."""
        raise NotImplementedError(f"{type(self).__name__} has no affine-invariant metric.")

    def soft_prior_directions(self, point: torch.Tensor, count: int) -> torch.Tensor:
        """The `count` softest directions of the prior's Hessian, stacked. Defined for the
        minimised structures."""
        raise NotImplementedError(f"{type(self).__name__} has no prior softest directions.")

    def point_from(self, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """A point from its entries (a fixed order parameter given by the user), checked."""
        point = torch.as_tensor(values, dtype=torch.float64).reshape(self.shape)
        if not self.is_admissible(point):
            raise ValueError(f"the fixed order parameter {point.tolist()} is not admissible for "
                             f"{type(self).__name__} (Q̄ must be positive definite).")
        return point

    # -- what a fit reports -----------------------------------------------------------------

    def q_bar(self, point: torch.Tensor) -> torch.Tensor:
        """Q̄ of a point."""
        return point

    def conjugate(self, point: torch.Tensor) -> float | None:
        """The field conjugate to Q̄ where it is an order parameter of its own (Q), else None."""
        return None

    @abstractmethod
    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        """q̄ with effective readout priors λ1/q̄ (docs/math/theory.md §3, §6)."""


class PositiveDefiniteStructure(OrderParameterStructure):
    """Q̄ positive definite, with S₀ = Tr Q̄ − ln det Q̄ minimised together with the data term;
    the stationarity condition Q̄⁻¹ = 1 + G gives the fixed-point map Q̄ ↦ (1 + G)⁻¹."""

    @abstractmethod
    def inverse(self, point: torch.Tensor) -> torch.Tensor:
        """Q̄⁻¹ (elementwise 1/q̄ for a diagonal)."""

    @abstractmethod
    def to_matrix(self, point: torch.Tensor) -> torch.Tensor:
        """Q̄ as a matrix (diag(q) for a vector)."""

    @abstractmethod
    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_matrix` on matrices of this structure (batched over leading axes)."""

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        """1 − Q̄⁻¹."""
        return self.identity(point.dtype) - self.inverse(point)

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        """(1 + G)⁻¹ with G = ∇S − ∇S₀ the data part of the gradient; None when 1 + G is not
        positive definite (far from the saddle point at large α, where the map leaves the
        cone)."""
        shifted = self.identity(gradient.dtype) + (gradient - self.prior_gradient(point))
        if not self.is_admissible(self.symmetrize(shifted)):
            return None
        return self.symmetrize(self.inverse(shifted))


@dataclass(frozen=True)
class DiagonalStructure(PositiveDefiniteStructure):
    """Q̄ = diag(q̄_1 … q̄_n), stored as the positive vector q̄ (LCN: one q̄_i per patch)."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}.")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,)

    @property
    def n_parameters(self) -> int:
        return self.size

    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.ones(self.size, dtype=dtype)

    def is_admissible(self, point: torch.Tensor) -> bool:
        return bool(torch.isfinite(point).all()) and bool((point > 0).all())

    def inverse(self, point: torch.Tensor) -> torch.Tensor:
        return 1 / point

    def to_matrix(self, point: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(point)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return torch.diagonal(matrix, dim1=-2, dim2=-1)

    def prior_value(self, point: torch.Tensor) -> float:
        return float((point - torch.log(point)).sum())

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """V / q̄² elementwise."""
        return direction / point**2

    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        return list(torch.eye(self.size, dtype=dtype))

    def random_start(self, generator: torch.Generator) -> torch.Tensor:
        """Log-normal entries around 1."""
        return torch.exp(0.5 * torch.randn(self.size, generator=generator, dtype=torch.float64))

    def to_theta(self, point: torch.Tensor) -> torch.Tensor:
        return torch.log(point)

    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.exp(theta)

    def gradient_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return torch.exp(theta) * gradient

    def hessian_vector_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor,
                                hessian_vector: HessianVector, direction_theta: torch.Tensor
                                ) -> torch.Tensor:
        scale = torch.exp(theta)
        return scale * hessian_vector(scale * direction_theta) + scale * gradient * direction_theta

    def congruence(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return point * direction * point

    def soft_prior_directions(self, point: torch.Tensor, count: int) -> torch.Tensor:
        """e_i for the largest q̄_i (the prior's Hessian is diag(1/q̄_i²))."""
        return torch.eye(self.size, dtype=point.dtype)[torch.topk(point, count).indices]

    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        return point


@dataclass(frozen=True)
class ScalarStructure(DiagonalStructure):
    """One positive Q̄ (FC with one output, CNN-GAP), stored with shape (1,)."""

    size: int = 1

    def __post_init__(self) -> None:
        if self.size != 1:
            raise ValueError(f"a scalar structure has size 1, got {self.size!r}; use "
                             "DiagonalStructure for several entries.")


@dataclass(frozen=True)
class MatrixStructure(PositiveDefiniteStructure):
    """Q̄ a size × size symmetric positive definite matrix (FC with D outputs, CNN)."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}.")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, self.size)

    @property
    def n_parameters(self) -> int:
        return self.size * (self.size + 1) // 2

    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.eye(self.size, dtype=dtype)

    def is_admissible(self, point: torch.Tensor) -> bool:
        if not bool(torch.isfinite(point).all()):
            return False
        return int(torch.linalg.cholesky_ex(point)[1]) == 0

    def symmetrize(self, point: torch.Tensor) -> torch.Tensor:
        return (point + point.mT) / 2

    def inverse(self, point: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(point)

    def to_matrix(self, point: torch.Tensor) -> torch.Tensor:
        return point

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix

    def prior_value(self, point: torch.Tensor) -> float:
        return float(torch.trace(point) - torch.linalg.slogdet(point)[1])

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """Q̄⁻¹ V Q̄⁻¹."""
        inverse = torch.linalg.inv(point)
        return inverse @ direction @ inverse

    def _tril(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = torch.tril_indices(self.size, self.size)
        return rows, cols

    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        """E_ii and (E_ij + E_ji)/√2 for i > j."""
        basis = []
        for i, j in zip(*self._tril(), strict=True):
            element = torch.zeros(self.size, self.size, dtype=dtype)
            if i == j:
                element[i, i] = 1.0
            else:
                element[i, j] = element[j, i] = 2**-0.5
            basis.append(element)
        return basis

    def random_start(self, generator: torch.Generator) -> torch.Tensor:
        """A Wishart matrix with 2·size degrees of freedom, scaled to mean 1."""
        factor = torch.randn(self.size, 2 * self.size, generator=generator, dtype=torch.float64)
        return factor @ factor.T / (2 * self.size)

    def to_theta(self, point: torch.Tensor) -> torch.Tensor:
        rows, cols = self._tril()
        return torch.linalg.cholesky(point)[rows, cols]

    def _cholesky_factor(self, theta: torch.Tensor) -> torch.Tensor:
        rows, cols = self._tril()
        factor = theta.new_zeros(self.size, self.size)
        factor[rows, cols] = theta
        return factor

    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        factor = self._cholesky_factor(theta)
        return factor @ factor.T

    def gradient_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        rows, cols = self._tril()
        return (2 * gradient @ self._cholesky_factor(theta))[rows, cols]

    def hessian_vector_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor,
                                hessian_vector: HessianVector, direction_theta: torch.Tensor
                                ) -> torch.Tensor:
        factor = self._cholesky_factor(theta)
        direction = self._cholesky_factor(direction_theta)
        dq = direction @ factor.T + factor @ direction.T
        out = 2 * hessian_vector(dq) @ factor + 2 * gradient @ direction
        rows, cols = self._tril()
        return out[rows, cols]

    def congruence(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return point @ direction @ point

    def soft_prior_directions(self, point: torch.Tensor, count: int) -> torch.Tensor:
        """The prior's Hessian V ↦ Q̄⁻¹VQ̄⁻¹ has eigenvalues 1/(q_i q_j) on sym(e_i e_jᵀ), e_i the
        eigenvectors of Q̄: the softest pair the largest products q_i q_j."""
        values, vectors = torch.linalg.eigh(point)
        i, j = torch.triu_indices(self.size, self.size)
        order = torch.argsort(values[i] * values[j], descending=True)[:count]
        left, right = vectors[:, i[order]].T, vectors[:, j[order]].T  # (count, size)
        directions = left[:, :, None] * right[:, None, :]
        directions = directions + directions.mT
        return directions / torch.linalg.matrix_norm(directions)[:, None, None]

    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        """Q̄_ii (the off-diagonal part has no prior counterpart)."""
        return torch.diagonal(point)


@dataclass(frozen=True)
class MeanTermStructure(OrderParameterStructure):
    """The pair (Q̄, Q) of an FC network with a non-odd activation, stored as (Q̄, Q).

    S₀ = −Q̄Q + ln(1 + Q); its Hessian [[0, −1], [−1, −1/(1 + Q)²]] has determinant −1, so the
    physical point is a saddle with one direction of negative curvature (docs/math/theory.md
    §3). Fixed-point map of the stationarity conditions, with c = ⟨(K − M)/λ1, B⟩/N and
    m = ⟨M/λ1, B⟩/N read off the gradient:  Q ← c,  Q̄ ← 1/(1 + c) − m/(1 + c)²;
    for M = 0 it is the map Q̄ ← (1 + G)⁻¹ of the odd case.
    """

    stationary: ClassVar[Stationary] = "saddle"
    n_negative_directions: ClassVar[int] = 1

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def n_parameters(self) -> int:
        return 2

    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(Q̄, Q) = (1, 0)."""
        return torch.tensor([1.0, 0.0], dtype=dtype)

    def is_admissible(self, point: torch.Tensor) -> bool:
        """Q̄ > 0 and Q > −1, where S is defined."""
        return (bool(torch.isfinite(point).all()) and float(point[0]) > 0
                and float(point[1]) > -1)

    def prior_value(self, point: torch.Tensor) -> float:
        q_bar, q = float(point[0]), float(point[1])
        return -q_bar * q + math.log1p(q)

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        """(−Q, −Q̄ + 1/(1 + Q))."""
        q_bar, q = point[0], point[1]
        return torch.stack([-q, -q_bar + 1 / (1 + q)])

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """[[0, −1], [−1, −1/(1 + Q)²]] V."""
        curvature = 1 / (1 + point[1]) ** 2
        first, second = direction[..., 0], direction[..., 1]
        return torch.stack([-second, -first - curvature * second], -1)

    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        return list(torch.eye(2, dtype=dtype))

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        q_bar, q = point[0], point[1]
        centred = gradient[0] + q
        mean_part = (q_bar - 1 / (1 + q) + gradient[1]) * -((1 + q) ** 2)
        target_q_bar = 1 / (1 + centred) - mean_part / (1 + centred) ** 2
        return torch.stack([target_q_bar, centred])

    def random_start(self, generator: torch.Generator) -> torch.Tensor:
        """Q̄ log-normal around 1, Q = exp(z) − 1 around 0."""
        draw = 0.5 * torch.randn(2, generator=generator, dtype=torch.float64)
        return torch.stack([torch.exp(draw[0]), torch.expm1(draw[1])])

    def _theta_scale(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.exp(theta)  # ∂(Q̄, Q)/∂θ = (e^θ₁, e^θ₂) = (Q̄, 1 + Q)

    def to_theta(self, point: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.log(point[0]), torch.log1p(point[1])])

    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.exp(theta[0]), torch.expm1(theta[1])])

    def gradient_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return self._theta_scale(theta) * gradient

    def hessian_vector_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor,
                                hessian_vector: HessianVector, direction_theta: torch.Tensor
                                ) -> torch.Tensor:
        scale = self._theta_scale(theta)
        return scale * hessian_vector(scale * direction_theta) + scale * gradient * direction_theta

    def point_from(self, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """(Q̄, Q) from two entries; from Q̄ alone the point with 1/(1 + Q) = Q̄, where
        K_R = Q̄ K/λ1: the infinite-width network with readout prior λ1/Q̄."""
        entries = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if entries.numel() == 1:
            entries = torch.cat([entries, 1 / entries - 1])
        if entries.numel() != 2 or not self.is_admissible(entries):
            raise ValueError(f"the fixed order parameter {entries.tolist()} must be Q̄ > 0 or "
                             "the pair (Q̄, Q) with Q̄ > 0, Q > −1.")
        return entries

    def q_bar(self, point: torch.Tensor) -> torch.Tensor:
        return point[:1]

    def conjugate(self, point: torch.Tensor) -> float | None:
        return float(point[1])

    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        return point[:1]


_KINDS: dict[str, Callable[[int], OrderParameterStructure]] = {
    "diagonal": DiagonalStructure, "matrix": MatrixStructure}


def structure_of_kind(kind: str, size: int) -> OrderParameterStructure:
    """The structure named by the old kind strings ('diagonal' or 'matrix')."""
    if kind not in _KINDS:
        raise ValueError(f"unknown structure kind {kind!r}; choose one of {tuple(_KINDS)}.")
    return _KINDS[kind](size)
