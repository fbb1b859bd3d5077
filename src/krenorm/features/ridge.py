"""Kernel ridge regression for RFM / ConvRFM (docs/math/features.md §5): α = (K + λI)⁻¹ Y by
Cholesky or preconditioned conjugate gradients (krenorm.kernel_ridge_solvers, shared with the
spectra lens), and a matrix-free operator that recomputes a patch kernel's Gram block by block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm._validation import check_finite, check_positive
from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.kernel_ridge_solvers import SolverMethod, solve_ridge

#: Rows of the Gram recomputed at once by PatchKernelOperator.
OPERATOR_BLOCK_ROWS = 512


def solve_kernel_ridge(
    gram: torch.Tensor,
    targets: torch.Tensor,
    ridge: float,
    *,
    method: SolverMethod = "auto",
    preconditioner_rank: int = 100,
) -> torch.Tensor:
    """α = (K + λI)⁻¹ Y; method "auto" (Cholesky up to 8192 points, CG beyond), "cholesky" or
    "cg" (krenorm.kernel_ridge_solvers).

    gram K: (n, n) symmetric PSD; targets Y: (n,) or (n, O); ridge λ > 0. Raises ValueError when
    K + λI is not numerically positive definite, or when CG does not converge, saying what to
    change.
    """
    check_positive("ridge", ridge)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be square, got {tuple(gram.shape)}.")
    if targets.shape[0] != gram.shape[0]:
        raise ValueError(f"targets have {targets.shape[0]} rows, the gram {gram.shape[0]}.")
    check_finite("gram", gram)
    check_finite("targets", targets)
    coefficients, _ = solve_ridge(
        gram, targets.to(gram), ridge, method=method, preconditioner_rank=preconditioner_rank
    )
    return coefficients


@dataclass(frozen=True)
class PatchKernelOperator:
    """K(x, x) of a MahalanobisPatchKernel as a KernelOperator that is never stored: products,
    the diagonal and columns are recomputed in blocks of `block_rows` rows (memory O(block·n)
    instead of n², time one Gram per product)."""

    kernel: MahalanobisPatchKernel
    inputs: torch.Tensor
    metric: torch.Tensor
    bandwidth: float = 1.0
    block_rows: int = OPERATOR_BLOCK_ROWS

    @property
    def shape(self) -> tuple[int, int]:
        return (self.inputs.shape[0], self.inputs.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.inputs.dtype

    def matmul(self, vectors: torch.Tensor) -> torch.Tensor:
        out = vectors.new_empty(self.inputs.shape[0], vectors.shape[1])
        for start in range(0, self.inputs.shape[0], self.block_rows):
            block = self.inputs[start : start + self.block_rows]
            rows = self.kernel.gram(block, self.inputs, self.metric, self.bandwidth)
            out[start : start + block.shape[0]] = rows @ vectors
        return out

    def diagonal(self) -> torch.Tensor:
        blocks = [
            self.kernel.gram(block, None, self.metric, self.bandwidth).diagonal()
            for block in self.inputs.split(self.block_rows)
        ]
        return torch.cat(blocks)

    def columns(self, index: torch.Tensor) -> torch.Tensor:
        return self.kernel.gram(self.inputs, self.inputs[index], self.metric, self.bandwidth)
