"""Saddle-point solvers for the effective action (THEORY.md §3).

The saddle point is the minimum of S over symmetric positive definite Q̄, where
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
- "lbfgs":    scipy's L-BFGS-B on the Cholesky parameterisation of `order_parameters`.

Every solve reports ‖∂S/∂Q̄‖_F, iterations, a converged flag and the smallest eigenvalue of the
Hessian in Q̄ coordinates (Frobenius metric); several starts are compared.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import scipy.optimize
import scipy.sparse.linalg
import torch

from krenorm.theory.action import (
    ActionEvaluation,
    EffectiveAction,
    GramLinearAction,
    SpectralAction,
)
from krenorm.theory.order_parameters import OrderParameterStructure

SolverMethod = Literal["auto", "newton", "anderson", "fixed-point", "lbfgs", "newton-krylov"]
SOLVER_METHODS = ("auto", "newton", "anderson", "fixed-point", "lbfgs", "newton-krylov")

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
#: Gram-linear actions, whose Hessian-vector products cost two P×P×P products each.
NEWTON_LIMIT = 16


class SaddlePointConvergenceWarning(RuntimeWarning):
    """The saddle-point solver stopped before the gradient tolerance was met."""


@dataclass(frozen=True)
class SolverDiagnostics:
    """What a user needs to trust a saddle point."""

    method: str
    converged: bool
    iterations: int
    function_evaluations: int
    gradient_norm: float
    action: float
    min_hessian_eigenvalue: float | None
    n_starts: int
    start_disagreement: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SaddlePoint:
    q_bar: torch.Tensor
    diagnostics: SolverDiagnostics

    def to_dict(self) -> dict:
        return {"q_bar": self.q_bar.tolist(), **self.diagnostics.to_dict()}


class _Coordinates:
    """Orthonormal (Frobenius) coordinates c of diagonal vectors or symmetric matrices."""

    def __init__(self, structure: OrderParameterStructure, dtype: torch.dtype):
        self.structure = structure
        self.basis = torch.stack(structure.tangent_basis(dtype))
        self._flat = self.basis.reshape(self.basis.shape[0], -1)

    def to_coordinates(self, q: torch.Tensor) -> torch.Tensor:
        """Coordinates of q, batched over leading axes: (..., *shape) → (..., size)."""
        shape = self.basis.shape[1:]
        return q.reshape(*q.shape[:q.ndim - len(shape)], -1) @ self._flat.T

    def from_coordinates(self, c: torch.Tensor) -> torch.Tensor:
        """The inverse map, batched over leading axes: (..., size) → (..., *shape)."""
        return (c @ self._flat).reshape(*c.shape[:-1], *self.basis.shape[1:])

    def hessian(self, evaluation: ActionEvaluation) -> torch.Tensor:
        columns = torch.stack([self.to_coordinates(evaluation.hessian_vector(e))
                               for e in self.basis])
        return (columns + columns.T) / 2


def gradient_norm(evaluation: ActionEvaluation) -> float:
    """‖∂S/∂Q̄‖_F in Q̄ coordinates."""
    return float(torch.linalg.norm(evaluation.gradient))


def is_positive_definite(structure: OrderParameterStructure, q: torch.Tensor) -> bool:
    if not bool(torch.isfinite(q).all()):
        return False
    if structure.kind == "diagonal":
        return bool((q > 0).all())
    return int(torch.linalg.cholesky_ex(q)[1]) == 0


def _soft_prior_directions(structure: OrderParameterStructure, q_bar: torch.Tensor,
                           count: int) -> torch.Tensor:
    """The `count` softest directions of the prior's Hessian V ↦ Q̄⁻¹VQ̄⁻¹, stacked: its
    eigenvalues are 1/(q_i q_j) on sym(e_i e_jᵀ), e_i the eigenvectors of Q̄ (e_i e_iᵀ with
    eigenvalue 1/q_i² for a diagonal Q̄), so the softest pair the largest products q_i q_j."""
    if structure.kind == "diagonal":
        return torch.eye(structure.size, dtype=q_bar.dtype)[torch.topk(q_bar, count).indices]
    values, vectors = torch.linalg.eigh(q_bar)
    i, j = torch.triu_indices(structure.size, structure.size)
    order = torch.argsort(values[i] * values[j], descending=True)[:count]
    left, right = vectors[:, i[order]].T, vectors[:, j[order]].T  # (count, Np)
    directions = left[:, :, None] * right[:, None, :]
    directions = directions + directions.mT
    return directions / torch.linalg.matrix_norm(directions)[:, None, None]


def min_hessian_eigenvalue(action: EffectiveAction, q_bar: torch.Tensor,
                           evaluation: ActionEvaluation | None = None) -> float:
    """Smallest eigenvalue of ∂²S/∂Q̄² on symmetric (or diagonal) directions, Frobenius metric.

    Dense for few parameters. Otherwise LOBPCG on batched Hessian-vector products, preconditioned
    by the inverse of the prior's Hessian (V ↦ Q̄ V Q̄), with a block of the prior's six softest
    directions and two random ones: the data term perturbs the prior's curvature, so the softest
    direction of S lies mostly in that block, and `_QUICK_ITERATIONS` iterations give a Rayleigh
    quotient (an upper bound) within 1e-4 of the eigenvalue (at most 1.5e-5 measured on MNIST
    CNN saddles with 16 and 49 patches, α = 0.4 to 100, and on random SPD Q̄;
    tests/test_theory.py). A block of two needed 48 iterations for 6e-4 with 49 patches, whose
    prior spectrum is clustered at the bottom. A value below `_REFINE_BELOW` (near-singular
    curvature, where the sign matters) is refined to convergence. `evaluation` (S at q_bar) is
    reused when given."""
    evaluation = action.evaluate(q_bar) if evaluation is None else evaluation
    structure = action.structure
    coordinates = _Coordinates(structure, q_bar.dtype)
    size = coordinates.basis.shape[0]
    if size <= DENSE_HESSIAN_LIMIT or not isinstance(action, GramLinearAction):
        return float(torch.linalg.eigvalsh(coordinates.hessian(evaluation))[0])

    def apply(function, block: np.ndarray) -> np.ndarray:
        # All columns in one call: Gram-linear Hessian-vector products are batched, so a block
        # costs one pass over the kernel blocks instead of one per column.
        columns = torch.as_tensor(np.atleast_2d(block.T), dtype=q_bar.dtype)  # (k, size)
        images = function(coordinates.from_coordinates(columns))
        return coordinates.to_coordinates(images).T.numpy()

    def inverse_prior_hessian(direction: torch.Tensor) -> torch.Tensor:
        return q_bar * direction * q_bar if structure.kind == "diagonal" else (
            q_bar @ direction @ q_bar)

    shape = (size, size)
    hessian = scipy.sparse.linalg.LinearOperator(
        shape, matvec=lambda vector: apply(evaluation.hessian_vector, vector)[:, 0],
        matmat=lambda block: apply(evaluation.hessian_vector, block), dtype=np.float64)
    preconditioner = scipy.sparse.linalg.LinearOperator(
        shape, matvec=lambda vector: apply(inverse_prior_hessian, vector)[:, 0],
        matmat=lambda block: apply(inverse_prior_hessian, block), dtype=np.float64)
    soft = _soft_prior_directions(structure, q_bar, min(size, _START_BLOCK) - _RANDOM_START)
    # Random columns keep the block from being exactly orthogonal to the softest direction of
    # S when symmetry makes the prior's directions miss it.
    start = np.concatenate([coordinates.to_coordinates(soft).T.numpy(),
                            np.random.default_rng(0).standard_normal((size, _RANDOM_START))],
                           axis=1)
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


@dataclass
class _Run:
    evaluation: ActionEvaluation
    iterations: int
    evaluations: int
    message: str


def _newton(action: EffectiveAction, q: torch.Tensor, tolerance: float,
            max_iterations: int) -> _Run:
    structure = action.structure
    coordinates = _Coordinates(structure, q.dtype)
    evaluation = action.evaluate(q)
    evaluations = 1
    for iteration in range(max_iterations):
        norm = gradient_norm(evaluation)
        if norm <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        hessian = coordinates.hessian(evaluation)
        eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
        # Indefinite far from the minimum: flip and floor the curvature (modified Newton).
        floor = 1e-8 * max(1.0, float(eigenvalues.abs().max()))
        eigenvalues = eigenvalues.abs().clamp_min(floor)
        gradient = coordinates.to_coordinates(evaluation.gradient)
        step = coordinates.from_coordinates(-(eigenvectors @ ((eigenvectors.T @ gradient)
                                                              / eigenvalues)))
        length = 1.0
        while length > 1e-10:
            candidate = structure.symmetrize(evaluation.q_bar + length * step)
            if is_positive_definite(structure, candidate):
                trial = action.evaluate(candidate)
                evaluations += 1
                decrease = trial.value < evaluation.value - 1e-4 * length * float(
                    -(gradient @ coordinates.to_coordinates(step)))
                # At round-off level S cannot resolve progress; the gradient still can.
                flat = abs(trial.value - evaluation.value) <= 1e-13 * max(1.0, abs(trial.value))
                if decrease or (flat and gradient_norm(trial) < norm):
                    evaluation = trial
                    break
            length /= 2
        else:
            return _Run(evaluation, iteration, evaluations, "line search failed")
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _fixed_point_target(structure: OrderParameterStructure,
                        evaluation: ActionEvaluation) -> torch.Tensor | None:
    """(1 + G)⁻¹ with G the data part of the gradient; None when 1 + G is not positive definite
    (far from the saddle point at large α), where the fixed-point map leaves the SPD cone."""
    data_gradient = evaluation.gradient - structure.prior_gradient(evaluation.q_bar)
    if structure.kind == "diagonal":
        shifted = 1 + data_gradient
        return 1 / shifted if bool((shifted > 0).all()) else None
    shifted = torch.eye(structure.size, dtype=data_gradient.dtype) + data_gradient
    if not is_positive_definite(structure, structure.symmetrize(shifted)):
        return None
    return structure.symmetrize(torch.linalg.inv(shifted))


def _descent_direction(structure: OrderParameterStructure,
                       evaluation: ActionEvaluation) -> torch.Tensor:
    """(1 + G)⁻¹ − Q̄ where the fixed point is defined, else the Riemannian (affine-invariant)
    steepest-descent direction −Q̄ ∇S Q̄, whose slope −‖Q̄^½ ∇S Q̄^½‖² is always negative."""
    target = _fixed_point_target(structure, evaluation)
    if target is not None:
        return target - evaluation.q_bar
    q, gradient = evaluation.q_bar, evaluation.gradient
    return -(q * gradient * q) if structure.kind == "diagonal" else -(q @ gradient @ q)


def _damped_step(action: EffectiveAction, evaluation: ActionEvaluation, step: float
                 ) -> tuple[ActionEvaluation | None, float, int]:
    """Q̄ + η·D (D from `_descent_direction`) with η halved until Q̄ stays SPD and S does not
    increase."""
    structure = action.structure
    direction = _descent_direction(structure, evaluation)
    evaluations = 0
    while step > 1e-12:
        candidate = structure.symmetrize(evaluation.q_bar + step * direction)
        if is_positive_definite(structure, candidate):
            trial = action.evaluate(candidate)
            evaluations += 1
            if trial.value <= evaluation.value + 1e-13 * max(1.0, abs(evaluation.value)):
                return trial, step, evaluations
        step /= 2
    return None, step, evaluations


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
    x_history: list[torch.Tensor] = []
    f_history: list[torch.Tensor] = []
    for iteration in range(max_iterations):
        if gradient_norm(evaluation) <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        target = _fixed_point_target(structure, evaluation)
        trial = None
        if target is not None:
            x = coordinates.to_coordinates(evaluation.q_bar)
            residual = coordinates.to_coordinates(target) - x
            x_history = [*x_history[-memory:], x]
            f_history = [*f_history[-memory:], residual]
            proposal = x + residual
            if len(x_history) > 1:
                delta_x = torch.stack([b - a for a, b in itertools.pairwise(x_history)], 1)
                delta_f = torch.stack([b - a for a, b in itertools.pairwise(f_history)], 1)
                gamma = torch.linalg.lstsq(delta_f, residual[:, None], rcond=1e-10).solution
                proposal = x + residual - (delta_x + delta_f) @ gamma[:, 0]
            candidate = structure.symmetrize(coordinates.from_coordinates(proposal))
            if is_positive_definite(structure, candidate):
                trial = action.evaluate(candidate)
                evaluations += 1
                if gradient_norm(trial) > 10 * gradient_norm(evaluation):
                    trial = None
        if trial is None:
            x_history, f_history = [], []
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

    def value_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta_tensor = torch.as_tensor(theta, dtype=q.dtype)
        evaluation = action.evaluate(structure.from_theta(theta_tensor))
        counter["evaluations"] += 1
        return evaluation.value, structure.gradient_to_theta(
            theta_tensor, evaluation.gradient).numpy()

    result = scipy.optimize.minimize(
        value_and_gradient, structure.to_theta(q).numpy(), jac=True, method="L-BFGS-B",
        options={"gtol": tolerance, "ftol": 0.0, "maxiter": max_iterations, "maxcor": 30},
    )
    q_bar = structure.symmetrize(structure.from_theta(torch.as_tensor(result.x)))
    return _Run(action.evaluate(q_bar), int(result.nit), counter["evaluations"] + 1,
                str(result.message))


def _newton_krylov(action: EffectiveAction, q: torch.Tensor, tolerance: float,
                   max_iterations: int) -> _Run:
    """Inexact Newton: H δ = −∇S by conjugate gradients on Hessian-vector products (no dense
    Hessian), steps accepted while Q̄ stays SPD and the gradient norm falls. For polishing a
    point already near the saddle."""
    structure = action.structure
    coordinates = _Coordinates(structure, q.dtype)
    evaluation = action.evaluate(q)
    evaluations = 1
    size = coordinates.basis.shape[0]
    for iteration in range(max_iterations):
        norm = gradient_norm(evaluation)
        if norm <= tolerance:
            return _Run(evaluation, iteration, evaluations, "gradient tolerance reached")
        current = evaluation

        def matvec(vector: np.ndarray, current=current) -> np.ndarray:
            direction = coordinates.from_coordinates(torch.as_tensor(vector, dtype=q.dtype))
            return coordinates.to_coordinates(current.hessian_vector(direction)).numpy()

        operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec,
                                                      dtype=np.float64)
        gradient = coordinates.to_coordinates(evaluation.gradient).numpy()
        solution, _ = scipy.sparse.linalg.cg(operator, -gradient, rtol=1e-4, maxiter=100)
        step = coordinates.from_coordinates(torch.as_tensor(solution, dtype=q.dtype))
        length = 1.0
        while length > 1e-6:
            candidate = structure.symmetrize(evaluation.q_bar + length * step)
            if is_positive_definite(structure, candidate):
                trial = action.evaluate(candidate)
                evaluations += 1
                if gradient_norm(trial) < norm:
                    evaluation = trial
                    break
            length /= 2
        else:
            return _Run(evaluation, iteration, evaluations, "Newton-Krylov step failed")
    return _Run(evaluation, max_iterations, evaluations, "maximum iterations reached")


def _anderson_with_fallback(action: EffectiveAction, q: torch.Tensor, tolerance: float,
                            max_iterations: int) -> _Run:
    """Anderson mixing; if it has not converged within 100 iterations (large α, where the
    fixed-point map stops contracting), L-BFGS from its best point, then a Newton-Krylov polish."""
    first = _anderson(action, q, tolerance, min(100, max_iterations))
    if gradient_norm(first.evaluation) <= tolerance:
        return first
    descent = _lbfgs(action, first.evaluation.q_bar, tolerance, max_iterations)
    polish = _newton_krylov(action, descent.evaluation.q_bar, tolerance, 20)
    return _Run(polish.evaluation, first.iterations + descent.iterations + polish.iterations,
                first.evaluations + descent.evaluations + polish.evaluations,
                f"Anderson → L-BFGS → Newton-Krylov: {polish.message}")


_METHODS = {"newton": _newton, "anderson": _anderson_with_fallback, "fixed-point": _fixed_point,
            "lbfgs": _lbfgs, "newton-krylov": _newton_krylov}


def _random_start(structure: OrderParameterStructure, generator: torch.Generator
                  ) -> torch.Tensor:
    """A random SPD start around the identity (log-normal diagonal or Wishart matrix)."""
    if structure.kind == "diagonal":
        return torch.exp(0.5 * torch.randn(structure.size, generator=generator,
                                           dtype=torch.float64))
    factor = torch.randn(structure.size, 2 * structure.size, generator=generator,
                         dtype=torch.float64)
    return factor @ factor.T / (2 * structure.size)


def solve_saddle_point(
    action: EffectiveAction,
    start: torch.Tensor | None = None,
    method: SolverMethod = "auto",
    tolerance: float = 1e-9,
    max_iterations: int = 500,
    n_starts: int = 1,
    seed: int = 0,
    hessian_check: bool = True,
) -> SaddlePoint:
    """Minimise S(Q̄) over SPD Q̄ (THEORY.md §3).

    `start` defaults to the infinite-width solution Q̄ = 1 (pass a neighbouring solution to warm
    start). With n_starts > 1 further random SPD starts are solved; their largest distance to the
    best solution is reported and a warning raised when it exceeds √tolerance. A solution whose
    gradient norm exceeds `tolerance` comes back with converged=False and a
    SaddlePointConvergenceWarning.
    """
    structure = action.structure
    if method not in SOLVER_METHODS:
        raise ValueError(f"unknown solver method {method!r}; choose one of {SOLVER_METHODS}.")
    if method == "auto":
        cheap_hessian = isinstance(action, SpectralAction)
        few = structure.n_parameters <= NEWTON_LIMIT
        method = "newton" if cheap_hessian or few else "anderson"
    if start is not None and not is_positive_definite(structure, start.to(torch.float64)):
        raise ValueError("the start Q̄ must be positive definite.")
    generator = torch.Generator().manual_seed(seed)
    starts = [structure.identity() if start is None else start.to(torch.float64)]
    starts += [_random_start(structure, generator) for _ in range(n_starts - 1)]

    runs = [_METHODS[method](action, initial, tolerance, max_iterations) for initial in starts]
    best = min(runs, key=lambda run: run.evaluation.value)
    disagreement = max(
        float(torch.linalg.norm(run.evaluation.q_bar - best.evaluation.q_bar)) for run in runs
    )
    if disagreement > math.sqrt(tolerance):
        warnings.warn(
            f"saddle-point starts disagree by {disagreement:.3g} (‖ΔQ̄‖_F); the action may have "
            "several minima; the one with the lowest S is returned.",
            SaddlePointConvergenceWarning,
            stacklevel=2,
        )
    norm = gradient_norm(best.evaluation)
    converged = bool(norm <= tolerance)
    if not converged:
        warnings.warn(
            f"saddle point not converged: ‖∂S/∂Q̄‖ = {norm:.3g} > {tolerance:.1g} after "
            f"{best.iterations} iterations ({best.message}); try method='newton', more "
            "iterations or a warm start.",
            SaddlePointConvergenceWarning,
            stacklevel=2,
        )
    q_bar = best.evaluation.q_bar
    smallest = min_hessian_eigenvalue(action, q_bar, best.evaluation) if hessian_check else None
    diagnostics = SolverDiagnostics(
        method=method,
        converged=converged,
        iterations=best.iterations,
        function_evaluations=sum(run.evaluations for run in runs),
        gradient_norm=norm,
        action=best.evaluation.value,
        min_hessian_eigenvalue=smallest,
        n_starts=len(starts),
        start_disagreement=disagreement,
        message=best.message,
    )
    return SaddlePoint(q_bar=q_bar, diagnostics=diagnostics)
