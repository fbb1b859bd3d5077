"""Input Grams and activation kernels of FC, CNN and LCN networks (docs/math/theory.md §2).

FC:       C^{μν} = x^μ·x^ν / (λ0 N0),             K^{μν} = κ(C^{μμ}, C^{μν}, C^{νν})
CNN/LCN:  C_ij^{μν} = r_i(x^μ)·r_j(x^ν) / (λ0 M), K_ij^{μν} = κ(C_ii^{μμ}, C_ij^{μν}, C_jj^{νν})

Local blocks are stored once per unordered pair i ≤ j (K_ji = K_ijᵀ): `LocalGramBlocks`.
Test side: cross blocks K_ij(x0, x^ν) and diagonals K_ij(x0, x0) only, never test×test.

The local functions take the patch geometry as a `PatchGeometry`, or as its mask followed by
stride and padding (zero padding) for brevity: ``compute_local_blocks(x, 3, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from krenorm._validation import check_images, check_positive, check_vectors
from krenorm.kernels.activations import Activation, get_activation
from krenorm.kernels.patches import IntPair, PatchGeometry
from krenorm.memory import DEFAULT_CHUNK_BYTES, check_allocation, chunk_length

#: Temporaries of one κ evaluation, in units of its output (inputs, ρ, intermediate terms).
_KAPPA_TEMPORARIES = 8
#: P×P' matrices alive at once in `fc_kernel`: the input Gram C, κ's result and one temporary.
_FC_TEMPORARIES = 3


def _prepare(x: torch.Tensor, dtype: torch.dtype | None,
             device: torch.device | str | None) -> torch.Tensor:
    dtype = dtype or torch.float64
    return x.to(dtype=dtype, device=device if device is not None else x.device)


def flatten_inputs(x: torch.Tensor) -> torch.Tensor:
    """(P, c, H, W) images or (P, D) vectors → (P, D)."""
    if x.ndim == 4:
        check_images("x", x)
        return x.reshape(x.shape[0], -1)
    return check_vectors("x", x)


# ---------------------------------------------------------------------------------------------
# Fully connected


def fc_input_gram(
    x: torch.Tensor, z: torch.Tensor | None = None, lambda0: float = 1.0
) -> torch.Tensor:
    """C = x zᵀ / (λ0 N0) for inputs flattened to (P, N0)."""
    check_positive("lambda0", lambda0)
    x = flatten_inputs(x)
    z = x if z is None else flatten_inputs(z)
    if z.shape[1] != x.shape[1]:
        raise ValueError(f"input dimensions differ: {x.shape[1]} vs {z.shape[1]}.")
    return x @ z.T / (lambda0 * x.shape[1])


def fc_kernel(
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    *,
    memory_limit: int | None = None,
) -> torch.Tensor:
    """K^{μν} = κ(C^{μμ}, C^{μν}, C^{νν}) between x (P, ...) and z (P', ...); z=None → x.

    Memory: the P×P' result and κ's P×P' temporaries (_FC_TEMPORARIES of them), checked against
    `memory_limit` ($KRENORM_MEMORY_LIMIT by default) before allocation."""
    act = get_activation(activation)
    x = _prepare(flatten_inputs(x), dtype, device)
    z_ = x if z is None else _prepare(flatten_inputs(z), dtype, x.device)
    check_allocation("the FC kernel", _FC_TEMPORARIES * x.shape[0] * z_.shape[0], x.dtype,
                     memory_limit)
    cross = fc_input_gram(x, z_, lambda0)
    norm_x = (x * x).sum(1) / (lambda0 * x.shape[1])
    norm_z = norm_x if z is None else (z_ * z_).sum(1) / (lambda0 * x.shape[1])
    return act.kernel_(norm_x[:, None], cross, norm_z[None, :])


def fc_kernel_diagonal(
    x: torch.Tensor,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """κ(C^{μμ}, C^{μμ}, C^{μμ}) for each input (the test-side diagonal)."""
    act = get_activation(activation)
    check_positive("lambda0", lambda0)
    x = _prepare(flatten_inputs(x), dtype, device)
    norm = (x * x).sum(1) / (lambda0 * x.shape[1])
    return act.kernel(norm, norm, norm)


def fc_means(
    x: torch.Tensor,
    activation: str | Activation = "relu",
    lambda0: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """m^μ = μ(C^{μμ}), the mean activation of each input (zero for odd σ)."""
    act = get_activation(activation)
    check_positive("lambda0", lambda0)
    x = _prepare(flatten_inputs(x), dtype, device)
    return act.mean((x * x).sum(1) / (lambda0 * x.shape[1]))


# ---------------------------------------------------------------------------------------------
# Convolutional / locally connected


def scaled_patches(
    x: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Patches r_i(x)/√(λ0 M), shape (P, Np, M), so that C_ij^{μν} is a plain dot product.
    `mask` is a PatchGeometry, or the mask of one with `stride` and `padding`."""
    check_positive("lambda0", lambda0)
    check_images("x", x)
    geometry = PatchGeometry.of(mask, stride, padding)
    patches = geometry.patches(_prepare(x, dtype, device))
    return patches / (lambda0 * patches.shape[2]) ** 0.5


@dataclass(frozen=True)
class LocalGramBlocks:
    """The local blocks K_ij (P×P) of a CNN/LCN, stored once per unordered pair i ≤ j.

    `pairs[k]` is K_ij for the k-th pair of `pair_index` (row-major over i ≤ j); K_ji = K_ijᵀ.
    Contractions with symmetric Np×Np weights never materialise the (Np, Np, P, P) stack.
    """

    pairs: torch.Tensor
    n_patches: int

    @property
    def n_samples(self) -> int:
        return self.pairs.shape[-1]

    @property
    def pair_index(self) -> torch.Tensor:
        """(n_pairs, 2) indices (i, j), i ≤ j, in storage order."""
        return torch.triu_indices(self.n_patches, self.n_patches).T

    def _pair_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Map symmetric Np×Np weights W (any leading batch axes) to per-pair coefficients of
        Σ_ij W_ij K_ij: W_ii on the diagonal, W_ij for each i < j (its transpose partner is
        added separately)."""
        if weights.shape[-2:] != (self.n_patches, self.n_patches):
            raise ValueError(
                f"weights must be (..., {self.n_patches}, {self.n_patches}), got "
                f"{tuple(weights.shape)}."
            )
        i, j = self.pair_index.T
        return weights.to(self.pairs)[..., i, j]

    def contract(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ_ij W_ij K_ij for symmetric W (batched over leading axes): D + S + Sᵀ with D the
        diagonal part and S = Σ_{i<j}; both come from one pass over the stored blocks."""
        coefficients = self._pair_weights(weights)
        i, j = self.pair_index.T
        diagonal = (i == j).to(coefficients)
        split = torch.stack([coefficients * diagonal, coefficients * (1 - diagonal)], -2)
        flat = self.pairs.reshape(self.pairs.shape[0], -1)
        products = (split.reshape(-1, flat.shape[0]) @ flat).reshape(
            *split.shape[:-1], self.n_samples, self.n_samples)
        on_diagonal, upper = products[..., 0, :, :], products[..., 1, :, :]
        return on_diagonal + upper + upper.transpose(-1, -2)

    def frobenius(self, matrix: torch.Tensor) -> torch.Tensor:
        """F_ij = ⟨K_ij, B⟩_F for symmetric P×P matrices B (batched over leading axes); F is
        symmetric since ⟨K_ji, B⟩ = ⟨K_ijᵀ, B⟩ = ⟨K_ij, Bᵀ⟩. One pass over the blocks."""
        batch = matrix.shape[:-2]
        flat = self.pairs.reshape(self.pairs.shape[0], -1)
        values = (flat @ matrix.reshape(-1, flat.shape[1]).to(self.pairs).T).T  # (m, n_pairs)
        out = values.new_zeros(values.shape[0], self.n_patches, self.n_patches)
        i, j = self.pair_index.T
        out[:, i, j] = values
        out[:, j, i] = values
        return out.reshape(*batch, self.n_patches, self.n_patches)

    def diagonal_blocks(self) -> torch.Tensor:
        """(Np, P, P) stack of K_ii."""
        i, j = self.pair_index.T
        return self.pairs[i == j]

    def full(self) -> torch.Tensor:
        """The full (Np, Np, P, P) stack (doubles the memory; for users and tests)."""
        stack = self.pairs.new_empty(self.n_patches, self.n_patches, self.n_samples, self.n_samples)
        for k, (i, j) in enumerate(self.pair_index.tolist()):
            stack[i, j] = self.pairs[k]
            stack[j, i] = self.pairs[k].T
        return stack


def _local_kernel_from_patches(
    act: Activation,
    left: torch.Tensor,
    right: torch.Tensor,
    left_norms: torch.Tensor,
    right_norms: torch.Tensor,
) -> torch.Tensor:
    """K for patch stacks left (A, P, M), right (B, P', M) → (A, B, P, P') in one shot:
    κ(|r_i(x)|², r_i(x)·r_j(z), |r_j(z)|²)."""
    cross = torch.einsum("apm,bqm->abpq", left, right)
    return act.kernel_(left_norms[:, None, :, None], cross, right_norms[None, :, None, :])


def compute_local_blocks(
    x: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    memory_limit: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> LocalGramBlocks:
    """All local blocks K_ij, i ≤ j, of images x (P, c, H, W) as a `LocalGramBlocks`.

    Memory: n_pairs·P² entries, checked against `memory_limit` before allocation; κ is evaluated
    in chunks of pairs whose temporaries fit `chunk_bytes`.
    """
    act = get_activation(activation)
    patches = scaled_patches(x, mask, stride, padding, lambda0, dtype=dtype, device=device)
    patches_by_position = patches.transpose(0, 1).contiguous()  # (Np, P, M)
    norms = (patches_by_position**2).sum(-1)  # (Np, P)
    linked = act.link_inputs(patches_by_position, norms)
    n_patches, n_samples = norms.shape
    n_pairs = n_patches * (n_patches + 1) // 2
    check_allocation("the local Gram blocks", n_pairs * n_samples**2, patches.dtype, memory_limit)
    pairs = patches.new_empty(n_pairs, n_samples, n_samples)
    per_block = _KAPPA_TEMPORARIES * n_samples**2 * patches.element_size()
    step = chunk_length(per_block, chunk_bytes)
    offset = 0
    for i in range(n_patches):
        for start in range(i, n_patches, step):
            stop = min(start + step, n_patches)
            # Dot products straight into the storage, then κ in place: no block-sized copies.
            block = pairs[offset : offset + stop - start]
            torch.matmul(linked[i][None], linked[start:stop].mT, out=block)
            kernel = act.kernel_from_linked_(norms[i][None, :, None], block,
                                             norms[start:stop][:, None, :])
            if kernel.data_ptr() != block.data_ptr():
                block.copy_(kernel)
            offset += stop - start
    return LocalGramBlocks(pairs=pairs, n_patches=n_patches)


def local_gram_blocks(
    x: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    *,
    memory_limit: int | None = None,
) -> torch.Tensor:
    """The full (Np, Np, P, P) stack of local blocks K_ij for images x (P, c, H, W), float64.

    Convenience entry point; solvers use `compute_local_blocks`, which stores each unordered pair
    once. Memory: the full stack plus the pair storage it is built from, Np²·P² + Np(Np+1)/2·P²
    entries, checked against `memory_limit` before anything is computed.
    """
    geometry = PatchGeometry.of(mask, stride, padding)
    images = check_images("x", x)
    n_patches = geometry.n_patches((images.shape[2], images.shape[3]))
    n_samples = images.shape[0]
    check_allocation("the full stack of local Gram blocks",
                     (n_patches**2 + n_patches * (n_patches + 1) // 2) * n_samples**2,
                     torch.float64, memory_limit)
    return compute_local_blocks(x, mask, stride, padding, activation, lambda0,
                                memory_limit=memory_limit).full()


def local_diagonal_blocks(
    x: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    memory_limit: int | None = None,
) -> torch.Tensor:
    """(Np, P, P) stack of K_ii only: all an LCN or a pool-free CNN needs at infinite width."""
    act = get_activation(activation)
    patches = scaled_patches(x, mask, stride, padding, lambda0, dtype=dtype, device=device)
    patches = patches.transpose(0, 1)
    n_patches, n_samples, _ = patches.shape
    check_allocation("the diagonal blocks", n_patches * n_samples**2, patches.dtype, memory_limit)
    out = patches.new_empty(n_patches, n_samples, n_samples)
    for i in range(n_patches):
        norms = (patches[i] ** 2).sum(-1)
        out[i] = act.kernel_(norms[:, None], patches[i] @ patches[i].T, norms[None, :])
    return out


def local_cross_blocks(
    x_test: torch.Tensor,
    x_train: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    memory_limit: int | None = None,
) -> torch.Tensor:
    """Cross blocks K_ij(x0, x^ν) of shape (Np, Np, Pt, P); callers batch the test set."""
    act = get_activation(activation)
    test = scaled_patches(x_test, mask, stride, padding, lambda0, dtype=dtype,
                          device=device).transpose(0, 1)
    train = scaled_patches(x_train, mask, stride, padding, lambda0, dtype=test.dtype,
                           device=test.device)
    train = train.transpose(0, 1)
    if test.shape[0] != train.shape[0] or test.shape[2] != train.shape[2]:
        raise ValueError("test and training images must have the same channels and size.")
    n_patches = test.shape[0]
    check_allocation(
        "the cross blocks", n_patches**2 * test.shape[1] * train.shape[1], test.dtype, memory_limit
    )
    return _local_kernel_from_patches(
        act, test, train, (test**2).sum(-1), (train**2).sum(-1)
    )


def local_test_diagonals(
    x_test: torch.Tensor,
    mask: PatchGeometry | IntPair,
    stride: IntPair | None = None,
    padding: IntPair | None = None,
    activation: str | Activation = "erf",
    lambda0: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """K_ij(x0, x0) = κ(C_ii^{00}, C_ij^{00}, C_jj^{00}) of shape (Np, Np, Pt) — no test×test."""
    act = get_activation(activation)
    test = scaled_patches(x_test, mask, stride, padding, lambda0, dtype=dtype,
                          device=device)  # (Pt, Np, M)
    cross = torch.einsum("tim,tjm->ijt", test, test)
    norms = (test**2).sum(-1).T  # (Np, Pt)
    return act.kernel_(norms[:, None, :], cross, norms[None, :, :])
