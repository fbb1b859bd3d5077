"""Dense linear algebra shared by the actions and the posteriors (docs/math/theory.md §3–4).

Every solve with A = T·1 + K_R goes through `factor_noisy_kernel`: one Cholesky factorization,
with advice when it fails. A⁻¹ is formed only for Frobenius contractions (gradients, Hessian
products, the diagonal of A⁻¹), never to predict.
"""

from __future__ import annotations

import torch

#: The name of the matrix factorized, for error messages.
NOISY_KERNEL = "A = T·1 + K_R"


def cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor of an SPD matrix (batched over leading axes); raises
    torch.linalg.LinAlgError naming the matrix and what to change when it is not SPD."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info.max()) > 0:
        raise torch.linalg.LinAlgError(
            f"{what} is not positive definite (Cholesky failed); increase the temperature T or "
            "check the kernel for NaN/duplicated inputs."
        )
    return factor


def factor_noisy_kernel(kernel: torch.Tensor, temperature: float, *,
                        overwrite: bool = False) -> torch.Tensor:
    """Cholesky factor L of A = T·1 + K (batched over leading axes of K).

    overwrite=True adds T to the diagonal of `kernel` in place (for a K built just for this
    call: saves a P×P copy)."""
    matrix = kernel if overwrite else kernel.clone()
    matrix.diagonal(dim1=-2, dim2=-1).add_(temperature)
    return cholesky(matrix, NOISY_KERNEL)


def log_det_from_factor(factor: torch.Tensor) -> torch.Tensor:
    """ln det A = 2 Σ_i ln L_ii (summed over the last two axes)."""
    return 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)


def spd_inverse(factor: torch.Tensor) -> torch.Tensor:
    """A⁻¹ = L⁻ᵀ L⁻¹ from the Cholesky factor L (a triangular solve and one product; faster
    than torch.cholesky_inverse on CPU). Used only for Frobenius contractions, never to predict."""
    identity = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    inverse_factor = torch.linalg.solve_triangular(factor, identity, upper=False)
    return inverse_factor.mT @ inverse_factor
