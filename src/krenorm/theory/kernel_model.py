"""The interface of an architecture's kernel model (docs/math/theory.md §3–4).

A kernel model holds the training-set kernels of one architecture and gives, for any point of
its order parameters: the effective action on the training set, K_R on the training set, the
test-side kernels k_R(x0) and K_R(x0, x0), and the Gaussian-process posterior. `FittedTheory`
composes kernels → action → saddle point → posterior through this interface alone, so a new
architecture or order parameter plugs in as one class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from krenorm.theory.action import EffectiveAction
from krenorm.theory.posterior import CholeskyPosterior, GaussianPosterior

#: Test points per batch where a model has no memory estimate of its own.
DEFAULT_TEST_BATCH = 1024


class RenormalizedKernels(ABC):
    """Training kernels of one architecture, and K_R on test points for any order parameter."""

    x_train: torch.Tensor
    lambda1: float

    @abstractmethod
    def action(self, y: torch.Tensor, width: float, temperature: float) -> EffectiveAction:
        """S on the training set with targets y at width N and temperature T."""

    @abstractmethod
    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        """K_R(point) on the training set (P×P; single output)."""

    @abstractmethod
    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """k_R(x0) (B×P) and K_R(x0, x0) (B) for one test batch."""

    def test_batch_size(self) -> int:
        """Test points per batch of `test_kernels`."""
        return DEFAULT_TEST_BATCH

    def posterior(self, point: torch.Tensor, y: torch.Tensor,
                  temperature: float) -> GaussianPosterior:
        """The GP posterior with kernel K_R(point) and noise T (a Cholesky factorization)."""
        return CholeskyPosterior(self.train_kernel(point), y, temperature,
                                 lambda batch: self.test_kernels(point, batch),
                                 self.test_batch_size())

    def off_diagonal_share(self, point: torch.Tensor) -> float | None:
        """‖K_R − K_R^diag‖_F / ‖K_R‖_F, the share of K_R carried by cross-patch blocks (None
        where the architecture has none)."""
        return None
