"""Dense linear algebra of noisy kernels, shared by every package (docs/math/theory.md §3–4).

Every solve with A = T·1 + K (the theory's K_R, the adaptive lens' Q K̂ + κ, …) goes through
`factor_noisy_kernel` or `cholesky`: one Cholesky factorization, with advice when it fails. A⁻¹ is
formed only for Frobenius contractions (gradients, Hessian products, the diagonal of A⁻¹), never to
predict. This module sits in the bottom layer (it imports nothing else of krenorm) so that
theory, networks and the lenses share it.
"""

from __future__ import annotations

import torch

#: The name of the matrix factorized, for error messages.
NOISY_KERNEL = "A = T·1 + K_R"
#: What to change when the theory's A is not positive definite.
RAISE_TEMPERATURE = "increase the temperature T or check the kernel for NaN/duplicated inputs"


class NotPositiveDefiniteError(torch.linalg.LinAlgError, ValueError):
    """A matrix that must be SPD is not. A LinAlgError (what torch raises) and a ValueError (the
    input or a setting must change), so callers of either convention catch it."""


def cholesky(matrix: torch.Tensor, what: str, *, advice: str = RAISE_TEMPERATURE
             ) -> torch.Tensor:
    """Lower Cholesky factor of an SPD matrix (batched over leading axes); raises
    NotPositiveDefiniteError naming the matrix (`what`) and what to change (`advice`)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info.max()) > 0:
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite (Cholesky failed); {advice}.")
    return factor


def factor_noisy_kernel(kernel: torch.Tensor, noise: float, *, overwrite: bool = False,
                        what: str = NOISY_KERNEL, advice: str = RAISE_TEMPERATURE
                        ) -> torch.Tensor:
    """Cholesky factor L of A = noise·1 + K (batched over leading axes of K); noise is the
    theory's temperature T or the adaptive lens' κ.

    overwrite=True adds the noise to the diagonal of `kernel` in place (for a K built just for
    this call: saves a P×P copy)."""
    matrix = kernel if overwrite else kernel.clone()
    matrix.diagonal(dim1=-2, dim2=-1).add_(noise)
    return cholesky(matrix, what, advice=advice)


def log_det_from_factor(factor: torch.Tensor) -> torch.Tensor:
    """ln det A = 2 Σ_i ln L_ii (summed over the last two axes)."""
    return 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)


def spd_inverse(factor: torch.Tensor) -> torch.Tensor:
    """A⁻¹ = L⁻ᵀ L⁻¹ from the Cholesky factor L (a triangular solve and one product; faster
    than torch.cholesky_inverse on CPU). Used only for Frobenius contractions, never to predict."""
    identity = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    inverse_factor = torch.linalg.solve_triangular(factor, identity, upper=False)
    return inverse_factor.mT @ inverse_factor
