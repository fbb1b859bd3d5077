"""Kernel ridge solves α = (K + λI)⁻¹ Y, direct or iterative (docs/math/features.md §5).

Bottom layer (imports nothing else of krenorm), so that features (RFM, ConvRFM) and spectra
share one solver.

- "cholesky": the Cholesky factor of K + λI (exact to rounding; memory two n×n matrices beyond K,
  time n³/3).
- "cg": preconditioned conjugate gradients. Each iteration costs one product with K (n² for a
  stored Gram, or a blocked recomputation for a matrix-free operator); the preconditioner is
  P = L Lᵀ + λI with L (n × r) the rank-r partial pivoted Cholesky factor of K (greedy on the
  largest residual diagonal), applied by the Woodbury identity

      P⁻¹ v = (v − L (λ I_r + LᵀL)⁻¹ Lᵀ v) / λ.

  For a kernel whose spectrum beyond the r-th eigenvalue is small against λ, P ≈ K + λI and CG
  converges in a few tens of iterations. Convergence: ‖Y − (K + λI)α‖ ≤ tolerance·‖Y‖ per
  column; failing that within max_iterations raises RidgeConvergenceError (never a silent
  inaccurate α).
- "auto": Cholesky up to `AUTO_CG_SIZE` points, CG beyond (where the Cholesky's copies of K
  dominate memory).

K is a dense tensor or a `KernelOperator` (products, diagonal and a few columns only), which lets
a caller recompute K block by block instead of storing it (matrix-free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

SolverMethod = Literal["auto", "cholesky", "cg"]
SOLVER_METHODS: tuple[str, ...] = ("auto", "cholesky", "cg")
#: Above this many points "auto" uses CG: a float64 Cholesky at n = 8192 holds ~1.6 GB of copies.
AUTO_CG_SIZE = 8192


class RidgeConvergenceError(ValueError):
    """Preconditioned CG did not reach its tolerance; the message says what to change."""


@runtime_checkable
class KernelOperator(Protocol):
    """A symmetric PSD n×n kernel known through products, its diagonal and selected columns."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def matmul(self, vectors: torch.Tensor) -> torch.Tensor:
        """K V for V (n, k)."""
        ...

    def diagonal(self) -> torch.Tensor:
        """diag K, (n,)."""
        ...

    def columns(self, index: torch.Tensor) -> torch.Tensor:
        """K[:, index], (n, len(index))."""
        ...


@dataclass(frozen=True)
class DenseKernel:
    """A stored Gram as a KernelOperator."""

    gram: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.gram.shape[0], self.gram.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.gram.dtype

    def matmul(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.gram @ vectors

    def diagonal(self) -> torch.Tensor:
        return self.gram.diagonal().clone()

    def columns(self, index: torch.Tensor) -> torch.Tensor:
        return self.gram[:, index]


@dataclass(frozen=True)
class RidgeSolveInfo:
    """How a solve went: method used, CG iterations, worst relative residual, preconditioner
    rank (0 for Cholesky)."""

    method: str
    iterations: int
    relative_residual: float
    preconditioner_rank: int


def partial_pivoted_cholesky(operator: KernelOperator, rank: int) -> torch.Tensor:
    """L (n, r) with K ≈ L Lᵀ, r ≤ rank: greedy pivoted Cholesky, each step taking the largest
    remaining diagonal of K − L Lᵀ; stops early when that diagonal is below 1e-12·max diag K
    (K is then reproduced to rounding). Costs r kernel columns and O(n r²)."""
    n = operator.shape[0]
    residual = operator.diagonal().clone()
    floor = 1e-12 * float(residual.max().clamp_min(0))
    factor = residual.new_zeros(n, min(rank, n))
    for step in range(factor.shape[1]):
        pivot = int(residual.argmax())
        if float(residual[pivot]) <= floor:
            return factor[:, :step]
        column = operator.columns(torch.tensor([pivot], device=residual.device))[:, 0]
        column = column - factor[:, :step] @ factor[pivot, :step]
        column = column / math.sqrt(float(residual[pivot]))
        factor[:, step] = column
        residual = (residual - column**2).clamp_min(0)
        residual[pivot] = 0
    return factor


def _check_inputs(n: int, targets: torch.Tensor, ridge: float) -> None:
    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive number, got {ridge}.")
    if targets.shape[0] != n:
        raise ValueError(f"targets have {targets.shape[0]} rows, the gram {n}.")
    if not bool(torch.isfinite(targets).all()):
        raise ValueError("targets contain NaN or infinite values.")


def conjugate_gradient_ridge(
    gram: torch.Tensor | KernelOperator,
    targets: torch.Tensor,
    ridge: float,
    *,
    preconditioner_rank: int = 100,
    tolerance: float | None = None,
    max_iterations: int = 1000,
) -> tuple[torch.Tensor, RidgeSolveInfo]:
    """α = (K + λI)⁻¹ Y by preconditioned CG (module docstring), every column of Y at once.

    tolerance defaults to 1e-8 in float64 and 1e-4 in float32 (relative residual).
    """
    operator: KernelOperator = DenseKernel(gram) if isinstance(gram, torch.Tensor) else gram
    n = operator.shape[0]
    _check_inputs(n, targets, ridge)
    if preconditioner_rank < 0 or max_iterations < 1:
        raise ValueError("preconditioner_rank must be >= 0 and max_iterations >= 1.")
    if tolerance is None:
        tolerance = 1e-8 if operator.dtype == torch.float64 else 1e-4
    vector = targets.ndim == 1
    rhs = (targets[:, None] if vector else targets).to(operator.dtype)
    factor = partial_pivoted_cholesky(operator, preconditioner_rank)
    rank = factor.shape[1]
    small = ridge * torch.eye(rank, dtype=factor.dtype, device=factor.device) + factor.T @ factor
    small_factor = torch.linalg.cholesky(small)

    def precondition(residual: torch.Tensor) -> torch.Tensor:
        if rank == 0:
            return residual / ridge
        projected = torch.cholesky_solve(factor.T @ residual, small_factor)
        return (residual - factor @ projected) / ridge

    def apply(vectors: torch.Tensor) -> torch.Tensor:
        return operator.matmul(vectors) + ridge * vectors

    norms = rhs.norm(dim=0).clamp_min(torch.finfo(rhs.dtype).tiny)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = precondition(residual)
    direction = preconditioned.clone()
    product = (residual * preconditioned).sum(0)
    relative = residual.norm(dim=0) / norms
    iteration = 0
    while bool((relative > tolerance).any()):
        if iteration == max_iterations:
            raise RidgeConvergenceError(
                f"conjugate gradients did not reach relative residual {tolerance:g} in "
                f"{max_iterations} iterations (worst {float(relative.max()):.3g}); raise "
                "max_iterations or preconditioner_rank, increase the ridge, or use "
                "method='cholesky' if K + λI fits in memory."
            )
        iteration += 1
        image = apply(direction)
        # Columns already converged keep their solution (step 0) so they do not drift.
        active = (relative > tolerance).to(rhs.dtype)
        step = active * product / (direction * image).sum(0).clamp_min(torch.finfo(rhs.dtype).tiny)
        solution += step * direction
        residual -= step * image
        preconditioned = precondition(residual)
        new_product = (residual * preconditioned).sum(0)
        direction = preconditioned + (new_product / product.clamp_min(
            torch.finfo(rhs.dtype).tiny)) * direction
        product = new_product
        relative = residual.norm(dim=0) / norms
    # The recursive residual drifts from the true one in long runs: report the true one.
    true_relative = float(((rhs - apply(solution)).norm(dim=0) / norms).max())
    info = RidgeSolveInfo("cg", iteration, true_relative, rank)
    return (solution[:, 0] if vector else solution), info


def cholesky_ridge(gram: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """α = (K + λI)⁻¹ Y through the Cholesky factor of K + λI (no explicit inverse)."""
    _check_inputs(gram.shape[0], targets, ridge)
    vector = targets.ndim == 1
    rhs = targets[:, None] if vector else targets
    # A copy with λ on its diagonal (no n×n identity): K + λI costs one n² buffer, the factor
    # another.
    shifted = gram.clone()
    shifted.diagonal().add_(ridge)
    factor, info = torch.linalg.cholesky_ex(shifted)
    del shifted
    if int(info) != 0:
        raise ValueError(
            f"K + λI is not positive definite at ridge {ridge:g} (Cholesky failed at leading minor "
            f"{int(info)}); increase the ridge or compute the kernel in float64."
        )
    coefficients = torch.cholesky_solve(rhs.to(gram), factor)
    return coefficients[:, 0] if vector else coefficients


def solve_ridge(
    gram: torch.Tensor | KernelOperator,
    targets: torch.Tensor,
    ridge: float,
    *,
    method: SolverMethod = "auto",
    preconditioner_rank: int = 100,
    tolerance: float | None = None,
    max_iterations: int = 1000,
) -> tuple[torch.Tensor, RidgeSolveInfo]:
    """(α, info) with α = (K + λI)⁻¹ Y by `method` (module docstring). A KernelOperator always
    goes to CG (it has no stored matrix to factor)."""
    if method not in SOLVER_METHODS:
        raise ValueError(f"method must be one of {SOLVER_METHODS}, got {method!r}.")
    stored = isinstance(gram, torch.Tensor)
    if method == "cholesky" and not stored:
        raise ValueError("method='cholesky' needs a stored Gram; pass a tensor or use 'cg'.")
    n = gram.shape[0]
    if method == "cholesky" or (method == "auto" and stored and n <= AUTO_CG_SIZE):
        assert isinstance(gram, torch.Tensor)
        return cholesky_ridge(gram, targets, ridge), RidgeSolveInfo("cholesky", 0, 0.0, 0)
    return conjugate_gradient_ridge(
        gram,
        targets,
        ridge,
        preconditioner_rank=preconditioner_rank,
        tolerance=tolerance,
        max_iterations=max_iterations,
    )
