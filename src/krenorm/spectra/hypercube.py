"""Exact spectra of tree kernels on {±1}^d (docs/math/spectra.md §3).

Without pooling K(x, y) = g(x⊙y), so the Walsh functions χ_S(x) = Π_{i∈S} x_i are the
eigenfunctions (uniform measure) and λ_S = 2^{-d} Σ_z g(z) χ_S(z): one fast Walsh–Hadamard
transform, O(d·2^d). Subsets S and points z are bit masks (bit i set ⇔ i ∈ S ⇔ z_i = −1).

Local average pooling of width ω before the readout of a cyclic CNN gives
K(x, y) = Σ_{|Δ|<ω} (1 − |Δ|/ω) g(x ⊙ τ^Δ y) (τ the cyclic shift). It maps χ_S to the shifted
χ_{S+Δ}, so it is block diagonal over the cyclic orbits of subsets: on an orbit of size m the
eigenfunctions are Σ_t e^{2πi·j·t/m} χ_{S+t} with eigenvalues λ_S·F(j·d/m), j = 0..m−1, where
F(f) = 1 + 2 Σ_{k=1}^{ω−1} (1 − k/ω) cos(2π f k/d) is the Fejér factor of cyclic frequency f.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from krenorm.memory import check_allocation, chunk_length
from krenorm.spectra.dual import KernelKind, tree_kernel
from krenorm.spectra.trees import ArchitectureTree

#: Largest dimension accepted: 2^26 float64 eigenvalues are 512 MiB.
MAX_HYPERCUBE_DIMENSION = 26
#: Budget for the temporaries of one chunk of kernel evaluations.
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: Largest table of leaf-count profiles evaluated instead of all 2^d points.
MAX_PROFILE_TABLE = 2**22
#: Relative tolerance of the shift-invariance check before pooling.
SHIFT_INVARIANCE_TOLERANCE = 1e-9


def _check_dimension(dimension: int) -> None:
    if not 1 <= dimension <= MAX_HYPERCUBE_DIMENSION:
        raise ValueError(
            f"hypercube dimension must be in [1, {MAX_HYPERCUBE_DIMENSION}], got {dimension}."
        )


def walsh_hadamard_transform(values: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """ĝ_S = Σ_z (−1)^{|S∧z|} g(z) over the last axis (length 2^d), natural (Sylvester) order.

    d butterfly passes, each updating (a, b) → (a + b, a − b) in place on strided views, so the
    only memory is the output itself (no temporaries). Leading axes are batched.
    """
    length = values.shape[-1]
    if length < 1 or length & (length - 1):
        raise ValueError(f"the last axis must have length 2^d, got {length}.")
    out = values if inplace else values.clone()
    batch = out.reshape(-1, length)
    half = 1
    while half < length:
        view = batch.view(batch.shape[0], length // (2 * half), 2, half)
        first, second = view[:, :, 0, :], view[:, :, 1, :]
        first.add_(second)  # a + b
        second.mul_(-2).add_(first)  # (a + b) − 2b = a − b
        half *= 2
    return out


def subset_sizes(dimension: int, device: torch.device | str | None = None) -> torch.Tensor:
    """|S| for every mask S < 2^d, by doubling in O(2^d) (= popcount of torch.arange(2^d))."""
    _check_dimension(dimension)
    return _additive_over_bits([1] * dimension, torch.device(device) if device else None)


def popcount(masks: torch.Tensor, dimension: int) -> torch.Tensor:
    """|S| for integer bit masks S < 2^dimension."""
    counts = torch.zeros_like(masks)
    for bit in range(dimension):
        counts += (masks >> bit) & 1
    return counts


def _bit_position(powers_of_two: torch.Tensor) -> torch.Tensor:
    """log2 of exact powers of two (float64 holds every integer below 2^53 exactly)."""
    _, exponent = torch.frexp(powers_of_two.to(torch.float64))
    return exponent.to(torch.int64) - 1


def linear_extent(masks: torch.Tensor) -> torch.Tensor:
    """max(S) − min(S) + 1: the length of the shortest interval holding S (0 for ∅)."""
    nonzero = masks > 0
    safe = torch.where(nonzero, masks, torch.ones_like(masks))
    highest = _bit_position(safe)
    lowest = _bit_position(safe & -safe)
    return torch.where(nonzero, highest - lowest + 1, torch.zeros_like(masks))


def rotate(masks: torch.Tensor, shift: int, dimension: int) -> torch.Tensor:
    """S + shift (mod d): every coordinate i of S moved to (i + shift) mod d."""
    shift %= dimension
    if shift == 0:
        return masks.clone()
    full = (1 << dimension) - 1
    return ((masks << shift) | (masks >> (dimension - shift))) & full


def cyclic_extent(masks: torch.Tensor, dimension: int) -> torch.Tensor:
    """γ(S) = d − (longest cyclic run of coordinates outside S): the length of the shortest
    cyclic window of Z_d holding S (0 for ∅).

    The run is measured on the complement written twice (2d ≤ 52 bits): each step
    z ← z & (z >> 1) shortens every run of ones by one, so the number of steps with z ≠ 0 is
    the longest run, capped at d.
    """
    full = (1 << dimension) - 1
    complement = full & ~masks
    runs = complement | (complement << dimension)
    longest = torch.zeros_like(masks)
    for _ in range(dimension):
        longest += runs != 0
        runs &= runs >> 1
    return dimension - longest


@dataclass(frozen=True)
class HypercubeSpectrum:
    """λ_S for every subset S (index = bit mask), from one Walsh–Hadamard transform."""

    eigenvalues: torch.Tensor
    input_dimension: int
    kind: str
    architecture: str

    @property
    def masks(self) -> torch.Tensor:
        return torch.arange(self.eigenvalues.numel(), device=self.eigenvalues.device)

    def to_dict(self) -> dict:
        """Summary; the eigenvalues themselves only up to d = 12 (2^22 values are 32 MiB)."""
        small = self.input_dimension <= 12
        return {
            "input_dimension": self.input_dimension,
            "kind": self.kind,
            "architecture": self.architecture,
            "trace": float(self.eigenvalues.sum()),
            "largest": float(self.eigenvalues.max()),
            "smallest": float(self.eigenvalues.min()),
            "eigenvalues": self.eigenvalues.tolist() if small else None,
        }


def _leaf_averaging_matrix(tree: ArchitectureTree, device: torch.device | None) -> torch.Tensor:
    """A (d, n_leaves) with A[i, v] = 1/|v| for i ∈ v, so z @ A are the leaf overlaps."""
    leaves = tree.leaves
    matrix = torch.zeros(tree.input_dimension, len(leaves), dtype=torch.float64, device=device)
    for column, leaf in enumerate(leaves):
        coordinates = list(tree.nodes[leaf].coordinates)
        matrix[coordinates, column] = 1.0 / len(coordinates)
    return matrix


def _additive_over_bits(weights: list[int], device: torch.device | None) -> torch.Tensor:
    """Σ_{i∈z} w_i for every mask z < 2^d, by doubling (entries [2^i, 2^{i+1}) are entries
    [0, 2^i) plus w_i): O(2^d) work, no (2^d, d) temporaries."""
    sums = torch.zeros(1 << len(weights), dtype=torch.int64, device=device)
    for bit, weight in enumerate(weights):
        half = 1 << bit
        torch.add(sums[:half], weight, out=sums[half : 2 * half])
    return sums


def _chunked_tree_kernel(
    tree: ArchitectureTree,
    leaf_overlaps_of: Callable[[torch.Tensor], torch.Tensor],
    count: int,
    kind: KernelKind,
    chunk_bytes: int,
    device: torch.device | None,
) -> torch.Tensor:
    """tree_kernel over `count` rows whose leaf overlaps `leaf_overlaps_of(indices)` builds."""
    # Per row: its leaf overlaps, d ±1 entries, and ~8 live float64 values per node (NTK, κ, κ̇).
    per_row = 8 * (tree.input_dimension + len(tree.leaves) + 8 * len(tree.nodes))
    step = chunk_length(per_row, chunk_bytes)
    values = torch.empty(count, dtype=torch.float64, device=device)
    for start in range(0, count, step):
        indices = torch.arange(start, min(start + step, count), device=device)
        values[start : start + indices.numel()] = tree_kernel(tree, leaf_overlaps_of(indices), kind)
    return values


def hypercube_kernel_values(
    tree: ArchitectureTree,
    kind: KernelKind = "nngp",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: torch.device | str | None = None,
    memory_limit: int | None = None,
    tabulate: bool = True,
) -> torch.Tensor:
    """g(z) = K(1, z) for every z ∈ {±1}^d (index = bit mask of the −1 entries).

    g depends on z only through the leaf counts c_v = |z ∩ v| (t_v = 1 − 2c_v/|v|). When the
    Π_v (|v| + 1) count profiles are fewer than 2^d (always for trees) the recursion runs once
    per profile and g is gathered through the mixed-radix profile key of every mask, built by
    doubling in O(2^d); otherwise (or tabulate=False) it runs on every mask, in chunks.
    """
    dimension = tree.input_dimension
    _check_dimension(dimension)
    size = 1 << dimension
    check_allocation(
        "the 2^d kernel values and profile keys", 2 * size, torch.float64, memory_limit
    )
    device = torch.device(device) if device is not None else None
    leaf_sizes = [len(tree.nodes[leaf].coordinates) for leaf in tree.leaves]
    n_profiles = math.prod(n + 1 for n in leaf_sizes)
    if tabulate and n_profiles <= min(size, MAX_PROFILE_TABLE):
        radices = [math.prod(n + 1 for n in leaf_sizes[:v]) for v in range(len(leaf_sizes))]
        bit_weights = [0] * dimension
        for leaf, radix in zip(tree.leaves, radices, strict=True):
            for coordinate in tree.nodes[leaf].coordinates:
                bit_weights[coordinate] += radix
        keys = _additive_over_bits(bit_weights, device)
        radix_tensor = torch.tensor(radices, device=device)
        base_tensor = torch.tensor([n + 1 for n in leaf_sizes], device=device)
        size_tensor = torch.tensor(leaf_sizes, dtype=torch.float64, device=device)

        def profile_overlaps(profiles: torch.Tensor) -> torch.Tensor:
            counts = (profiles[:, None] // radix_tensor) % base_tensor
            return 1.0 - 2.0 * counts.to(torch.float64) / size_tensor

        table = _chunked_tree_kernel(tree, profile_overlaps, n_profiles, kind, chunk_bytes, device)
        return table[keys]
    averaging = _leaf_averaging_matrix(tree, device)
    bit_shifts = torch.arange(dimension, device=device)

    def mask_overlaps(masks: torch.Tensor) -> torch.Tensor:
        signs = 1.0 - 2.0 * ((masks[:, None] >> bit_shifts) & 1).to(torch.float64)
        return signs @ averaging

    return _chunked_tree_kernel(tree, mask_overlaps, size, kind, chunk_bytes, device)


def hypercube_spectrum(
    tree: ArchitectureTree,
    kind: KernelKind = "nngp",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: torch.device | str | None = None,
    memory_limit: int | None = None,
) -> HypercubeSpectrum:
    """All 2^d eigenvalues λ_S = WHT(g)_S / 2^d of the tree's NNGP or NTK on {±1}^d.

    The Gram matrix on all 2^d points has eigenvalues 2^d·λ_S (eigenvectors χ_S).
    """
    values = hypercube_kernel_values(tree, kind, chunk_bytes, device, memory_limit)
    eigenvalues = walsh_hadamard_transform(values, inplace=True).div_(values.numel())
    return HypercubeSpectrum(eigenvalues, tree.input_dimension, kind, tree.name)


def walsh_coefficients(function_values: torch.Tensor) -> torch.Tensor:
    """v_S = E_x[f(x) χ_S(x)] for a function given on all 2^d points (index = bit mask)."""
    return walsh_hadamard_transform(function_values.to(torch.float64)) / function_values.shape[-1]


def cyclic_pooling_factor(
    frequency: torch.Tensor | int, width: int, dimension: int
) -> torch.Tensor:
    """F(f) = 1 + 2 Σ_{k=1}^{ω−1} (1 − k/ω) cos(2π f k/d): Σ_{|Δ|<ω} (1 − |Δ|/ω) e^{2πi fΔ/d}."""
    if width < 1:
        raise ValueError(f"pooling width must be >= 1, got {width}.")
    frequency = torch.as_tensor(frequency, dtype=torch.float64)
    factor = torch.ones_like(frequency)
    for k in range(1, width):
        factor = factor + 2 * (1 - k / width) * torch.cos(2 * torch.pi * frequency * k / dimension)
    return factor


@dataclass(frozen=True)
class CyclicOrbits:
    """For every subset S: its orbit representative min_t (S + t), the orbit size m (the
    smallest period of S under cyclic shifts) and the shift t_S < m taking S to the
    representative."""

    representative: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor

    def to_dict(self) -> dict:
        return {
            "representative": self.representative.tolist(),
            "size": self.size.tolist(),
            "offset": self.offset.tolist(),
        }


def cyclic_orbits(dimension: int, device: torch.device | str | None = None) -> CyclicOrbits:
    """Orbits of all 2^d subsets under the cyclic shift of Z_d, vectorised over masks."""
    _check_dimension(dimension)
    masks = torch.arange(1 << dimension, device=device)
    representative = masks.clone()
    offset = torch.zeros_like(masks)
    size = torch.zeros_like(masks)
    for shift in range(1, dimension + 1):
        shifted = rotate(masks, shift, dimension)
        size = torch.where((size == 0) & (shifted == masks), shift, size)
        smaller = shifted < representative
        representative = torch.where(smaller, shifted, representative)
        offset = torch.where(smaller, shift, offset)
    return CyclicOrbits(representative, size, offset)


@dataclass(frozen=True)
class PooledSpectrum:
    """Eigenvalues of the pooled cyclic kernel, one per subset S: λ_S·F(j·d/m) with j = t_S."""

    eigenvalues: torch.Tensor
    cyclic_frequency: torch.Tensor
    orbit_representative: torch.Tensor
    pooling_width: int
    input_dimension: int

    def to_dict(self) -> dict:
        small = self.input_dimension <= 12
        return {
            "input_dimension": self.input_dimension,
            "pooling_width": self.pooling_width,
            "trace": float(self.eigenvalues.sum()),
            "eigenvalues": self.eigenvalues.tolist() if small else None,
        }


def pooled_cyclic_spectrum(spectrum: HypercubeSpectrum, pooling_width: int) -> PooledSpectrum:
    """Spectrum of Σ_{|Δ|<ω} (1 − |Δ|/ω) g(x ⊙ τ^Δ y) from the unpooled cyclic spectrum λ_S.

    Requires λ_{S+t} = λ_S (a cyclic, shift-invariant architecture, e.g. `cnn_tree(cyclic=True)`
    with stride 1). Each orbit of size m contributes λ_S·F(j·d/m) for j = 0..m−1; the subset S
    carries j = t_S, its shift to the orbit representative.
    """
    dimension = spectrum.input_dimension
    orbits = cyclic_orbits(dimension, spectrum.eigenvalues.device)
    eigenvalues = spectrum.eigenvalues
    representative_values = eigenvalues[orbits.representative]
    scale = eigenvalues.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    mismatch = float((representative_values - eigenvalues).abs().max() / scale)
    if mismatch > SHIFT_INVARIANCE_TOLERANCE:
        raise ValueError(
            f"the spectrum is not invariant under cyclic shifts (relative mismatch {mismatch:.1e});"
            " pooling is block diagonal only for cyclic convolutional trees with stride 1."
        )
    frequency = orbits.offset * (dimension // orbits.size)
    factor = cyclic_pooling_factor(frequency, pooling_width, dimension)
    return PooledSpectrum(
        representative_values * factor,
        frequency,
        orbits.representative,
        pooling_width,
        dimension,
    )
