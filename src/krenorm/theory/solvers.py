"""Saddle-point solvers for the effective action (docs/math/theory.md §3).

The solver asks the order-parameter structure what kind of stationary point it looks for.

Minimised structures (Q̄ SPD, diagonal or scalar): the saddle point is the minimum of S, where
∂S/∂Q̄ = 1 − Q̄⁻¹ + G = 0  ⇔  Q̄ = (1 + G)⁻¹. Methods (all with the analytic gradient):

- "newton":   Newton's method in Q̄ coordinates with the exact Hessian (assembled from
              Hessian-vector products; few parameters: FC, CNN-GAP, LCN, small CNNs), eigenvalue-
              modified when indefinite, with a backtracking line search that keeps Q̄ SPD.
- "anderson": Anderson-accelerated fixed point Q̄ ← (1 + G(Q̄))⁻¹ (one gradient per iteration,
              no Hessian; the default for large CNN Q̄), safeguarded by damped steps; when it
              has not converged in 100 iterations (large α) it hands over to L-BFGS and a
              Newton-Krylov polish.
- "newton-krylov": inexact Newton with conjugate gradients on Hessian-vector products.
- "fixed-point": the damped iteration Q̄ ← Q̄ + η[(1 + G)⁻¹ − Q̄], η halved when S increases.
- "lbfgs":    scipy's L-BFGS-B on the unconstrained parameterisation of the structure.

Saddle structures ((Q̄, Q) of a non-odd activation), where S has no minimum to descend to:

- "fixed-point" (and "auto"): the damped fixed point of the stationarity conditions, damping
              halved whenever ‖∇S‖ more than doubles; where it stalls (large α), Powell's hybrid
              Newton method on ∇S = 0 from where it stopped and from the start (up to
              `HYBRID_LIMIT` free entries: a dense Jacobian per step); above that limit
              Newton–Krylov from the same two points instead.
- "newton":   the hybrid Newton method alone (few parameters).
- "newton-krylov": Newton's method on ∇S = 0 with the Newton equation H δ = −∇S solved by
              GMRES on analytic Hessian-vector products (preconditioned by the inverse of the
              prior part's Hessian, exact at N = ∞), no dense matrix; steps backtracked on
              ‖∇S‖, a merit function that falls along every inexact Newton direction.
              Continuation in N from infinite width (`krenorm.theory.continuation`) supplies
              the start far from α = 0.

The signature of a saddle (how many Hessian eigenvalues are negative and positive) is counted
from the dense Hessian up to `DENSE_SADDLE_LIMIT` free entries; above, from Haynsworth's inertia
additivity In(H) = In(H_QQ) + In(H/H_QQ), with the two extreme eigenvalues that decide it
(largest of H_QQ, smallest of its Schur complement) from LOBPCG (`saddle_signature`).

Every solve reports ‖∇S‖, iterations, a converged flag and the curvature at the solution (the
smallest Hessian eigenvalue in point coordinates, Frobenius metric; for a saddle the full
Hessian, its eigenvalues and whether their signature is the expected one); several starts are
compared. All line searches are one backtracking rule (`_backtrack`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse.linalg
import torch

from krenorm.fixed_point import AndersonMixer
from krenorm.theory.action import ActionEvaluation, EffectiveAction
from krenorm.theory.diagnostics import (
    SOLVER_METHODS,
    SaddlePoint,
    SolverDiagnostics,
    SolverMethod,
    SolverSettings,
)
from krenorm.theory.order_parameters import OrderParameterStructure

__all__ = [
    "DENSE_HESSIAN_LIMIT",
    "DENSE_SADDLE_LIMIT",
    "HYBRID_LIMIT",
    "NEWTON_LIMIT",
    "SOLVER_METHODS",
    "LastEvaluationCache",
    "SaddlePoint",
    "SaddlePointConvergenceWarning",
    "SaddleSignature",
    "SolverDiagnostics",
    "SolverMethod",
    "SolverProgress",
    "SolverSettings",
    "gradient_norm",
    "min_hessian_eigenvalue",
    "saddle_signature",
    "solve_saddle_point",
]

#: Above this many free entries of Q̄ the smallest Hessian eigenvalue comes from LOBPCG.
DENSE_HESSIAN_LIMIT = 80
#: The quick LOBPCG estimate of the smallest Hessian eigenvalue: block size, how many of its
#: start columns are random (the others are the prior's softest directions), iterations.
_START_BLOCK = 8
_RANDOM_START = 2
_QUICK_ITERATIONS = 4
#: A quick estimate (an upper bound) below this value is refined to full convergence.
_REFINE_BELOW = 0.1
#: "auto" uses Newton (a dense Hessian per iteration) up to this many free entries of Q̄ for
#: actions whose Hessian-vector products are not cheap (Gram-linear: two P×P×P products each).
NEWTON_LIMIT = 16
#: A stalled saddle fixed point falls back to the hybrid Newton method (a dense Jacobian per
#: step) up to this many free entries of (Q̄, Q), to Newton–Krylov above.
HYBRID_LIMIT = 300
#: Up to this many free entries of (Q̄, Q) the saddle's full Hessian is assembled and reported;
#: above, its signature comes from the inertia test (`saddle_signature`).
DENSE_SADDLE_LIMIT = 600


class SaddlePointConvergenceWarning(RuntimeWarning):
    """The saddle-point solver stopped before the gradient tolerance was met."""


@dataclass(frozen=True)
class SolverProgress:
    """One evaluation of S during a solve, for progress displays: evaluations so far, ‖∇S‖ and
    S at the evaluated point, and passes over the kernel blocks so far in this solve (None for
    actions without blocks)."""

    evaluations: int
    gradient_norm: float
    action: float
    block_passes: int | None


ProgressCallback = Callable[[SolverProgress], None]


class ForwardingAction(EffectiveAction):
    """`inner` itself; subclasses change how it is evaluated (reporting, caching)."""

    def __init__(self, inner: EffectiveAction):
        self.inner = inner
        self.structure = inner.structure
        self.width = inner.width
        self.temperature = inner.temperature
        self.cheap_hessian = inner.cheap_hessian  # type: ignore[misc]

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        return self.inner.data_term(point)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        return self.inner.train_kernel(point)

    def at_width(self, width: float) -> EffectiveAction:
        return self.inner.at_width(width)

    def identity(self) -> torch.Tensor:
        return self.inner.identity()

    def block_passes(self) -> int | None:
        return self.inner.block_passes()

    def evaluate(self, point: torch.Tensor) -> ActionEvaluation:
        return self.inner.evaluate(point)

    def evaluate_with_products(self, point: torch.Tensor, directions: torch.Tensor
                               ) -> ActionEvaluation:
        return self.inner.evaluate_with_products(point, directions)


class LastEvaluationCache(ForwardingAction):
    """Remembers the last evaluation: asking again for S at the same point (a polish or a
    curvature check right after a solve that ended there) costs nothing instead of two passes
    over the kernel blocks (docs/scale.md §4). Products known with it are kept too."""

    def __init__(self, inner: EffectiveAction):
        super().__init__(inner)
        self.last: ActionEvaluation | None = None

    def _cached(self, point: torch.Tensor) -> ActionEvaluation | None:
        last = self.last
        if last is not None and last.point.shape == point.shape and bool(
                torch.equal(last.point, point.to(last.point))):
            return last
        return None

    def evaluate(self, point: torch.Tensor) -> ActionEvaluation:
        cached = self._cached(point)
        if cached is None:
            cached = self.last = self.inner.evaluate(point)
        return cached

    def evaluate_with_products(self, point: torch.Tensor, directions: torch.Tensor
                               ) -> ActionEvaluation:
        cached = self._cached(point)
        if cached is not None and cached.known_products is not None and bool(
                torch.equal(cached.known_products[0], directions)):
            return cached
        self.last = self.inner.evaluate_with_products(point, directions)
        return self.last


class _ReportingAction(ForwardingAction):
    """An action that reports every evaluation to a callback and otherwise is `inner`."""

    def __init__(self, inner: EffectiveAction, callback: ProgressCallback):
        super().__init__(inner)
        self.callback = callback
        self.evaluations = 0
        self.first_passes = inner.block_passes()

    def _report(self, evaluation: ActionEvaluation) -> ActionEvaluation:
        self.evaluations += 1
        passes = self.inner.block_passes()
        self.callback(SolverProgress(
            self.evaluations, gradient_norm(evaluation), evaluation.value,
            None if passes is None or self.first_passes is None else passes - self.first_passes))
        return evaluation

    def evaluate_with_products(self, point: torch.Tensor, directions: torch.Tensor
                               ) -> ActionEvaluation:
        return self._report(self.inner.evaluate_with_products(point, directions))

    def evaluate(self, point: torch.Tensor) -> ActionEvaluation:
        return self._report(self.inner.evaluate(point))


class _Coordinates:
    """Orthonormal (Frobenius) coordinates c of points of a structure."""

    def __init__(self, structure: OrderParameterStructure, dtype: torch.dtype):
        self.structure = structure
        self.basis = torch.stack(structure.tangent_basis(dtype))
        self._flat = self.basis.reshape(self.basis.shape[0], -1)

    @property
    def size(self) -> int:
        return self.basis.shape[0]

    def to_coordinates(self, q: torch.Tensor) -> torch.Tensor:
        """Coordinates of q, batched over leading axes: (..., *shape) → (..., size)."""
        shape = self.basis.shape[1:]
        return q.reshape(*q.shape[:q.ndim - len(shape)], -1) @ self._flat.T

    def from_coordinates(self, c: torch.Tensor) -> torch.Tensor:
        """The inverse map, batched over leading axes: (..., size) → (..., *shape)."""
        return (c @ self._flat).reshape(*c.shape[:-1], *self.basis.shape[1:])

    def hessian(self, evaluation: ActionEvaluation, batch: int = 1) -> torch.Tensor:
        """The dense Hessian in these coordinates (symmetrised): one product per column, or
        `batch` columns per call for actions whose products take stacked directions."""
        columns = torch.cat([self.to_coordinates(evaluation.hessian_vector(
            self.basis[start:start + batch] if batch > 1 else self.basis[start]).reshape(
                -1, *self.basis.shape[1:])) for start in range(0, self.size, batch)])
        return (columns + columns.T) / 2


class _PairCoordinates:
    """The same orthonormal coordinates as `_Coordinates` for a (Q̄, Q) pair of symmetric or
    diagonal halves (Q̄'s entries, then Q's; E_ii and (E_ij + E_ji)/√2 for i > j), by indexing
    instead of a dense basis: the basis of a 64-patch CNN pair would hold 4160 × 8192 numbers.
    """

    def __init__(self, half: OrderParameterStructure, dtype: torch.dtype):
        self.half_shape = tuple(half.shape)
        self.dtype = dtype
        if len(self.half_shape) == 2:
            size = self.half_shape[0]
            self.rows, self.cols = torch.tril_indices(size, size)
            self.weights = torch.where(self.rows == self.cols, 1.0, 2**0.5).to(dtype)
        self.half_size = int(half.n_parameters)

    @property
    def size(self) -> int:
        return 2 * self.half_size

    def _half_to(self, q: torch.Tensor) -> torch.Tensor:
        if len(self.half_shape) == 1:
            return q
        return q[..., self.rows, self.cols] * self.weights

    def _half_from(self, c: torch.Tensor) -> torch.Tensor:
        if len(self.half_shape) == 1:
            return c
        out = torch.zeros(*c.shape[:-1], *self.half_shape, dtype=c.dtype)
        values = c / self.weights
        out[..., self.rows, self.cols] = values
        out[..., self.cols, self.rows] = values
        return out

    def to_coordinates(self, q: torch.Tensor) -> torch.Tensor:
        """(..., 2, *half) → (..., size)."""
        axis = q.ndim - len(self.half_shape) - 1
        return torch.cat([self._half_to(q.select(axis, 0)), self._half_to(q.select(axis, 1))],
                         -1)

    def from_coordinates(self, c: torch.Tensor) -> torch.Tensor:
        """(..., size) → (..., 2, *half)."""
        axis = c.ndim - 1
        return torch.stack([self._half_from(c[..., :self.half_size]),
                            self._half_from(c[..., self.half_size:])], axis)


def _saddle_coordinates(structure: OrderParameterStructure, dtype: torch.dtype
                        ) -> _Coordinates | _PairCoordinates:
    """Index-based coordinates for a pair of matrix or diagonal halves, else the dense basis."""
    half = getattr(structure, "half", None)
    if isinstance(half, OrderParameterStructure) and len(half.shape) in (1, 2) and tuple(
            structure.shape) == (2, *half.shape):
        return _PairCoordinates(half, dtype)
    return _Coordinates(structure, dtype)


def is_positive_definite(structure: OrderParameterStructure, q: torch.Tensor) -> bool:
    """Deprecated: ``structure.is_admissible(q)``."""
    warnings.warn("is_positive_definite is deprecated; use structure.is_admissible.",
                  DeprecationWarning, stacklevel=2)
    return structure.is_admissible(q)


def gradient_norm(evaluation: ActionEvaluation) -> float:
    """‖∂S‖_F in point coordinates."""
    return float(torch.linalg.norm(evaluation.gradient))


def min_hessian_eigenvalue(action: EffectiveAction, q_bar: torch.Tensor,
                           evaluation: ActionEvaluation | None = None) -> float:
    """Smallest eigenvalue of ∂²S/∂Q̄² on symmetric (or diagonal) directions, Frobenius metric.

    Dense for few parameters or cheap Hessians. Otherwise LOBPCG on batched Hessian-vector
    products, preconditioned by the inverse of the prior's Hessian (V ↦ Q̄ V Q̄), with a block of
    the prior's six softest directions and two random ones: the data term perturbs the prior's
    curvature, so the softest direction of S lies mostly in that block, and `_QUICK_ITERATIONS`
    iterations give a Rayleigh quotient (an upper bound) within 1e-4 of the eigenvalue (at most
    1.5e-5 measured on MNIST CNN saddles with 16 and 49 patches, α = 0.4 to 100, and on random
    SPD Q̄; tests/test_theory.py). A block of two needed 48 iterations for 6e-4 with 49 patches,
    whose prior spectrum is clustered at the bottom. A value below `_REFINE_BELOW` (near-singular
    curvature, where the sign matters) is refined to convergence. `evaluation` (S at q_bar) is
    reused when given."""
    evaluation = action.evaluate(q_bar) if evaluation is None else evaluation
    structure = action.structure
    coordinates = _Coordinates(structure, q_bar.dtype)
    size = coordinates.size
    if not _uses_lobpcg(action):
        return float(torch.linalg.eigvalsh(coordinates.hessian(evaluation))[0])

    def apply(function: Callable[[torch.Tensor], torch.Tensor], block: np.ndarray
              ) -> np.ndarray:
        # All columns in one call: Gram-linear Hessian-vector products are batched, so a block
        # costs one pass over the kernel blocks instead of one per column.
        columns = torch.as_tensor(np.atleast_2d(block.T), dtype=q_bar.dtype)  # (k, size)
        images = function(coordinates.from_coordinates(columns))
        return coordinates.to_coordinates(images).T.numpy()

    def inverse_prior_hessian(direction: torch.Tensor) -> torch.Tensor:
        return structure.congruence(q_bar, direction)

    products = _SpanCache(lambda block: apply(evaluation.hessian_vector, block))
    if evaluation.known_products is not None:
        # Products computed with S itself (`_CurvaturePrefetch`): LOBPCG's first block lies in
        # their span, so it costs no pass.
        directions, images = evaluation.known_products
        products.seed(coordinates.to_coordinates(directions).T.numpy(),
                      coordinates.to_coordinates(images).T.numpy())
    shape = (size, size)
    hessian = scipy.sparse.linalg.LinearOperator(
        shape, matvec=lambda vector: products(np.reshape(vector, (-1, 1)))[:, 0],
        matmat=products,
        dtype=np.float64)
    preconditioner = scipy.sparse.linalg.LinearOperator(
        shape, matvec=lambda vector: apply(inverse_prior_hessian, vector)[:, 0],
        matmat=lambda block: apply(inverse_prior_hessian, block), dtype=np.float64)
    start = _curvature_start(coordinates, q_bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lobpcg's "not reaching tolerance" note
        smallest = float(np.min(scipy.sparse.linalg.lobpcg(
            hessian, start, M=preconditioner, largest=False, tol=1e-6,
            maxiter=_QUICK_ITERATIONS)[0]))
        if smallest < _REFINE_BELOW:
            # A Rayleigh quotient is an upper bound: near singular curvature, converge it fully.
            smallest = float(np.min(scipy.sparse.linalg.lobpcg(
                hessian, start, M=preconditioner, largest=False, tol=1e-8, maxiter=300)[0]))
    return smallest


def _uses_lobpcg(action: EffectiveAction) -> bool:
    """Whether `min_hessian_eigenvalue` takes the LOBPCG path for this action."""
    return action.structure.n_parameters > DENSE_HESSIAN_LIMIT and not action.cheap_hessian


def _curvature_start(coordinates: _Coordinates, q_bar: torch.Tensor) -> np.ndarray:
    """LOBPCG's start block (size × k): the prior's softest directions at q_bar and
    `_RANDOM_START` random columns (fixed seed)."""
    size = coordinates.size
    soft = coordinates.structure.soft_prior_directions(q_bar, min(size, _START_BLOCK)
                                                       - _RANDOM_START)
    # Random columns keep the block from being exactly orthogonal to the softest direction of
    # S when symmetry makes the prior's directions miss it.
    return np.concatenate([coordinates.to_coordinates(soft).T.numpy(),
                           np.random.default_rng(0).standard_normal((size, _RANDOM_START))],
                          axis=1)


class _CurvaturePrefetch(ForwardingAction):
    """`inner`, except that an evaluation predicted to meet the gradient tolerance also
    computes the Hessian-vector products of the curvature check's start block
    (`evaluate_with_products`): for a Gram-linear action they ride on the evaluation's two
    passes over the kernel blocks, and LOBPCG's first application then costs none
    (docs/scale.md §4).

    The prediction extrapolates the last two gradient norms geometrically (‖g_k‖²/‖g_{k−1}‖,
    what a linearly-or-faster converging iteration gives). A wrong guess costs the P×P algebra
    of the products, not a pass; a missed one costs what it did before: two passes."""

    def __init__(self, inner: EffectiveAction, tolerance: float):
        super().__init__(inner)
        self.tolerance = tolerance
        self.coordinates = _Coordinates(inner.structure, torch.float64)
        self.norms: list[float] = []

    def _predicted_converged(self) -> bool:
        if len(self.norms) < 2:
            return False
        previous, last = self.norms[-2:]
        return last < previous and last * last / previous <= self.tolerance

    def evaluate(self, point: torch.Tensor) -> ActionEvaluation:
        if self._predicted_converged():
            start = _curvature_start(self.coordinates, point)
            directions = self.coordinates.from_coordinates(torch.as_tensor(start.T))
            evaluation = self.inner.evaluate_with_products(point, directions)
        else:
            evaluation = self.inner.evaluate(point)
        self.norms.append(gradient_norm(evaluation))
        return evaluation


class _SpanCache:
    """A linear operator's products, answered without applying it again for blocks that lie in
    the span of blocks it was applied to before: H (V c) = (H V) c.

    LOBPCG ends with an "exact" Rayleigh–Ritz step on its best block X, which it applies the
    operator to once more; X is a combination of the blocks applied during the iterations, so
    its image is that combination of their images. For the Gram-linear Hessian one application
    costs two passes over the kernel blocks (docs/scale.md §4); this saves them. A block is
    reused only when it lies in the span to 1e-12 (relative) and the stored blocks are well
    conditioned (condition number below 1e8), so the reused image is exact to about 1e-8
    relative at worst — far below the 1e-4 accuracy of the quick eigenvalue estimate."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray]):
        self.function = function
        self.inputs: np.ndarray | None = None   # (size, k): every column applied so far
        self.images: np.ndarray | None = None   # (size, k): their images
        self.applications = 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64)
        block = block.reshape(block.shape[0], -1)
        reused = self._from_span(block)
        if reused is not None:
            return reused
        images = np.asarray(self.function(block), dtype=np.float64).reshape(block.shape)
        self.applications += 1
        if self.inputs is None or self.images is None:
            self.inputs, self.images = block.copy(), images.copy()
        else:
            self.inputs = np.concatenate([self.inputs, block], axis=1)
            self.images = np.concatenate([self.images, images], axis=1)
        return images

    def seed(self, inputs: np.ndarray, images: np.ndarray) -> None:
        """Products known beforehand (columns of `inputs` and their `images`)."""
        self.inputs, self.images = inputs.copy(), images.copy()

    def _from_span(self, block: np.ndarray) -> np.ndarray | None:
        if self.inputs is None or self.images is None or (
                self.inputs.shape[1] >= self.inputs.shape[0]):
            return None
        singular = np.linalg.svd(self.inputs, compute_uv=False)
        if singular[-1] <= 1e-8 * singular[0]:
            return None
        coefficients = np.linalg.lstsq(self.inputs, block, rcond=None)[0]
        residual = np.linalg.norm(self.inputs @ coefficients - block, axis=0)
        if np.any(residual > 1e-12 * np.maximum(np.linalg.norm(block, axis=0), 1e-300)):
            return None
        return self.images @ coefficients


@dataclass
class _Run:
    evaluation: ActionEvaluation
    iterations: int
    evaluations: int
    message: str
    final_damping: float | None = None


Accept = Callable[[ActionEvaluation, float], bool]


def _backtrack(action: EffectiveAction, evaluation: ActionEvaluation, direction: torch.Tensor,
               accept: Accept, *, length: float = 1.0, smallest: float
               ) -> tuple[ActionEvaluation | None, float, int]:
    """The one line search: halve the step along `direction` from `length` until the point is
    admissible and `accept(trial, length)` holds; (None, ...) once the step is below
    `smallest`. Returns the accepted evaluation, its step length and the evaluations used."""
    structure = action.structure
    evaluations = 0
    while length > smallest:
        candidate = structure.symmetrize(evaluation.point + length * direction)
        if structure.is_admissible(candidate):
            trial = action.evaluate(candidate)
            evaluations += 1
            if accept(trial, length):
                return trial, length, evaluations
        length /= 2
    return None, length, evaluations


def _newton(action: EffectiveAction, q: torch.Tensor, tolerance: float,
            max_iterations: int) -> _Run:
    coordinates = _Coordinates(action.structure, q.dtype)
    evaluation = action.evaluate(q)
    evaluations = 1
    for iteration in range(max_iterations):
        norm = gradient_norm(evaluation)
        if norm <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        eigenvalues, eigenvectors = torch.linalg.eigh(coordinates.hessian(evaluation))
        # Indefinite far from the minimum: flip and floor the curvature (modified Newton).
        floor = 1e-8 * max(1.0, float(eigenvalues.abs().max()))
        eigenvalues = eigenvalues.abs().clamp_min(floor)
        gradient = coordinates.to_coordinates(evaluation.gradient)
        step = coordinates.from_coordinates(-(eigenvectors @ ((eigenvectors.T @ gradient)
                                                              / eigenvalues)))
        slope = float(gradient @ coordinates.to_coordinates(step))
        current = evaluation

        def armijo(trial: ActionEvaluation, length: float, current: ActionEvaluation = current,
                   slope: float = slope, norm: float = norm) -> bool:
            decrease = trial.value < current.value + 1e-4 * length * slope
            # At round-off level S cannot resolve progress; the gradient still can.
            flat = abs(trial.value - current.value) <= 1e-13 * max(1.0, abs(trial.value))
            return decrease or (flat and gradient_norm(trial) < norm)

        trial, _, used = _backtrack(action, evaluation, step, armijo, smallest=1e-10)
        evaluations += used
        if trial is None:
            return _Run(evaluation, iteration, evaluations, "line search failed")
        evaluation = trial
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _descent_direction(structure: OrderParameterStructure,
                       evaluation: ActionEvaluation) -> torch.Tensor:
    """(1 + G)⁻¹ − Q̄ where the fixed point is defined, else the Riemannian (affine-invariant)
    steepest-descent direction −Q̄ ∇S Q̄, whose slope −‖Q̄^½ ∇S Q̄^½‖² is always negative."""
    target = structure.fixed_point_target(evaluation.point, evaluation.gradient)
    if target is not None:
        return target - evaluation.point
    return -structure.congruence(evaluation.point, evaluation.gradient)


def _damped_step(action: EffectiveAction, evaluation: ActionEvaluation, step: float
                 ) -> tuple[ActionEvaluation | None, float, int]:
    """Q̄ + η·D (D from `_descent_direction`) with η halved until Q̄ stays SPD and S does not
    increase."""
    bound = evaluation.value + 1e-13 * max(1.0, abs(evaluation.value))
    return _backtrack(action, evaluation, _descent_direction(action.structure, evaluation),
                      lambda trial, _length: trial.value <= bound, length=step, smallest=1e-12)


def _fixed_point(action: EffectiveAction, q: torch.Tensor, tolerance: float,
                 max_iterations: int) -> _Run:
    evaluation = action.evaluate(q)
    evaluations, step = 1, 1.0
    for iteration in range(max_iterations):
        if gradient_norm(evaluation) <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        trial, step, used = _damped_step(action, evaluation, step)
        evaluations += used
        if trial is None:
            return _Run(evaluation, iteration, evaluations, "step size underflow")
        evaluation, step = trial, min(1.0, 2 * step)
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _anderson(action: EffectiveAction, q: torch.Tensor, tolerance: float, max_iterations: int,
              memory: int = 8) -> _Run:
    """Anderson mixing (type II) on the map Q̄ ↦ (1 + G(Q̄))⁻¹ in orthonormal coordinates.
    An extrapolated point that leaves the SPD cone or increases the residual tenfold resets the
    history and falls back to a damped plain step."""
    structure = action.structure
    coordinates = _Coordinates(structure, q.dtype)
    evaluation = action.evaluate(q)
    evaluations = 1
    mixer = AndersonMixer(memory, rcond=1e-10)
    for iteration in range(max_iterations):
        if gradient_norm(evaluation) <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        target = structure.fixed_point_target(evaluation.point, evaluation.gradient)
        trial = None
        if target is not None:
            x = coordinates.to_coordinates(evaluation.point)
            proposal = mixer.propose(x, coordinates.to_coordinates(target) - x)
            candidate = structure.symmetrize(coordinates.from_coordinates(proposal))
            if structure.is_admissible(candidate):
                trial = action.evaluate(candidate)
                evaluations += 1
                if gradient_norm(trial) > 10 * gradient_norm(evaluation):
                    trial = None
        if trial is None:
            mixer.reset()
            trial, _, used = _damped_step(action, evaluation, 1.0)
            evaluations += used
            if trial is None:
                return _Run(evaluation, iteration, evaluations, "step size underflow")
        evaluation = trial
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _lbfgs(action: EffectiveAction, q: torch.Tensor, tolerance: float,
           max_iterations: int) -> _Run:
    structure = action.structure
    counter = {"evaluations": 0}
    last: dict[bytes, ActionEvaluation] = {}

    def value_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta_tensor = torch.as_tensor(theta, dtype=q.dtype)
        evaluation = action.evaluate(structure.symmetrize(structure.from_theta(theta_tensor)))
        counter["evaluations"] += 1
        last.clear()
        last[np.asarray(theta, dtype=np.float64).tobytes()] = evaluation
        return evaluation.value, structure.gradient_to_theta(
            theta_tensor, evaluation.gradient).numpy()

    result = scipy.optimize.minimize(
        value_and_gradient, structure.to_theta(q).numpy(), jac=True, method="L-BFGS-B",
        options={"gtol": tolerance, "ftol": 0.0, "maxiter": max_iterations, "maxcor": 30},
    )
    # The minimiser usually ends on the point it evaluated last: reuse that evaluation (two
    # passes over the blocks saved, docs/scale.md §4) instead of evaluating it again.
    final = last.get(np.asarray(result.x, dtype=np.float64).tobytes())
    if final is None:
        q_bar = structure.symmetrize(structure.from_theta(torch.as_tensor(result.x)))
        final = action.evaluate(q_bar)
        counter["evaluations"] += 1
    return _Run(final, int(result.nit), counter["evaluations"], str(result.message))


def _newton_krylov(action: EffectiveAction, q: torch.Tensor, tolerance: float,
                   max_iterations: int) -> _Run:
    """Inexact Newton: H δ = −∇S by conjugate gradients on Hessian-vector products (no dense
    Hessian), steps accepted while Q̄ stays SPD and the gradient norm falls. For polishing a
    point already near the saddle."""
    coordinates = _Coordinates(action.structure, q.dtype)
    evaluation = action.evaluate(q)
    evaluations = 1
    size = coordinates.size
    for iteration in range(max_iterations):
        norm = gradient_norm(evaluation)
        if norm <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        current = evaluation

        def matvec(vector: np.ndarray, current: ActionEvaluation = current) -> np.ndarray:
            direction = coordinates.from_coordinates(torch.as_tensor(vector, dtype=q.dtype))
            return coordinates.to_coordinates(current.hessian_vector(direction)).numpy()

        operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec,
                                                      dtype=np.float64)
        gradient = coordinates.to_coordinates(evaluation.gradient).numpy()
        solution, _ = scipy.sparse.linalg.cg(operator, -gradient, rtol=1e-4, maxiter=100)
        step = coordinates.from_coordinates(torch.as_tensor(solution, dtype=q.dtype))
        def smaller_gradient(trial: ActionEvaluation, _length: float, norm: float = norm
                             ) -> bool:
            return gradient_norm(trial) < norm

        trial, _, used = _backtrack(action, evaluation, step, smaller_gradient, smallest=1e-6)
        evaluations += used
        if trial is None:
            return _Run(evaluation, iteration, evaluations, "Newton-Krylov step failed")
        evaluation = trial
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _anderson_with_fallback(action: EffectiveAction, q: torch.Tensor, tolerance: float,
                            max_iterations: int) -> _Run:
    """Anderson mixing; if it has not converged within 100 iterations (large α, where the
    fixed-point map stops contracting), L-BFGS from its best point, then a Newton-Krylov polish."""
    first = _anderson(action, q, tolerance, min(100, max_iterations))
    if gradient_norm(first.evaluation) <= tolerance:
        return first
    descent = _lbfgs(action, first.evaluation.point, tolerance, max_iterations)
    polish = _newton_krylov(action, descent.evaluation.point, tolerance, 20)
    return _Run(polish.evaluation, first.iterations + descent.iterations + polish.iterations,
                first.evaluations + descent.evaluations + polish.evaluations,
                f"Anderson → L-BFGS → Newton-Krylov: {polish.message}")


# -- stationary points that are not minima ---------------------------------------------------


def _hessian_batch(action: EffectiveAction) -> int:
    """Directions per Hessian-vector call when assembling a dense Hessian: the action's
    `hessian_batch` where its products take stacked directions (one pass over the kernel
    blocks per batch instead of per column), else 1."""
    return int(getattr(action, "hessian_batch", 1))


class _OutsideDomainError(Exception):
    """A trial point where S is not defined."""


def _hybrid_newton(action: EffectiveAction, origin: torch.Tensor
                   ) -> tuple[ActionEvaluation | None, int]:
    """Powell's hybrid method (scipy "hybr") on ∇S = 0 from `origin`, with the analytic
    Hessian as Jacobian; (None, evaluations) if it leaves the domain or A stops being SPD."""
    structure = action.structure
    coordinates = _Coordinates(structure, origin.dtype)
    cache: dict[bytes, ActionEvaluation] = {}

    def evaluate(c: np.ndarray) -> ActionEvaluation:
        key = c.tobytes()
        if key not in cache:
            point = structure.symmetrize(coordinates.from_coordinates(
                torch.as_tensor(c, dtype=origin.dtype)))
            if not structure.is_admissible(point):
                raise _OutsideDomainError
            cache.clear()  # the root finder asks for the gradient, then the Jacobian, once each
            cache[key] = action.evaluate(point)
        return cache[key]

    evaluations = 0

    def gradient(c: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        return coordinates.to_coordinates(evaluate(c).gradient).numpy()

    def jacobian(c: np.ndarray) -> np.ndarray:
        return coordinates.hessian(evaluate(c), _hessian_batch(action)).numpy()

    try:
        result = scipy.optimize.root(gradient, coordinates.to_coordinates(origin).numpy(),
                                     jac=jacobian, method="hybr", tol=1e-14)
        return evaluate(result.x), evaluations
    except (_OutsideDomainError, torch.linalg.LinAlgError):
        return None, evaluations


def _saddle_fixed_point(action: EffectiveAction, start: torch.Tensor, tolerance: float,
                        max_iterations: int) -> _Run:
    """Damped fixed point of the stationarity conditions (`fixed_point_target`), the damping
    halved whenever ‖∇S‖ would more than double (a saddle has no descent function to monitor).
    Where it stalls (large α: the map stops contracting) the hybrid Newton method runs from
    where it stopped and from the start, and the point with the smaller gradient is kept."""
    structure = action.structure
    evaluation = action.evaluate(start)
    evaluations, iterations, damping = 1, 0, 0.5
    norm = gradient_norm(evaluation)
    while norm > tolerance and iterations < max_iterations:
        target = structure.fixed_point_target(evaluation.point, evaluation.gradient)
        if target is None:
            break
        def bounded_growth(trial: ActionEvaluation, _length: float, norm: float = norm
                           ) -> bool:
            return gradient_norm(trial) <= 2 * norm

        trial, damping, used = _backtrack(action, evaluation, target - evaluation.point,
                                          bounded_growth, length=damping, smallest=1e-8)
        evaluations += used
        if trial is None:
            break
        evaluation, norm, iterations = trial, gradient_norm(trial), iterations + 1
    message = "damped fixed point"
    if norm > tolerance and structure.n_parameters <= HYBRID_LIMIT:
        # From where the fixed point stopped and from the start (a warm start near the solution
        # can be left far behind by a fixed point that does not contract).
        for origin in (evaluation.point, start):
            polished, used = _hybrid_newton(action, origin)
            evaluations += used
            if polished is not None and gradient_norm(polished) < norm:
                evaluation, norm = polished, gradient_norm(polished)
                message = "damped fixed point → hybrid Newton"
    if norm > tolerance and structure.n_parameters > HYBRID_LIMIT:
        # Too many entries for dense Jacobians. (Below the limit the fallback stays the hybrid
        # method alone, so small problems solve exactly as before; "newton-krylov" is the
        # method to ask for there.)
        for origin in (evaluation.point, start):
            krylov = _saddle_newton_krylov(action, origin, tolerance, max_iterations)
            evaluations += krylov.evaluations
            if gradient_norm(krylov.evaluation) < norm:
                evaluation, norm = krylov.evaluation, gradient_norm(krylov.evaluation)
                message = f"damped fixed point → {krylov.message}"
            if norm <= tolerance:
                break
    return _Run(evaluation, iterations, evaluations, message, final_damping=damping)


def _saddle_newton(action: EffectiveAction, start: torch.Tensor, tolerance: float,
                   max_iterations: int) -> _Run:
    """The hybrid Newton method on ∇S = 0 from the start."""
    polished, used = _hybrid_newton(action, start)
    if polished is None:
        return _Run(action.evaluate(start), 0, used + 1, "hybrid Newton left the domain")
    return _Run(polished, 0, used, "hybrid Newton")


def _hessian_operator(evaluation: ActionEvaluation,
                      coordinates: _Coordinates | _PairCoordinates
                      ) -> scipy.sparse.linalg.LinearOperator:
    """The Hessian at an evaluation as a SciPy operator in orthonormal coordinates; a block of
    columns goes through one (batched) Hessian-vector call."""
    dtype = evaluation.point.dtype

    def matmat(block: np.ndarray) -> np.ndarray:
        columns = torch.as_tensor(np.ascontiguousarray(np.atleast_2d(block.T)), dtype=dtype)
        images = evaluation.hessian_vector(coordinates.from_coordinates(columns))
        return coordinates.to_coordinates(images).T.numpy()

    return scipy.sparse.linalg.LinearOperator(
        (coordinates.size, coordinates.size),
        matvec=lambda vector: matmat(np.reshape(vector, (-1, 1)))[:, 0],
        matmat=matmat, dtype=np.float64)


#: Newton–Krylov: the relative residual ‖Hδ + ∇S‖/‖∇S‖ asked of GMRES is
#: min(_FORCING, ‖∇S‖) (superlinear near the solution, cheap far from it), with at most
#: _KRYLOV_MAX Hessian-vector products per Newton step, restarted every _KRYLOV_RESTART.
_FORCING = 0.1
_KRYLOV_MAX = 600
_KRYLOV_RESTART = 100


def _prior_inverse(structure: OrderParameterStructure, point: torch.Tensor
                   ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The inverse of the prior part's Hessian [[0, −1], [−1, −R⊗R]] of a (Q̄, Q) pair,
    (V̄, V) ↦ (R V̄ R − V, −V̄) with R = (1 + Q)⁻¹: the preconditioner of the Newton equation
    (exact at N = ∞). None for structures without the pair's `resolvent`."""
    resolvent = getattr(structure, "resolvent", None)
    if resolvent is None:
        return None
    split, join, product = structure.split, structure.join, structure.product  # type: ignore[attr-defined]
    r = resolvent(split(point)[1])

    def apply(direction: torch.Tensor) -> torch.Tensor:
        v_bar, v = split(direction)
        return join(product(r, v_bar, r) - v, -v_bar)

    return apply


def _saddle_newton_krylov(action: EffectiveAction, start: torch.Tensor, tolerance: float,
                          max_iterations: int) -> _Run:
    """Newton's method on ∇S = 0 (module docstring, "newton-krylov"): δ from GMRES on
    H δ = −∇S (right-preconditioned by the inverse prior Hessian, `_prior_inverse`), then t·δ
    with t halved from 1 until the point is admissible and ‖∇S‖ ≤ (1 − 10⁻⁴ t)‖∇S‖_old.
    Because GMRES leaves a residual r with ‖r‖ < ‖∇S‖, the inexact step is a descent direction
    of ½‖∇S‖² (its slope is −‖∇S‖² + ∇Sᵀr < 0)."""
    structure = action.structure
    coordinates = _saddle_coordinates(structure, start.dtype)
    evaluation = action.evaluate(start)
    evaluations, products = 1, 0
    for iteration in range(max_iterations):
        norm = gradient_norm(evaluation)
        if norm <= tolerance:
            return _Run(evaluation, iteration, evaluations,
                        f"Newton–Krylov: gradient tolerance reached ({products} Hessian-vector "
                        "products)")
        gradient = coordinates.to_coordinates(evaluation.gradient).numpy()
        counted = [0]
        operator = _hessian_operator(evaluation, coordinates)

        def counting(vector: np.ndarray, operator: Any = operator, counted: list = counted
                     ) -> np.ndarray:
            counted[0] += 1
            return operator.matvec(vector)

        linear = scipy.sparse.linalg.LinearOperator(operator.shape, matvec=counting,
                                                    dtype=np.float64)
        inverse = _prior_inverse(structure, evaluation.point)
        preconditioner = None
        if inverse is not None:
            def precondition(vector: np.ndarray, inverse: Any = inverse) -> np.ndarray:
                direction = coordinates.from_coordinates(
                    torch.as_tensor(np.reshape(vector, -1), dtype=start.dtype))
                return coordinates.to_coordinates(inverse(direction)).numpy()

            preconditioner = scipy.sparse.linalg.LinearOperator(
                operator.shape, matvec=precondition, dtype=np.float64)
        restart = min(_KRYLOV_RESTART, coordinates.size)
        solution, _ = scipy.sparse.linalg.gmres(
            linear, -gradient, rtol=min(_FORCING, norm), atol=0.0, restart=restart,
            maxiter=max(1, _KRYLOV_MAX // restart), M=preconditioner)
        products += counted[0]
        step = coordinates.from_coordinates(torch.as_tensor(solution, dtype=start.dtype))

        def sufficient(trial: ActionEvaluation, length: float, norm: float = norm) -> bool:
            return gradient_norm(trial) <= (1 - 1e-4 * length) * norm

        trial, _, used = _backtrack(action, evaluation, step, sufficient, smallest=1e-8)
        evaluations += used
        if trial is None:
            return _Run(evaluation, iteration, evaluations,
                        f"Newton–Krylov: line search failed at ‖∇S‖ = {norm:.3g}")
        evaluation = trial
    return _Run(evaluation, max_iterations, evaluations,
                "Newton–Krylov: maximum iterations reached")


@dataclass(frozen=True)
class SaddleSignature:
    """How many Hessian eigenvalues of a (Q̄, Q) stationary point are negative and positive.

    method 'dense': all eigenvalues of the assembled Hessian (`eigenvalues`, ascending).
    method 'inertia': Haynsworth's In(H) = In(H_QQ) + In(H/H_QQ) with H_QQ the Q–Q block and
    H/H_QQ = H_Q̄Q̄ − H_Q̄Q H_QQ⁻¹ H_QQ̄ its Schur complement: when H_QQ is negative definite
    (`largest_qq` < 0) the count is n_Q negative plus the Schur complement's inertia, which is
    all positive when `smallest_schur` > 0. These two extreme eigenvalues come from LOBPCG
    (residual norm below `residual`); when either has the wrong sign the counts are None (the
    expected signature does not hold; an exact count would need the full spectrum)."""

    n_negative: int | None
    n_positive: int | None
    expected_negative: int
    method: str
    eigenvalues: tuple[float, ...] | None = None
    largest_qq: float | None = None
    smallest_schur: float | None = None
    residual: float | None = None

    @property
    def is_saddle(self) -> bool:
        """Exactly `expected_negative` negative eigenvalues and the others positive."""
        return (self.n_negative == self.expected_negative
                and self.n_positive is not None
                and self.n_negative + self.n_positive == 2 * self.expected_negative)


def _lobpcg_extreme(apply: Callable[[np.ndarray], np.ndarray],
                    precondition: Callable[[np.ndarray], np.ndarray], size: int,
                    start: np.ndarray, largest: bool) -> tuple[float, float]:
    """The extreme eigenvalue of a symmetric operator given by its action on column blocks,
    with the residual norm of its Ritz vector (an eigenvalue lies within it of the value)."""
    def columns(function: Callable[[np.ndarray], np.ndarray]
                ) -> scipy.sparse.linalg.LinearOperator:
        # LOBPCG's small-problem path passes an integer identity: compute in float64.
        def matmat(block: np.ndarray) -> np.ndarray:
            return function(np.asarray(block, dtype=np.float64).reshape(size, -1))

        return scipy.sparse.linalg.LinearOperator(
            (size, size), matmat=matmat, matvec=lambda v: matmat(v)[:, 0], dtype=np.float64)

    operator, preconditioner = columns(apply), columns(precondition)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lobpcg's "not reaching tolerance" note
        values, vectors = scipy.sparse.linalg.lobpcg(operator, start, M=preconditioner,
                                                     largest=largest, tol=1e-7, maxiter=200)
    index = int(np.argmax(values) if largest else np.argmin(values))
    vector = vectors[:, index]
    residual = float(np.linalg.norm(apply(vector[:, None])[:, 0] - values[index] * vector))
    return float(values[index]), residual


def saddle_signature(action: EffectiveAction, evaluation: ActionEvaluation | None = None, *,
                     point: torch.Tensor | None = None,
                     dense_limit: int = DENSE_SADDLE_LIMIT) -> SaddleSignature:
    """The signature of the Hessian of a (Q̄, Q) action at a point (`SaddleSignature`): dense
    up to `dense_limit` free entries, else the inertia test on H_QQ and its Schur complement
    (docs/math/theory.md §3.6). The Schur complement's product solves H_QQ x = −H_QQ̄ v by
    conjugate gradients on −H_QQ, preconditioned by the prior's (1 + Q) V (1 + Q)."""
    if evaluation is None:
        if point is None:
            raise ValueError("give the evaluation of S at the point, or the point.")
        evaluation = action.evaluate(point)
    structure = action.structure
    expected = int(structure.n_negative_directions)
    if structure.stationary != "saddle":
        raise ValueError(f"{type(structure).__name__} has a minimum, not a (Q̄, Q) saddle.")
    dtype = evaluation.point.dtype
    if structure.n_parameters <= dense_limit or not isinstance(
            _saddle_coordinates(structure, dtype), _PairCoordinates):
        coordinates = _Coordinates(structure, dtype)
        eigenvalues = torch.linalg.eigvalsh(coordinates.hessian(evaluation,
                                                                _hessian_batch(action)))
        return SaddleSignature(int((eigenvalues < 0).sum()), int((eigenvalues > 0).sum()),
                               expected, "dense", tuple(float(v) for v in eigenvalues))
    pair = _saddle_coordinates(structure, dtype)
    assert isinstance(pair, _PairCoordinates)
    half = pair.half_size
    q = structure.conjugate_field(evaluation.point)  # type: ignore[attr-defined]
    shift = structure.half.identity(dtype) + q  # type: ignore[attr-defined]
    product = structure.product  # type: ignore[attr-defined]

    def hessian(block: np.ndarray) -> np.ndarray:
        """H on columns (2·half, k) → (2·half, k)."""
        columns = torch.as_tensor(np.ascontiguousarray(block.T), dtype=dtype)
        return pair.to_coordinates(evaluation.hessian_vector(
            pair.from_coordinates(columns))).T.numpy()

    def congruence(block: np.ndarray) -> np.ndarray:
        """V ↦ (1 + Q) V (1 + Q) on half-coordinate columns (the prior's (R⊗R)⁻¹)."""
        padded = np.concatenate([np.zeros_like(block), block])
        columns = pair.from_coordinates(torch.as_tensor(np.ascontiguousarray(padded.T),
                                                        dtype=dtype))
        turned = product(shift, structure.split(columns)[1], shift)  # type: ignore[attr-defined]
        both = structure.join(torch.zeros_like(turned), turned)  # type: ignore[attr-defined]
        return pair.to_coordinates(both).T.numpy()[half:]

    def minus_qq(block: np.ndarray) -> np.ndarray:
        return -hessian(np.concatenate([np.zeros_like(block), block]))[half:]

    def schur(block: np.ndarray) -> np.ndarray:
        """(H/H_QQ) v: x solves H_QQ x = −H_QQ̄ v; then the Q̄ part of H (v, x)."""
        coupled = hessian(np.concatenate([block, np.zeros_like(block)]))[half:]
        solved = np.empty(block.shape, dtype=np.float64)
        operator = scipy.sparse.linalg.LinearOperator(
            (half, half), matvec=lambda v: minus_qq(np.reshape(v, (-1, 1)))[:, 0],
            dtype=np.float64)
        preconditioner = scipy.sparse.linalg.LinearOperator(
            (half, half), matvec=lambda v: congruence(np.reshape(v, (-1, 1)))[:, 0],
            dtype=np.float64)
        for column in range(block.shape[1]):
            solved[:, column] = scipy.sparse.linalg.cg(operator, coupled[:, column],
                                                       rtol=1e-10, maxiter=10 * half,
                                                       M=preconditioner)[0]
        return hessian(np.concatenate([block, solved]))[:half]

    def inverse_congruence(block: np.ndarray) -> np.ndarray:
        """V ↦ R V R (the inverse of the Schur complement's prior part (1+Q)⊗(1+Q))."""
        resolvent = structure.resolvent(q)  # type: ignore[attr-defined]
        padded = np.concatenate([np.zeros_like(block), block])
        columns = pair.from_coordinates(torch.as_tensor(np.ascontiguousarray(padded.T),
                                                        dtype=dtype))
        turned = product(resolvent, structure.split(columns)[1],  # type: ignore[attr-defined]
                         resolvent)
        both = structure.join(torch.zeros_like(turned), turned)  # type: ignore[attr-defined]
        return pair.to_coordinates(both).T.numpy()[half:]

    start = np.random.default_rng(0).standard_normal((half, min(4, half)))
    smallest_minus_qq, residual_qq = _lobpcg_extreme(minus_qq, congruence, half, start, False)
    largest_qq = -smallest_minus_qq
    if largest_qq >= 0:
        return SaddleSignature(None, None, expected, "inertia", largest_qq=largest_qq,
                               residual=residual_qq)
    smallest_schur, residual_schur = _lobpcg_extreme(schur, inverse_congruence, half, start,
                                                     False)
    residual = max(residual_qq, residual_schur)
    if smallest_schur <= 0:
        return SaddleSignature(None, None, expected, "inertia", largest_qq=largest_qq,
                               smallest_schur=smallest_schur, residual=residual)
    return SaddleSignature(half, half, expected, "inertia", largest_qq=largest_qq,
                           smallest_schur=smallest_schur, residual=residual)


# -- what each kind of stationary point asks of a solve -------------------------------------

MethodFunction = Callable[[EffectiveAction, torch.Tensor, float, int], _Run]


@dataclass(frozen=True)
class _Curvature:
    min_eigenvalue: float
    hessian: tuple[tuple[float, ...], ...] | None = None
    eigenvalues: tuple[float, ...] | None = None
    signature_ok: bool | None = None
    n_negative: int | None = None
    n_positive: int | None = None


def _minimum_curvature(action: EffectiveAction, evaluation: ActionEvaluation) -> _Curvature:
    return _Curvature(min_hessian_eigenvalue(action, evaluation.point, evaluation))


def _saddle_curvature(action: EffectiveAction, evaluation: ActionEvaluation) -> _Curvature:
    """The signature (`saddle_signature`): up to `DENSE_SADDLE_LIMIT` free entries the full
    Hessian and its eigenvalues, above them the inertia test; it holds when exactly the
    structure's `n_negative_directions` eigenvalues are negative and the others positive."""
    structure = action.structure
    if structure.n_parameters > DENSE_SADDLE_LIMIT:
        signature = saddle_signature(action, evaluation)
        smallest = (signature.largest_qq if signature.smallest_schur is None
                    else min(signature.largest_qq or 0.0, signature.smallest_schur))
        return _Curvature(float("nan") if smallest is None else smallest,
                          signature_ok=signature.is_saddle, n_negative=signature.n_negative,
                          n_positive=signature.n_positive)
    coordinates = _Coordinates(structure, evaluation.point.dtype)
    hessian = coordinates.hessian(evaluation, _hessian_batch(action))
    eigenvalues = torch.linalg.eigvalsh(hessian)
    negative = structure.n_negative_directions
    signature_ok = bool((eigenvalues[:negative] < 0).all()
                        and (eigenvalues[negative:] > 0).all())
    return _Curvature(float(eigenvalues[0]),
                      tuple(tuple(float(v) for v in row) for row in hessian.tolist()),
                      tuple(float(v) for v in eigenvalues), signature_ok,
                      int((eigenvalues < 0).sum()), int((eigenvalues > 0).sum()))


def _auto_minimum(action: EffectiveAction) -> str:
    few = action.structure.n_parameters <= NEWTON_LIMIT
    return "newton" if action.cheap_hessian or few else "anderson"


def _auto_saddle(action: EffectiveAction) -> str:
    return "fixed-point"


@dataclass(frozen=True)
class _StationaryRule:
    """Methods, the 'auto' choice, how starts are ranked (`best` names the winner) and the
    curvature report."""

    methods: dict[str, MethodFunction]
    auto: Callable[[EffectiveAction], str]
    rank: Callable[[_Run], float]
    best: str
    curvature: Callable[[EffectiveAction, ActionEvaluation], _Curvature]


_RULES: dict[str, _StationaryRule] = {
    "minimum": _StationaryRule(
        methods={"newton": _newton, "anderson": _anderson_with_fallback,
                 "fixed-point": _fixed_point, "lbfgs": _lbfgs,
                 "newton-krylov": _newton_krylov},
        auto=_auto_minimum,
        rank=lambda run: run.evaluation.value,
        best="lowest S",
        curvature=_minimum_curvature),
    "saddle": _StationaryRule(
        methods={"fixed-point": _saddle_fixed_point, "newton": _saddle_newton,
                 "newton-krylov": _saddle_newton_krylov},
        auto=_auto_saddle,
        rank=lambda run: gradient_norm(run.evaluation),
        best="smallest gradient",
        curvature=_saddle_curvature),
}


def solve_saddle_point(action: EffectiveAction, start: torch.Tensor | None = None, *,
                       settings: SolverSettings | None = None,
                       progress: ProgressCallback | None = None,
                       prefetch_curvature: bool | None = None,
                       **options: Any) -> SaddlePoint:
    """The stationary point of S (docs/math/theory.md §3): the minimum over SPD Q̄, or the
    saddle in (Q̄, Q), as the action's structure says.

    Options are the fields of `SolverSettings` (method, tolerance, max_iterations, n_starts,
    seed, hessian_check), given as `settings`, as keywords, or both (keywords win). `start`
    defaults to the infinite-width point (pass a neighbouring solution to warm start). With
    n_starts > 1 further random starts are solved; their largest distance to the best solution
    is reported and a warning raised when it exceeds √tolerance. A solution whose gradient norm
    exceeds the tolerance comes back with converged=False and a SaddlePointConvergenceWarning.
    `progress`, when given, is called with a `SolverProgress` after every evaluation of S (for
    progress displays during long solves). `prefetch_curvature` (default: hessian_check)
    computes the curvature check's first Hessian-vector products with the evaluation predicted
    to converge (`_CurvaturePrefetch`; no extra pass over kernel blocks), for a check that
    follows — in this call, or in a later one at the same point through a
    `LastEvaluationCache`.
    """
    settings = (SolverSettings() if settings is None else settings).updated(**options)
    structure = action.structure
    rule = _RULES[structure.stationary]
    method = rule.auto(action) if settings.method == "auto" else settings.method
    if method not in rule.methods:
        raise ValueError(
            f"solver method {method!r} does not apply to {type(structure).__name__}, whose "
            f"physical point is a {structure.stationary} of S; choose 'auto' or one of "
            f"{tuple(rule.methods)}.")
    if start is not None and not structure.is_admissible(start.to(torch.float64)):
        raise ValueError("the start point must be admissible (Q̄ positive definite, Q > −1).")
    generator = torch.Generator().manual_seed(settings.seed)
    starts = [action.identity() if start is None else start.to(torch.float64)]
    starts += [structure.random_start(generator) for _ in range(settings.n_starts - 1)]

    solve = rule.methods[method]
    passes_before = action.block_passes()
    solved = action
    prefetch = settings.hessian_check if prefetch_curvature is None else prefetch_curvature
    if prefetch and structure.stationary == "minimum" and _uses_lobpcg(action):
        solved = _CurvaturePrefetch(solved, settings.tolerance)
    if progress is not None:
        solved = _ReportingAction(solved, progress)
    runs = [solve(solved, initial, settings.tolerance, settings.max_iterations)
            for initial in starts]
    best = min(runs, key=rule.rank)
    disagreement = max(
        float(torch.linalg.norm(run.evaluation.point - best.evaluation.point)) for run in runs
    )
    if disagreement > math.sqrt(settings.tolerance):
        warnings.warn(
            f"saddle-point starts disagree by {disagreement:.3g} (‖Δ‖_F); the action may have "
            f"several stationary points; the one with the {rule.best} is returned.",
            SaddlePointConvergenceWarning,
            stacklevel=2,
        )
    norm = gradient_norm(best.evaluation)
    converged = bool(norm <= settings.tolerance)
    if not converged:
        warnings.warn(
            f"saddle point not converged: ‖∇S‖ = {norm:.3g} > {settings.tolerance:.1g} after "
            f"{best.iterations} iterations ({best.message}); try method='newton', more "
            "iterations or a warm start.",
            SaddlePointConvergenceWarning,
            stacklevel=2,
        )
    curvature = rule.curvature(action, best.evaluation) if settings.hessian_check else None
    passes_after = action.block_passes()
    block_passes = (None if passes_before is None or passes_after is None
                    else passes_after - passes_before)
    diagnostics = SolverDiagnostics(
        method=method,
        converged=converged,
        iterations=best.iterations,
        function_evaluations=sum(run.evaluations for run in runs),
        gradient_norm=norm,
        action=best.evaluation.value,
        min_hessian_eigenvalue=None if curvature is None else curvature.min_eigenvalue,
        n_starts=len(starts),
        start_disagreement=disagreement,
        message=best.message,
        hessian=None if curvature is None else curvature.hessian,
        hessian_eigenvalues=None if curvature is None else curvature.eigenvalues,
        is_saddle=None if curvature is None else curvature.signature_ok,
        n_negative_eigenvalues=None if curvature is None else curvature.n_negative,
        n_positive_eigenvalues=None if curvature is None else curvature.n_positive,
        final_damping=best.final_damping,
        block_passes=block_passes,
    )
    return SaddlePoint(best.evaluation.point, diagnostics, structure)
