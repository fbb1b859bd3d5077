"""Kept for imports of earlier versions: the noisy-kernel linear algebra now lives in the
bottom layer, `krenorm.linalg`, shared by theory, networks and the lenses."""

from krenorm.linalg import (
    NOISY_KERNEL,
    NotPositiveDefiniteError,
    cholesky,
    factor_noisy_kernel,
    log_det_from_factor,
    spd_inverse,
)

__all__ = ["NOISY_KERNEL", "NotPositiveDefiniteError", "cholesky", "factor_noisy_kernel",
           "log_det_from_factor", "spd_inverse"]
