"""Contractions of local kernels with order-parameter weights, without the (Np, Np, ·, ·) stack.

For test points x0 (docs/math/theory.md §3–4) the theory needs only
    Σ_ij W_ij K_ij(x0, x^ν)   (B×P),   Σ_i w_i K_ii(x0, x^ν)   (B×P),   Σ_ij W_ij K_ij(x0, x0)  (B).
With patches ordered (test point, position) on the left and (position, training point) on the
right, all cross dot products are one matrix product whose rows/columns read [b, i] × [j, ν]; the
kernel link is applied in place and the weighted sum over (i, j) is one batched matrix-vector
product over the contiguous middle axis.
"""

from __future__ import annotations

import torch

from krenorm.kernels.activations import Activation, get_activation
from krenorm.kernels.grams import scaled_patches
from krenorm.kernels.patches import IntPair, PatchGeometry
from krenorm.memory import DEFAULT_CHUNK_BYTES, chunk_length


class LocalKernel:
    """A CNN/LCN kernel on a fixed training set: geometry, activation, λ0 and the training
    patches r_i(x^ν)/√(λ0 M) by position, prepared once by `Activation.link_inputs` (with their
    squared norms) and reused across test batches."""

    def __init__(self, x_train: torch.Tensor, mask: PatchGeometry | IntPair,
                 stride: IntPair | None = None, padding: IntPair | None = None,
                 activation: str | Activation = "erf", lambda0: float = 1.0, *,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.geometry = PatchGeometry.of(mask, stride, padding)
        self.activation = get_activation(activation)
        self.lambda0 = lambda0
        self.chunk_bytes = chunk_bytes
        train = scaled_patches(x_train, self.geometry, lambda0=lambda0)  # (P, Np, M)
        self.n_samples, self.n_patches, _ = train.shape
        by_position = train.transpose(0, 1).contiguous()  # (Np, P, M)
        self.train_norms = (by_position**2).sum(-1)  # (Np, P)
        self.train_by_position = self.activation.link_inputs(by_position, self.train_norms)

    def _test_patches(self, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Test patches prepared by `Activation.link_inputs` (B, Np, M) and their |x|² (B, Np)."""
        test = scaled_patches(x_test, self.geometry, lambda0=self.lambda0,
                              dtype=self.train_by_position.dtype,
                              device=self.train_by_position.device)
        if test.shape[1:] != self.train_by_position.shape[::2]:
            raise ValueError("test and training images must have the same channels and size.")
        norms = (test**2).sum(-1)
        return self.activation.link_inputs(test, norms), norms

    def batch_size(self, all_pairs: bool = True) -> int:
        """Test points per batch so that one batch of cross kernels fits the chunk budget."""
        pairs = self.n_patches**2 if all_pairs else self.n_patches
        return chunk_length(2 * pairs * self.n_samples * 8, self.chunk_bytes)

    def contract_cross(self, weights: torch.Tensor, x_test: torch.Tensor) -> torch.Tensor:
        """Σ_ij W_ij K_ij(x0, x^ν) for a batch x0 (B×P); W any Np×Np matrix."""
        test, test_norms = self._test_patches(x_test)
        batch, n_patches, _ = test.shape
        dots = test.reshape(batch * n_patches, -1) @ self.train_by_position.reshape(
            n_patches * self.n_samples, -1).T  # [(b, i), (j, ν)]
        kernel = self.activation.kernel_from_linked_(test_norms.reshape(-1, 1), dots,
                                                     self.train_norms.reshape(1, -1))
        kernel = kernel.view(batch, n_patches * n_patches, self.n_samples)
        return torch.matmul(weights.reshape(1, 1, -1).to(kernel), kernel)[:, 0]

    def contract_cross_diagonal(self, weights: torch.Tensor, x_test: torch.Tensor
                                ) -> torch.Tensor:
        """Σ_i w_i K_ii(x0, x^ν) (B×P): the only cross kernels of an LCN (and of the NNGP of a
        CNN without pooling)."""
        test, test_norms = self._test_patches(x_test)
        out = test.new_zeros(test.shape[0], self.n_samples)
        for i in range(self.n_patches):
            dots = test[:, i] @ self.train_by_position[i].T
            kernel = self.activation.kernel_from_linked_(test_norms[:, i, None], dots,
                                                         self.train_norms[i][None, :])
            out.add_(kernel, alpha=float(weights[i]))
        return out

    def contract_test_diagonals(self, weights: torch.Tensor, x_test: torch.Tensor
                                ) -> torch.Tensor:
        """Σ_ij W_ij K_ij(x0, x0) for a batch x0 (B); see `weighted_test_diagonals`."""
        return weighted_test_diagonals(weights, x_test, self.geometry,
                                       activation=self.activation, lambda0=self.lambda0)


def weighted_test_diagonals(weights: torch.Tensor, x_test: torch.Tensor,
                            mask: PatchGeometry | IntPair, stride: IntPair | None = None,
                            padding: IntPair | None = None,
                            activation: str | Activation = "erf",
                            lambda0: float = 1.0) -> torch.Tensor:
    """Σ_ij W_ij K_ij(x0, x0) (B): each test point's Np×Np patch kernel, weighted — never a
    test×test matrix. A vector of weights means a diagonal W."""
    act = get_activation(activation)
    test = scaled_patches(x_test, mask, stride, padding, lambda0)  # (B, Np, M)
    norms = (test**2).sum(-1)  # (B, Np)
    if weights.ndim == 1:
        return act.kernel_(norms, norms.clone(), norms) @ weights.to(norms)
    dots = test @ test.transpose(1, 2)  # (B, Np, Np)
    kernel = act.kernel_(norms[:, :, None], dots, norms[:, None, :])
    return (kernel * weights.to(kernel)).sum((1, 2))
