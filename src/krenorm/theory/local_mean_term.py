"""CNN, LCN and CNN-GAP with a non-odd activation (ReLU, square, GELU…): the (Q̄, Q) actions
(docs/math/theory.md §3.6).

With the per-patch means m_i^μ = μ(C_ii^{μμ}) (`kernels.local_means`), M_ij = m_i m_jᵀ,
s = 1/(λ1 Np) and R = (1 + Q)⁻¹:

    K_R(Q̄, Q) = s Σ_ij [Q̄_ij (K_ij − M_ij) + R_ij M_ij] = s[Σ_ij Q̄_ij K_ij + mᵀ(R − Q̄)m],
    S(Q̄, Q)   = −Tr(Q̄Q) + ln det(1 + Q) + (1/N)[ln det A + yᵀA⁻¹y],   A = T·1 + K_R,

with Q̄, Q symmetric Np×Np for a CNN and diagonal for an LCN (no weight sharing: the patches'
centred fields are independent). With B = A⁻¹ − v vᵀ, v = A⁻¹y, and G = s·m B mᵀ (Np×Np):

    ∂S/∂Q̄ = −Q + (1/N)[F(B) − G],          F(B)_ij = s⟨K_ij, B⟩_F,
    ∂S/∂Q  = −Q̄ + R − (1/N) R G R.

For a direction (V̄, V), A[V̄, V] = s[Σ V̄_ij K_ij − mᵀV̄m − mᵀ R V R m], and with
Z = −A⁻¹ A[V̄, V] A⁻¹ + u vᵀ + v uᵀ, u = A⁻¹ A[V̄, V] v, Z_m = s·m Z mᵀ:

    H[V̄, V]_Q̄ = −V + (1/N)[F(Z) − Z_m],
    H[V̄, V]_Q  = −V̄ − R V R + (1/N)[−R Z_m R + R V R G R + R G R V R].

One patch gives the FC (Q̄, Q) action (`mean_term`); m = 0 makes Q = Q̄⁻¹ − 1 and recovers the odd
actions; N = ∞ gives (1, 0) and the NNGP s Σ_i K_ii. CNN-GAP has one readout per channel, so the
pair is scalar and the FC action applies to the pooled kernel (1/Np²)Σ_ij K_ij with the pooled
mean (1/Np)Σ_i m_i (`PooledMeanTermKernels`).

The stationary point is a saddle: the prior part alone has as many negative curvature directions
as Q̄ has free entries (`LocalMeanTermStructure.n_negative_directions`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from krenorm._validation import check_positive, check_targets
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.grams import compute_local_blocks, local_diagonal_blocks
from krenorm.kernels.local_kernel import LocalKernel
from krenorm.kernels.local_means import local_means
from krenorm.linalg import factor_noisy_kernel, log_det_from_factor, spd_inverse
from krenorm.memory import DEFAULT_CHUNK_BYTES
from krenorm.theory.action import (
    ActionEvaluation,
    DiagonalBlocksBasis,
    EffectiveAction,
    GramBasis,
    LocalBlocksBasis,
)
from krenorm.theory.kernel_model import RenormalizedKernels
from krenorm.theory.mean_term import MeanTermKernels, mean_term_kernel
from krenorm.theory.order_parameters import (
    DiagonalStructure,
    HessianVector,
    MatrixStructure,
    OrderParameterStructure,
    PositiveDefiniteStructure,
    Stationary,
)
from krenorm.width import check_width

__all__ = [
    "ConvolutionalMeanTermKernels",
    "LocalMeanTermAction",
    "LocalMeanTermStructure",
    "LocallyConnectedMeanTermKernels",
    "PooledMeanTermKernels",
]


def _already_applied(product: torch.Tensor) -> HessianVector:
    """A Hessian-vector product computed beforehand, for the per-half chain rule (its own
    direction is the one the half structure pushes forward, so the argument is not needed)."""
    def apply(_direction: torch.Tensor) -> torch.Tensor:
        return product

    return apply


@dataclass(frozen=True)
class LocalMeanTermStructure(OrderParameterStructure):
    """The pair (Q̄, Q) of a CNN (symmetric Np×Np each, stored (2, Np, Np)) or an LCN (diagonal,
    stored (2, Np)) with a non-odd activation (docs/math/theory.md §3.6).

    Admissible: Q̄ and 1 + Q positive definite. S₀ = −Tr(Q̄Q) + ln det(1 + Q). Fixed-point map
    of the stationarity conditions, with C = ∂_Q̄S + Q and Γ = (1 + Q)(Q̄ − R − ∂_QS)(1 + Q) read
    off the gradient:  Q ← C,  Q̄ ← R_C − R_C Γ R_C,  R_C = (1 + C)⁻¹ (the FC map for Np = 1).
    """

    size: int
    diagonal: bool = False
    stationary: ClassVar[Stationary] = "saddle"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}.")
        # One negative curvature direction per free entry of Q̄ (the prior part's Hessian
        # [[0, −1], [−1, −R⊗R]] has that many negative eigenvalues).
        object.__setattr__(self, "n_negative_directions", self.half.n_parameters)

    @property
    def half(self) -> PositiveDefiniteStructure:
        """The structure of Q̄ alone (and of 1 + Q)."""
        return DiagonalStructure(self.size) if self.diagonal else MatrixStructure(self.size)

    @property
    def shape(self) -> tuple[int, ...]:
        return (2, *self.half.shape)

    @property
    def n_parameters(self) -> int:
        return 2 * self.half.n_parameters

    @property
    def _axis(self) -> int:
        """The axis that separates Q̄ from Q in a (batched) point or direction."""
        return -1 - len(self.half.shape)

    def split(self, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q̄, Q) of a point (batched over leading axes)."""
        return point.select(self._axis, 0), point.select(self._axis, 1)

    def join(self, q_bar: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.stack([q_bar, q], self._axis)

    def product(self, *factors: torch.Tensor) -> torch.Tensor:
        """The matrix product of Q̄-shaped factors (elementwise for diagonals)."""
        out = factors[0]
        for factor in factors[1:]:
            out = out * factor if self.diagonal else out @ factor
        return out

    def resolvent(self, q: torch.Tensor) -> torch.Tensor:
        """R = (1 + Q)⁻¹."""
        return self.half.inverse(self.half.identity(q.dtype).to(q) + q)

    def identity(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(Q̄, Q) = (1, 0)."""
        one = self.half.identity(dtype)
        return self.join(one, torch.zeros_like(one))

    def is_admissible(self, point: torch.Tensor) -> bool:
        if tuple(point.shape) != self.shape or not bool(torch.isfinite(point).all()):
            return False
        q_bar, q = self.split(point)
        one = self.half.identity(point.dtype)
        return self.half.is_admissible(q_bar) and self.half.is_admissible(one + q)

    def symmetrize(self, point: torch.Tensor) -> torch.Tensor:
        q_bar, q = self.split(point)
        return self.join(self.half.symmetrize(q_bar), self.half.symmetrize(q))

    def prior_value(self, point: torch.Tensor) -> float:
        q_bar, q = self.split(point)
        if self.diagonal:
            return float(-(q_bar * q).sum() + torch.log1p(q).sum())
        shifted = torch.eye(self.size, dtype=q.dtype) + q
        return float(-(q_bar * q).sum() + torch.linalg.slogdet(shifted)[1])

    def prior_gradient(self, point: torch.Tensor) -> torch.Tensor:
        """(−Q, −Q̄ + R)."""
        q_bar, q = self.split(point)
        return self.join(-q, -q_bar + self.resolvent(q))

    def prior_hessian_vector(self, point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """(−V, −V̄ − R V R), batched over leading axes of the direction."""
        r = self.resolvent(self.split(point)[1])
        v_bar, v = self.split(direction)
        return self.join(-v, -v_bar - self.product(r, v, r))

    def tangent_basis(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        half = self.half.tangent_basis(dtype)
        zero = torch.zeros(self.half.shape, dtype=dtype)
        return [self.join(e, zero) for e in half] + [self.join(zero, e) for e in half]

    def fixed_point_target(self, point: torch.Tensor, gradient: torch.Tensor
                           ) -> torch.Tensor | None:
        q_bar, q = self.split(point)
        g_bar, g = self.split(gradient)
        one = self.half.identity(point.dtype)
        centred = self.half.symmetrize(g_bar + q)
        if not self.half.is_admissible(one + centred):
            return None
        shift = one + q
        mean_part = -self.product(shift, g + q_bar - self.resolvent(q), shift)
        r_centred = self.half.inverse(one + centred)
        target = r_centred - self.product(r_centred, mean_part, r_centred)
        return self.join(self.half.symmetrize(target), centred)

    def random_start(self, generator: torch.Generator) -> torch.Tensor:
        """Q̄ and 1 + Q drawn as the half structure draws Q̄ (around 1)."""
        one = self.half.identity()
        return self.join(self.half.random_start(generator),
                         self.half.random_start(generator) - one)

    def to_theta(self, point: torch.Tensor) -> torch.Tensor:
        q_bar, q = self.split(point)
        return torch.cat([self.half.to_theta(q_bar),
                          self.half.to_theta(self.half.identity(q.dtype) + q)])

    def _split_theta(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.half.n_parameters
        return theta[:count], theta[count:]

    def from_theta(self, theta: torch.Tensor) -> torch.Tensor:
        first, second = self._split_theta(theta)
        one = self.half.identity(theta.dtype)
        return self.join(self.half.from_theta(first), self.half.from_theta(second) - one)

    def gradient_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        first, second = self._split_theta(theta)
        g_bar, g = self.split(gradient)
        return torch.cat([self.half.gradient_to_theta(first, g_bar),
                          self.half.gradient_to_theta(second, g)])

    def hessian_vector_to_theta(self, theta: torch.Tensor, gradient: torch.Tensor,
                                hessian_vector: HessianVector, direction_theta: torch.Tensor
                                ) -> torch.Tensor:
        """The chain rule per half; both halves' point directions go into one H[·]."""
        thetas = self._split_theta(theta)
        directions = self._split_theta(direction_theta)
        pushed = [torch.func.jvp(self.half.from_theta, (t,), (e,))[1]
                  for t, e in zip(thetas, directions, strict=True)]
        full = self.split(hessian_vector(self.join(*pushed)))
        gradients = self.split(gradient)
        return torch.cat([
            self.half.hessian_vector_to_theta(t, g, _already_applied(h), e)
            for t, g, h, e in zip(thetas, gradients, full, directions, strict=True)])

    def point_from(self, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """The pair from all its entries, or from Q̄ alone with R = Q̄ (Q = Q̄⁻¹ − 1), where
        K_R = s Σ Q̄_ij K_ij: the infinite-width network with retuned readout priors."""
        entries = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        half_size = math.prod(self.half.shape)
        if entries.numel() == half_size:
            q_bar = entries.reshape(self.half.shape)
            if self.half.is_admissible(q_bar):
                entries = self.join(q_bar, self.half.inverse(q_bar)
                                    - self.half.identity()).reshape(-1)
        if entries.numel() != 2 * half_size or not self.is_admissible(
                entries.reshape(self.shape)):
            raise ValueError(
                f"the fixed order parameter must be Q̄ ({half_size} entries, positive definite) "
                f"or the pair (Q̄, Q) ({2 * half_size} entries, Q̄ and 1 + Q positive "
                "definite).")
        return entries.reshape(self.shape)

    def q_bar(self, point: torch.Tensor) -> torch.Tensor:
        return self.split(point)[0]

    def conjugate_field(self, point: torch.Tensor) -> torch.Tensor:
        """Q (Np×Np, or the diagonal vector of an LCN)."""
        return self.split(point)[1]

    def readout_scales(self, point: torch.Tensor) -> torch.Tensor:
        return self.half.readout_scales(self.split(point)[0])


def mean_gram(means: torch.Tensor, weights: torch.Tensor, scale: float, *,
              diagonal: bool) -> torch.Tensor:
    """s Σ_ij W_ij m_i m_jᵀ = s mᵀ W m for means (Np, P): P×P, batched over leading axes of W
    (a vector W is a diagonal)."""
    weights = weights.to(means)
    if diagonal:
        return (means.T * weights[..., None, :]) @ means * scale
    return means.T @ weights @ means * scale


def local_mean_term_kernel(basis: GramBasis, means: torch.Tensor, scale: float,
                           structure: LocalMeanTermStructure, point: torch.Tensor
                           ) -> torch.Tensor:
    """K_R(Q̄, Q) = s[Σ_ij Q̄_ij K_ij + mᵀ(R − Q̄)m] on the training set."""
    q_bar, q = structure.split(point)
    return basis.combine(q_bar) + mean_gram(means, structure.resolvent(q) - q_bar, scale,
                                            diagonal=structure.diagonal)


class LocalMeanTermAction(EffectiveAction):
    """S(Q̄, Q) of a CNN (`LocalBlocksBasis`, matrix pair) or LCN (`DiagonalBlocksBasis`,
    diagonal pair) with a non-odd activation (module docstring; docs/math/theory.md §3.6).
    `means` is the (Np, P) stack m_i^μ; `scale` is s = 1/(λ1 Np)."""

    structure: LocalMeanTermStructure
    #: Hessian-vector products take stacked directions: dense Hessians (the saddle solver's
    #: Jacobian, the signature check) are assembled this many columns per call.
    hessian_batch: ClassVar[int] = 64

    def __init__(self, basis: GramBasis, means: torch.Tensor, scale: float, y: torch.Tensor,
                 width: float, temperature: float, structure: LocalMeanTermStructure):
        self.basis = basis
        self.means = means
        self.scale = check_positive("scale", scale)
        y = check_targets("y", y, basis.n_samples)
        if y.ndim != 1:
            raise ValueError("several outputs with a non-odd activation are not supported: the "
                             "(Q̄, Q) action is derived for one output "
                             "(docs/math/theory.md §3.6); fit one output at a time.")
        self.y = y
        self.width = check_width(width)
        self.temperature = check_positive("temperature", temperature)
        if means.shape != (structure.size, basis.n_samples):
            raise ValueError(f"means must have shape ({structure.size}, {basis.n_samples}), got "
                             f"{tuple(means.shape)}.")
        self.structure = structure

    def at_width(self, width: float) -> LocalMeanTermAction:
        return LocalMeanTermAction(self.basis, self.means, self.scale, self.y, width,
                                   self.temperature, self.structure)

    def at_temperature(self, temperature: float) -> LocalMeanTermAction:
        """The same data and width at temperature T (continuation in T)."""
        return LocalMeanTermAction(self.basis, self.means, self.scale, self.y, self.width,
                                   temperature, self.structure)

    def mean_gram(self, weights: torch.Tensor) -> torch.Tensor:
        """s Σ_ij W_ij m_i m_jᵀ = s mᵀ W m (P×P; W diagonal for an LCN), batched."""
        return mean_gram(self.means, weights, self.scale, diagonal=self.structure.diagonal)

    def mean_project(self, matrix: torch.Tensor) -> torch.Tensor:
        """s m B mᵀ (Np×Np; its diagonal for an LCN), batched."""
        m = self.means
        product = m @ matrix.to(m)
        if self.structure.diagonal:
            return (product * m).sum(-1) * self.scale
        return product @ m.T * self.scale

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return local_mean_term_kernel(self.basis, self.means, self.scale, self.structure, point)

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        structure = self.structure
        r = structure.resolvent(structure.split(point)[1]).to(self.means)
        factor = factor_noisy_kernel(self.train_kernel(point), self.temperature, overwrite=True)
        v = torch.cholesky_solve(self.y[:, None].to(factor), factor)[:, 0]
        a_inverse = spd_inverse(factor)
        b = a_inverse - torch.outer(v, v)
        data_fit = float(log_det_from_factor(factor) + self.y.to(v) @ v)
        g_mean = self.mean_project(b)
        gradient = structure.join(self.basis.project(b) - g_mean,
                                  -structure.product(r, g_mean, r)).to(point) / self.width

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            v_bar, v_q = (part.to(self.means) for part in structure.split(direction))
            turned = structure.product(r, v_q, r)  # R V R = −dR
            change = (self.basis.combine(v_bar) - self.mean_gram(v_bar)
                      - self.mean_gram(turned))  # A[V̄, V]
            solved = a_inverse @ change
            u = solved @ v
            cross = u[..., :, None] * v
            term = -solved @ a_inverse + cross + cross.transpose(-1, -2)
            term_mean = self.mean_project(term)
            first_bar = self.basis.project(term) - term_mean
            first_q = -structure.product(r, term_mean, r)
            curvature = (structure.product(turned, g_mean, r)
                         + structure.product(r, g_mean, turned))
            return structure.join(first_bar, first_q + curvature).to(direction) / self.width

        return ActionEvaluation(point, data_fit / self.width, gradient, hessian_vector)


class _LocalMeanTermKernels(RenormalizedKernels):
    """Shared set-up of the CNN and LCN (Q̄, Q) kernel models."""

    diagonal: ClassVar[bool]

    def __init__(self, spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                 lambda1: float, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 memory_limit: int | None = None, **_options: Any):
        # Further keywords (options of other kernel models) do not apply here.
        self.spec = spec
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.local = LocalKernel(x_train, spec.geometry, activation=spec.activation,
                                 lambda0=lambda0, chunk_bytes=chunk_bytes)
        self.means = local_means(x_train, spec.geometry, activation=spec.activation,
                                 lambda0=lambda0)
        self.n_patches = self.means.shape[0]
        self.scale = 1.0 / (lambda1 * self.n_patches)
        self.structure = LocalMeanTermStructure(self.n_patches, self.diagonal)
        self.basis = self._basis(chunk_bytes, memory_limit)

    @abstractmethod
    def _basis(self, chunk_bytes: int, memory_limit: int | None) -> GramBasis:
        """The Gram basis of the local blocks (all pairs for a CNN, the diagonal for an LCN)."""

    def action(self, y: torch.Tensor, width: float, temperature: float) -> LocalMeanTermAction:
        return LocalMeanTermAction(self.basis, self.means, self.scale, y, width, temperature,
                                   self.structure)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return local_mean_term_kernel(self.basis, self.means, self.scale, self.structure, point)

    def _test_means(self, x_test: torch.Tensor) -> torch.Tensor:
        return local_means(x_test, self.spec.geometry, activation=self.spec.activation,
                           lambda0=self.lambda0).to(self.means)

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        structure = self.structure
        q_bar, q = structure.split(point.to(self.means))
        weights = structure.resolvent(q) - q_bar  # on the mean blocks
        test_means = self._test_means(x_test)  # (Np, B)
        if self.diagonal:
            cross = self.local.contract_cross_diagonal(q_bar, x_test)
            cross_means = (test_means.T * weights) @ self.means
            diagonal_means = (test_means.T**2) @ weights
        else:
            cross = self.local.contract_cross(q_bar, x_test)
            cross_means = test_means.T @ weights @ self.means
            diagonal_means = ((test_means.T @ weights) * test_means.T).sum(-1)
        diagonal = self.local.contract_test_diagonals(q_bar, x_test)
        return (cross + cross_means) * self.scale, (diagonal + diagonal_means) * self.scale

    def test_batch_size(self) -> int:
        return self.local.batch_size(all_pairs=not self.diagonal)


class ConvolutionalMeanTermKernels(_LocalMeanTermKernels):
    """CNN with a non-odd activation: symmetric Np×Np Q̄ and Q (docs/math/theory.md §3.6)."""

    diagonal = False

    def _basis(self, chunk_bytes: int, memory_limit: int | None) -> GramBasis:
        blocks = compute_local_blocks(self.x_train, self.spec.geometry,
                                      activation=self.spec.activation, lambda0=self.lambda0,
                                      memory_limit=memory_limit, chunk_bytes=chunk_bytes)
        return LocalBlocksBasis(blocks, self.lambda1)

    def off_diagonal_share(self, point: torch.Tensor) -> float | None:
        q_bar, q = self.structure.split(point)
        full = self.train_kernel(point)
        diagonal_only = self.train_kernel(self.structure.join(torch.diag(torch.diagonal(q_bar)),
                                                              torch.diag(torch.diagonal(q))))
        return float(torch.linalg.norm(full - diagonal_only) / torch.linalg.norm(full))


class LocallyConnectedMeanTermKernels(_LocalMeanTermKernels):
    """LCN with a non-odd activation: diagonal Q̄ and Q, one pair per patch."""

    diagonal = True

    def _basis(self, chunk_bytes: int, memory_limit: int | None) -> GramBasis:
        blocks = local_diagonal_blocks(self.x_train, self.spec.geometry,
                                       activation=self.spec.activation, lambda0=self.lambda0,
                                       memory_limit=memory_limit)
        return DiagonalBlocksBasis(blocks, self.lambda1)


class PooledMeanTermKernels(MeanTermKernels):
    """CNN-GAP with a non-odd activation: the scalar pair (Q̄, Q) of the FC action on the pooled
    kernel (1/Np²)Σ_ij K_ij and the pooled mean (1/Np)Σ_i m_i (docs/math/theory.md §3.6). The
    action and training kernel are the FC model's (inherited); only the kernels and the test
    side differ."""

    def __init__(self, spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                 lambda1: float, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 memory_limit: int | None = None, **_options: Any):
        self.spec = spec
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.local = LocalKernel(x_train, spec.geometry, activation=spec.activation,
                                 lambda0=lambda0, chunk_bytes=chunk_bytes)
        blocks = compute_local_blocks(x_train, spec.geometry, activation=spec.activation,
                                      lambda0=lambda0, memory_limit=memory_limit,
                                      chunk_bytes=chunk_bytes)
        self.n_patches = blocks.n_patches
        self.ones = torch.ones(self.n_patches, self.n_patches, dtype=torch.float64,
                               device=x_train.device)
        self.kernel = blocks.contract(self.ones) / self.n_patches**2
        self.means = local_means(x_train, spec.geometry, activation=spec.activation,
                                 lambda0=lambda0).mean(0)

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        q_bar, q = float(point[0]), float(point[1])
        pairs = self.n_patches**2
        cross = self.local.contract_cross(self.ones, x_test) / pairs
        diagonal = self.local.contract_test_diagonals(self.ones, x_test) / pairs
        test_means = local_means(x_test, self.spec.geometry, activation=self.spec.activation,
                                 lambda0=self.lambda0).mean(0).to(cross)
        cross_means = torch.outer(test_means, self.means.to(cross))
        return (mean_term_kernel(q_bar, q, cross - cross_means, cross_means, self.lambda1),
                mean_term_kernel(q_bar, q, diagonal - test_means**2, test_means**2,
                                 self.lambda1))

    def test_batch_size(self) -> int:
        return self.local.batch_size()
