"""Infinite-width kernels of deep FC, CNN and LCN networks (docs/math/deep.md §2).

FC:   C¹ = x zᵀ/(λ_0 N_0);  K^ℓ = κ(C^ℓ)/λ_ℓ with the diagonals of C^ℓ as variances;
      C^{ℓ+1} = K^ℓ;  the NNGP kernel is K^L (λ_L, the readout prior, included).
CNN:  C¹_ij = r_i·r_j/(λ_0 M);  K^ℓ_ij = κ(C^ℓ_ii, C^ℓ_ij, C^ℓ_jj);
      C^{ℓ+1}_ij = (1/(λ_ℓ m_{ℓ+1})) Σ_t K^ℓ_{i(t) j(t)} over the filter offsets t of layer ℓ+1
      (i(t): the layer-ℓ position that offset t of output position i reads; a zero-padded
      position contributes 0). The readout blocks are K^L_ij (divided by λ_L by the callers).
LCN:  the same recursion restricted to i = j (no weight sharing: no cross-position term).

Only the pairs of positions that the last layer needs are ever computed: the needed pairs are
propagated down the layers, then the recursion streams over the pairs of layer ℓ, accumulating
into those of layer ℓ+1, so at most two layers' needed blocks are held at once. Training blocks
are stored per unordered pair (K_ji = K_ijᵀ), the test side gets cross blocks (Pt, P) and
per-point diagonals only, never a test×test matrix. `activation` is a name or `Activation`,
`geometries` one `PatchGeometry` per hidden layer, `priors` (λ_0, …, λ_{L−1}) the priors of the
weights into the hidden layers (the readout prior λ_L is applied by the callers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from krenorm._validation import check_images, check_positive
from krenorm.kernels.activations import Activation, get_activation
from krenorm.kernels.grams import LocalGramBlocks, flatten_inputs, scaled_patches
from krenorm.kernels.memory import check_allocation
from krenorm.kernels.patches import PatchGeometry

Pair = tuple[int, int]

__all__ = [
    "deep_fc_kernel",
    "deep_fc_kernel_diagonal",
    "deep_local_blocks",
    "deep_local_cross_blocks",
    "deep_local_diagonal_blocks",
    "deep_local_gram",
    "deep_local_gram_from_features",
    "deep_local_test_diagonals",
    "first_layer_features",
    "layer_offsets",
]


def _priors(priors: Sequence[float], depth: int) -> tuple[float, ...]:
    values = tuple(float(p) for p in priors)
    if len(values) != depth:
        raise ValueError(f"priors must hold λ_0..λ_{depth - 1} ({depth} values), got "
                         f"{len(values)}.")
    for index, value in enumerate(values):
        check_positive(f"priors[{index}]", value)
    return values


# ---------------------------------------------------------------------------------------------
# Fully connected


def deep_fc_kernel(x: torch.Tensor, z: torch.Tensor | None = None,
                   activation: str | Activation = "erf", priors: Sequence[float] = (1.0, 1.0)
                   ) -> torch.Tensor:
    """K^L(x, z) of a depth-L FC network, priors = (λ_0, …, λ_L) (L = len(priors) − 1), float64.
    z = None gives the P×P training kernel."""
    act = get_activation(activation)
    values = _priors(priors, len(priors))
    if len(values) < 2:
        raise ValueError("priors must hold λ_0..λ_L with L ≥ 1 (at least two values).")
    x = flatten_inputs(x).to(torch.float64)
    z_ = x if z is None else flatten_inputs(z).to(torch.float64)
    if z_.shape[1] != x.shape[1]:
        raise ValueError(f"input dimensions differ: {x.shape[1]} vs {z_.shape[1]}.")
    cross = x @ z_.T / (values[0] * x.shape[1])
    norm_x = (x * x).sum(1) / (values[0] * x.shape[1])
    norm_z = norm_x if z is None else (z_ * z_).sum(1) / (values[0] * x.shape[1])
    for prior in values[1:]:
        cross = act.kernel(norm_x[:, None], cross, norm_z[None, :]) / prior
        norm_x_next = act.kernel(norm_x, norm_x, norm_x) / prior
        norm_z = norm_x_next if z is None else act.kernel(norm_z, norm_z, norm_z) / prior
        norm_x = norm_x_next
    return cross


def deep_fc_kernel_diagonal(x: torch.Tensor, activation: str | Activation = "erf",
                            priors: Sequence[float] = (1.0, 1.0)) -> torch.Tensor:
    """K^L(x0, x0) for each input (the test-side diagonal)."""
    act = get_activation(activation)
    values = _priors(priors, len(priors))
    x = flatten_inputs(x).to(torch.float64)
    norm = (x * x).sum(1) / (values[0] * x.shape[1])
    for prior in values[1:]:
        norm = act.kernel(norm, norm, norm) / prior
    return norm


# ---------------------------------------------------------------------------------------------
# Convolutional / locally connected: geometry of the layers


def layer_offsets(geometry: PatchGeometry, in_grid: tuple[int, int]
                  ) -> tuple[tuple[int, int], torch.Tensor]:
    """(out_grid, table) of a Conv2d layer on an input grid: table[i, t] is the input position
    (row-major) read by output position i at filter offset t (row-major over the mask), or −1
    where the offset falls on zero padding."""
    if geometry.padding_mode != "zeros":
        raise ValueError("layers after the first pad with zeros only (padding_mode='zeros').")
    out_grid = geometry.grid(in_grid)
    (mh, mw), (sh, sw), (ph, pw) = geometry.mask, geometry.stride, geometry.padding
    rows = torch.arange(out_grid[0])[:, None, None, None] * sh - ph + torch.arange(mh)[
        None, None, :, None]
    cols = torch.arange(out_grid[1])[None, :, None, None] * sw - pw + torch.arange(mw)[
        None, None, None, :]
    rows, cols = torch.broadcast_tensors(rows, cols)
    valid = (rows >= 0) & (rows < in_grid[0]) & (cols >= 0) & (cols < in_grid[1])
    table = torch.where(valid, rows * in_grid[1] + cols, -1)
    return out_grid, table.reshape(out_grid[0] * out_grid[1], mh * mw)


class _Layers:
    """The geometry of a deep local network on images of one shape: grids and offset tables."""

    def __init__(self, geometries: Sequence[PatchGeometry], priors: Sequence[float],
                 image_shape: Sequence[int]):
        if not geometries:
            raise ValueError("geometries must hold one PatchGeometry per hidden layer.")
        self.geometries = [PatchGeometry.of(g) for g in geometries]
        self.depth = len(self.geometries)
        self.priors = _priors(priors, self.depth)
        grid = self.geometries[0].grid((int(image_shape[1]), int(image_shape[2])))
        self.sizes = [grid[0] * grid[1]]
        self.tables: list[torch.Tensor] = []  # tables[ℓ−1] maps layer ℓ+1 to layer ℓ
        for geometry in self.geometries[1:]:
            grid, table = layer_offsets(geometry, grid)
            self.tables.append(table)
            self.sizes.append(grid[0] * grid[1])

    @property
    def n_positions(self) -> int:
        return self.sizes[-1]

    def scale(self, layer: int) -> float:
        """1/(λ_ℓ m_{ℓ+1}) of the step from layer ℓ (1-based) to ℓ+1."""
        mask = self.geometries[layer].mask
        return 1.0 / (self.priors[layer] * mask[0] * mask[1])

    def variances(self, act: Activation, first: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activation variances C^ℓ_ii(x, x), shape (d_ℓ, n), from those of layer 1."""
        out = [first]
        for layer, table in enumerate(self.tables, start=1):
            previous = out[-1]
            kernel = act.kernel(previous, previous, previous)
            padded = torch.cat([kernel, kernel.new_zeros(1, kernel.shape[1])])  # row −1 → 0
            out.append(padded[table].sum(1) * self.scale(layer))
        return out


def _needed_pairs(layers: _Layers, top: list[Pair], symmetric: bool
                  ) -> list[tuple[list[Pair], dict[Pair, list[tuple[int, bool]]]]]:
    """For each layer ℓ = L..1 (returned bottom-up): its needed pairs and, for ℓ < L, where each
    contributes in layer ℓ+1: source pair → [(index of the target pair, transposed?)].
    With `symmetric` (x against itself) a pair (a, b), a > b, is read as (b, a) transposed."""
    levels: list[tuple[list[Pair], dict[Pair, list[tuple[int, bool]]]]] = [(top, {})]
    for table in reversed(layers.tables):
        targets = levels[0][0]
        contributions: dict[Pair, list[tuple[int, bool]]] = defaultdict(list)
        for index, (i, j) in enumerate(targets):
            for a, b in zip(table[i].tolist(), table[j].tolist(), strict=True):
                if a < 0 or b < 0:
                    continue
                transposed = symmetric and a > b
                source = (b, a) if transposed else (a, b)
                contributions[source].append((index, transposed))
        levels.insert(0, (list(contributions), contributions))
    return levels


def _recursion(act: Activation, layers: _Layers, top: list[Pair], symmetric: bool,
               first_block: Callable[[Pair], torch.Tensor],
               left_variances: list[torch.Tensor], right_variances: list[torch.Tensor],
               block_shape: tuple[int, ...], paired: bool, what: str,
               memory_limit: int | None) -> torch.Tensor:
    """K^L blocks for the `top` pairs, (len(top), *block_shape); see the module docstring.
    `first_block(pair)` is C¹ of a pair; variances per layer are (d_ℓ, n) for each side;
    `paired` means blocks are per-point vectors (test diagonals), not matrices."""
    levels = _needed_pairs(layers, top, symmetric)
    element = 1
    for size in block_shape:
        element *= size
    largest = max(len(pairs) for pairs, _ in levels[1:]) if len(levels) > 1 else 0
    check_allocation(what, (len(top) + largest) * element, torch.float64, memory_limit)

    def kappa(layer: int, pair: Pair, cov: torch.Tensor) -> torch.Tensor:
        left = left_variances[layer][pair[0]]
        right = right_variances[layer][pair[1]]
        if not paired:
            left, right = left[:, None], right[None, :]
        return act.kernel(left, cov, right)

    def transpose(block: torch.Tensor) -> torch.Tensor:
        return block if paired else block.T

    stored: dict[Pair, torch.Tensor] | None = None
    for layer in range(layers.depth - 1):
        sources, _ = levels[layer]
        targets, _ = levels[layer + 1]
        contributions = levels[layer][1]
        accumulator = torch.zeros(len(targets), *block_shape, dtype=torch.float64)
        for source in sources:
            cov = first_block(source) if stored is None else stored[source]
            kernel = kappa(layer, source, cov)
            for index, transposed in contributions[source]:
                accumulator[index] += transpose(kernel) if transposed else kernel
        accumulator *= layers.scale(layer + 1)
        stored = dict(zip(targets, accumulator, strict=True))
    out = torch.empty(len(top), *block_shape, dtype=torch.float64)
    for index, pair in enumerate(top):
        cov = first_block(pair) if stored is None else stored[pair]
        out[index] = kappa(layers.depth - 1, pair, cov)
    return out


def _first_layer(x: torch.Tensor, layers: _Layers) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled layer-1 patches by position (d_1, P, M) and their variances (d_1, P)."""
    check_images("x", x)
    patches = scaled_patches(x.to(torch.float64), layers.geometries[0],
                             lambda0=layers.priors[0]).transpose(0, 1).contiguous()
    return patches, (patches**2).sum(-1)


def deep_local_blocks(x: torch.Tensor, geometries: Sequence[PatchGeometry],
                      activation: str | Activation = "erf", priors: Sequence[float] = (1.0,),
                      *, memory_limit: int | None = None) -> LocalGramBlocks:
    """All last-layer blocks K^L_ij, i ≤ j, of images x (P, c, H, W) as `LocalGramBlocks`
    (pairs in row-major order over i ≤ j). priors = (λ_0, …, λ_{L−1})."""
    act = get_activation(activation)
    layers = _Layers(geometries, priors, tuple(x.shape[1:]))
    patches, first = _first_layer(x, layers)
    variances = layers.variances(act, first)
    d = layers.n_positions
    top = [(i, j) for i in range(d) for j in range(i, d)]
    n = patches.shape[1]
    pairs = _recursion(act, layers, top, True, lambda p: patches[p[0]] @ patches[p[1]].T,
                       variances, variances, (n, n), False, "the deep local blocks",
                       memory_limit)
    return LocalGramBlocks(pairs=pairs, n_patches=d)


def deep_local_diagonal_blocks(x: torch.Tensor, geometries: Sequence[PatchGeometry],
                               activation: str | Activation = "erf",
                               priors: Sequence[float] = (1.0,), *,
                               memory_limit: int | None = None) -> torch.Tensor:
    """(d, P, P) stack of K^L_ii: a deep LCN's blocks (and a pool-free CNN's NNGP terms)."""
    act = get_activation(activation)
    layers = _Layers(geometries, priors, tuple(x.shape[1:]))
    patches, first = _first_layer(x, layers)
    variances = layers.variances(act, first)
    top = [(i, i) for i in range(layers.n_positions)]
    n = patches.shape[1]
    return _recursion(act, layers, top, True, lambda p: patches[p[0]] @ patches[p[1]].T,
                      variances, variances, (n, n), False, "the deep diagonal blocks",
                      memory_limit)


def deep_local_cross_blocks(x_test: torch.Tensor, x_train: torch.Tensor,
                            geometries: Sequence[PatchGeometry],
                            activation: str | Activation = "erf",
                            priors: Sequence[float] = (1.0,), *, diagonal_only: bool = False,
                            memory_limit: int | None = None) -> torch.Tensor:
    """Cross blocks K^L_ij(x0, x^ν): (d, d, Pt, P), or (d, Pt, P) of K^L_ii with
    `diagonal_only` (LCN). Callers batch the test set."""
    act = get_activation(activation)
    layers = _Layers(geometries, priors, tuple(x_train.shape[1:]))
    if tuple(x_test.shape[1:]) != tuple(x_train.shape[1:]):
        raise ValueError("test and training images must have the same channels and size.")
    test, test_first = _first_layer(x_test, layers)
    train, train_first = _first_layer(x_train, layers)
    test_var = layers.variances(act, test_first)
    train_var = layers.variances(act, train_first)
    d = layers.n_positions
    top = ([(i, i) for i in range(d)] if diagonal_only
           else [(i, j) for i in range(d) for j in range(d)])
    blocks = _recursion(act, layers, top, False, lambda p: test[p[0]] @ train[p[1]].T,
                        test_var, train_var, (test.shape[1], train.shape[1]), False,
                        "the deep cross blocks", memory_limit)
    return blocks if diagonal_only else blocks.reshape(d, d, *blocks.shape[1:])


def deep_local_test_diagonals(x_test: torch.Tensor, geometries: Sequence[PatchGeometry],
                              activation: str | Activation = "erf",
                              priors: Sequence[float] = (1.0,), *, diagonal_only: bool = False
                              ) -> torch.Tensor:
    """K^L_ij(x0, x0) per test point: (d, d, Pt), or (d, Pt) with `diagonal_only`."""
    act = get_activation(activation)
    layers = _Layers(geometries, priors, tuple(x_test.shape[1:]))
    test, first = _first_layer(x_test, layers)
    variances = layers.variances(act, first)
    d = layers.n_positions
    top = ([(i, i) for i in range(d)] if diagonal_only
           else [(i, j) for i in range(d) for j in range(i, d)])
    values = _recursion(act, layers, top, True, lambda p: (test[p[0]] * test[p[1]]).sum(-1),
                        variances, variances, (test.shape[1],), True, "the deep test diagonals",
                        None)
    if diagonal_only:
        return values
    out = values.new_empty(d, d, test.shape[1])
    for index, (i, j) in enumerate(top):
        out[i, j] = values[index]
        out[j, i] = values[index]
    return out


# ---------------------------------------------------------------------------------------------
# Image-by-image Gram matrices with a readout (used by the deep ConvRFM kernel)

READOUTS = ("flatten", "gap")


def first_layer_features(x: torch.Tensor, geometry: PatchGeometry, lambda0: float = 1.0,
                         metric_factor: torch.Tensor | None = None) -> torch.Tensor:
    """Position-major first-layer features (d_1, P, r): the scaled patches r_i(x)/√(λ_0 m_1),
    times R (m_1, r) when a patch metric M = R Rᵀ is given, so that
    C¹_ij(x, z) = r_i(x)ᵀ M r_j(z)/(λ_0 m_1) is their plain dot product (docs/math/features.md §6).
    """
    check_images("x", x)
    patches = scaled_patches(x.to(torch.float64), PatchGeometry.of(geometry),
                             lambda0=lambda0).transpose(0, 1)
    if metric_factor is not None:
        patches = patches @ metric_factor.to(torch.float64)
    return patches


def deep_local_gram_from_features(left: torch.Tensor, right: torch.Tensor | None,
                                  geometries: Sequence[PatchGeometry],
                                  image_shape: Sequence[int],
                                  activation: str | Activation = "relu",
                                  priors: Sequence[float] = (1.0,), *, readout: str = "flatten",
                                  memory_limit: int | None = None) -> torch.Tensor:
    """The depth-L CNN NNGP Gram (A, B) from first-layer features (`first_layer_features`) of
    images shaped `image_shape` (c, H, W); right = None means left against itself:
        flatten   K(x, z) = (1/d_L) Σ_i K^L_ii(x, z)
        gap       K(x, z) = (1/d_L²) Σ_ij K^L_ij(x, z)
    (the readout prior λ_L is left to the caller). Differentiable in the features (autograd
    gives the predictor's gradients with respect to the first-layer patches)."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}.")
    act = get_activation(activation)
    layers = _Layers(geometries, priors, tuple(image_shape))
    symmetric = right is None
    right_ = left if right is None else right
    if left.shape[0] != layers.sizes[0] or right_.shape[0] != layers.sizes[0]:
        raise ValueError(f"features must have {layers.sizes[0]} first-layer positions for "
                         f"images of shape {tuple(image_shape)}, got {left.shape[0]} and "
                         f"{right_.shape[0]}.")
    left_var = layers.variances(act, (left * left).sum(-1))
    right_var = left_var if symmetric else layers.variances(act, (right_ * right_).sum(-1))
    d = layers.n_positions
    if readout == "flatten":
        top = [(i, i) for i in range(d)]
    elif symmetric:
        top = [(i, j) for i in range(d) for j in range(i, d)]
    else:
        top = [(i, j) for i in range(d) for j in range(d)]
    blocks = _recursion(act, layers, top, symmetric, lambda p: left[p[0]] @ right_[p[1]].T,
                        left_var, right_var, (left.shape[1], right_.shape[1]), False,
                        "the deep image Gram", memory_limit)
    if readout == "flatten":
        return blocks.sum(0) / d
    if symmetric:
        # Pairs i < j stand for both (i, j) and (j, i) = (i, j)ᵀ.
        diagonal = torch.tensor([i == j for i, j in top])
        off = blocks[~diagonal].sum(0)
        return (blocks[diagonal].sum(0) + off + off.T) / d**2
    return blocks.sum(0) / d**2


def deep_local_gram(x: torch.Tensor, z: torch.Tensor | None,
                    geometries: Sequence[PatchGeometry], activation: str | Activation = "relu",
                    priors: Sequence[float] = (1.0,), *, readout: str = "flatten",
                    metric_factor: torch.Tensor | None = None,
                    memory_limit: int | None = None) -> torch.Tensor:
    """The depth-L CNN NNGP Gram between images x (P, c, H, W) and z (P', c, H, W), or x with
    itself for z = None, with a flatten or GAP readout (see `deep_local_gram_from_features`);
    `metric_factor` R puts a patch metric M = R Rᵀ into the first-layer inner products."""
    if z is not None and tuple(z.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError("x and z must have the same channels and size.")
    first = PatchGeometry.of(geometries[0]) if geometries else None
    if first is None:
        raise ValueError("geometries must hold one PatchGeometry per hidden layer.")
    lambda0 = _priors(priors, len(geometries))[0]
    left = first_layer_features(x, first, lambda0, metric_factor)
    right = None if z is None else first_layer_features(z, first, lambda0, metric_factor)
    return deep_local_gram_from_features(left, right, geometries, tuple(x.shape[1:]),
                                         activation, priors, readout=readout,
                                         memory_limit=memory_limit)
