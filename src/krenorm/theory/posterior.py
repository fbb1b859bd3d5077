"""The Gaussian-process posterior at a solved order parameter (docs/math/theory.md §4).

With A = T·1 + K_R on the training set, k_R(x0) the cross kernel and K_R(x0, x0) the test
diagonal:
    m(x0) = k_R(x0)ᵀ A⁻¹ y,   v(x0) = K_R(x0, x0) − k_R(x0)ᵀ A⁻¹ k_R(x0)   (no T added to v).
One interface, `GaussianPosterior`: predictions on test inputs (batched, never a test×test
matrix), the training residual y − m = T A⁻¹ y, the diagonal of A⁻¹, and the data fit
ln det A + yᵀA⁻¹y that enters the log evidence. Two implementations: `CholeskyPosterior` (any
K_R, one factorization) and `SpectralPosterior` (K_R = (Q̄ ⊗ K)/λ1 in the eigenbasis of K, for
D outputs stacked output-major).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from krenorm.linalg import factor_noisy_kernel, log_det_from_factor, spd_inverse
from krenorm.theory.action import SpectralBasis

#: (k_R(x0) (B×P), K_R(x0, x0) (B)) for one batch of test inputs.
TestKernels = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Prediction:
    """Posterior mean and variance of the network output (no label noise added)."""

    mean: torch.Tensor
    variance: torch.Tensor


class GaussianPosterior(ABC):
    """The posterior of a GP with kernel K_R and noise variance T on the training set."""

    n_outputs: int

    @abstractmethod
    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> Prediction:
        """Mean and variance at test inputs x (validated by the caller), in batches."""

    @property
    @abstractmethod
    def train_residual(self) -> torch.Tensor:
        """y − m(x^μ) = T A⁻¹ y: (P,) for one output, (P, D) for several."""

    @property
    @abstractmethod
    def a_inverse_diagonal(self) -> torch.Tensor:
        """(A⁻¹)_μμ per output: (P, D)."""

    @property
    @abstractmethod
    def data_fit(self) -> float:
        """ln det A + yᵀA⁻¹y (−2 × the GP log marginal likelihood, without (P·D) ln 2π)."""


def _squeezed(values: torch.Tensor, n_outputs: int) -> torch.Tensor:
    return values[..., 0] if n_outputs == 1 else values


class CholeskyPosterior(GaussianPosterior):
    """One output, any training kernel: A = L Lᵀ once, then triangular solves per test batch."""

    def __init__(self, train_kernel: torch.Tensor, y: torch.Tensor, temperature: float,
                 test_kernels: TestKernels, batch_size: int):
        if y.ndim != 1:
            raise ValueError("the Cholesky posterior takes one output; pass y of shape (P,).")
        self.n_outputs = 1
        self.temperature = temperature
        self._test_kernels = test_kernels
        self._batch_size = batch_size
        self._factor = factor_noisy_kernel(train_kernel, temperature)
        self._alpha = torch.cholesky_solve(y[:, None].to(self._factor), self._factor)  # (P, 1)
        self._a_inverse_diagonal = torch.diagonal(spd_inverse(self._factor))[:, None]
        self._data_fit = float(log_det_from_factor(self._factor) + y.to(self._alpha)
                               @ self._alpha[:, 0])

    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> Prediction:
        size = batch_size or self._batch_size
        means, variances = [], []
        for start in range(0, x.shape[0], size):
            k_r, k_00 = self._test_kernels(x[start:start + size])
            means.append(k_r @ self._alpha[:, 0])
            solved = torch.linalg.solve_triangular(self._factor, k_r.T, upper=False)
            variances.append(k_00 - (solved**2).sum(0))
        return Prediction(torch.cat(means), torch.cat(variances).clamp_min(0))

    @property
    def train_residual(self) -> torch.Tensor:
        return self.temperature * self._alpha[:, 0]

    @property
    def a_inverse_diagonal(self) -> torch.Tensor:
        return self._a_inverse_diagonal

    @property
    def data_fit(self) -> float:
        return self._data_fit


class SpectralPosterior(GaussianPosterior):
    """K_R = (Q̄ ⊗ K)/λ1 in the eigenbasis K/λ1 = U Λ Uᵀ (`SpectralBasis`), D outputs:
        A⁻¹ y = U w,  w_μ = M_μ⁻¹ ỹ_μ,  M_μ = T·1 + λ_μ Q̄,
        m(x0) = (k(x0)/λ1) U w Q̄,
        v_d(x0) = Q̄_dd K(x0, x0)/λ1 − Σ_μ z_μ² (Q̄ M_μ⁻¹ Q̄)_dd,  z = (k(x0)/λ1) U.
    `base_test_kernels` gives (k(x0)/λ1, K(x0, x0)/λ1) for a batch."""

    def __init__(self, basis: SpectralBasis, q_matrix: torch.Tensor, temperature: float,
                 base_test_kernels: TestKernels, batch_size: int):
        self.n_outputs = basis.n_outputs
        self.temperature = temperature
        self._basis = basis
        self._base_test_kernels = base_test_kernels
        self._batch_size = batch_size
        inverses, w, log_det = basis.block_inverses(q_matrix, temperature)
        self._q_matrix = q_matrix.to(inverses)
        self._alpha = basis.eigenvectors @ w  # A⁻¹ y, (P, D)
        self._variance_weights = torch.diagonal(self._q_matrix @ inverses @ self._q_matrix,
                                                dim1=-2, dim2=-1)
        self._a_inverse_diagonal = (basis.eigenvectors**2) @ torch.diagonal(
            inverses, dim1=-2, dim2=-1)
        self._data_fit = log_det + float((basis.projected_targets * w).sum())

    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> Prediction:
        size = batch_size or self._batch_size
        eigenvectors = self._basis.eigenvectors
        means, variances = [], []
        for start in range(0, x.shape[0], size):
            cross, diagonal = self._base_test_kernels(x[start:start + size])
            means.append(cross @ self._alpha @ self._q_matrix)
            projected = (cross @ eigenvectors) ** 2  # z_μ²
            variances.append(diagonal[:, None] * torch.diagonal(self._q_matrix)
                             - projected @ self._variance_weights)
        mean, variance = torch.cat(means), torch.cat(variances).clamp_min(0)
        return Prediction(_squeezed(mean, self.n_outputs), _squeezed(variance, self.n_outputs))

    @property
    def train_residual(self) -> torch.Tensor:
        return _squeezed(self.temperature * self._alpha, self.n_outputs)

    @property
    def a_inverse_diagonal(self) -> torch.Tensor:
        return self._a_inverse_diagonal

    @property
    def data_fit(self) -> float:
        return self._data_fit
