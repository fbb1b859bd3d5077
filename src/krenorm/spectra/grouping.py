"""Grouping of the 2^d hypercube eigenvalues (docs/math/spectra.md §3).

Two labels of a subset S: its per-patch degree profile k_v = |S ∩ v| with the spanning subtree
T(k) (for tree architectures, whose eigenvalues depend on S only through k), and its
(frequency |S|, spatial extent) — the linear or cyclic diameter of S — for any architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from krenorm.spectra.hypercube import (
    HypercubeSpectrum,
    cyclic_extent,
    linear_extent,
    subset_sizes,
)
from krenorm.spectra.learning_index import spanning_subtree
from krenorm.spectra.trees import ArchitectureTree


@dataclass(frozen=True)
class EigenGroup:
    """Eigenvalues sharing a label: their mean, range and count (the multiplicity)."""

    label: tuple[int, ...]
    mean: float
    minimum: float
    maximum: float
    multiplicity: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProfileGroup:
    """A degree-profile eigenspace: k, T(k) (sorted node ids) and its eigenvalue statistics."""

    degrees: tuple[int, ...]
    subtree: tuple[int, ...]
    group: EigenGroup

    @property
    def frequency(self) -> int:
        return sum(self.degrees)

    def to_dict(self) -> dict:
        return {
            "degrees": list(self.degrees),
            "subtree": list(self.subtree),
            **self.group.to_dict(),
        }


def group_eigenvalues(
    eigenvalues: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(present keys, mean, min, max, count) of the eigenvalues per non-negative integer key.

    Keys here are below 2^d, so one bin per possible key (bincount, scatter min/max) replaces a
    sort of all 2^d keys.
    """
    if keys.numel() and int(keys.min()) < 0:
        raise ValueError("group keys must be non-negative integers.")
    n_bins = int(keys.max()) + 1 if keys.numel() else 0
    counts = torch.bincount(keys, minlength=n_bins)
    sums = torch.bincount(keys, weights=eigenvalues, minlength=n_bins)
    minimum = torch.full_like(sums, float("inf")).scatter_reduce(0, keys, eigenvalues, "amin")
    maximum = torch.full_like(sums, -float("inf")).scatter_reduce(0, keys, eigenvalues, "amax")
    present = torch.nonzero(counts).reshape(-1)
    counts = counts[present]
    return present, sums[present] / counts, minimum[present], maximum[present], counts


def degree_profile_keys(tree: ArchitectureTree, masks: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Mixed-radix key Σ_v k_v Π_{w<v} (|w| + 1) of every mask's degree profile, and the
    (radix, base) of each leaf to decode it."""
    if not tree.is_tree:
        raise ValueError(
            "degree profiles need non-overlapping patches (a tree); group a DAG's spectrum by "
            "frequency and extent instead."
        )
    keys = torch.zeros_like(masks)
    radices = []
    radix = 1
    for leaf in tree.leaves:
        coordinates = tree.nodes[leaf].coordinates
        degree = torch.zeros_like(masks)
        for bit in coordinates:
            degree += (masks >> bit) & 1
        keys += degree * radix
        radices.append((radix, len(coordinates) + 1))
        radix *= len(coordinates) + 1
    return keys, radices


def group_by_degree_profile(
    spectrum: HypercubeSpectrum, tree: ArchitectureTree
) -> tuple[ProfileGroup, ...]:
    """One group per degree profile k (multiplicity Π_v C(|v|, k_v)), with T(k).

    For a tree the eigenvalue depends on S only through k, so minimum = maximum up to rounding.
    """
    if spectrum.input_dimension != tree.input_dimension:
        raise ValueError("the spectrum and the tree have different input dimensions.")
    keys, radices = degree_profile_keys(tree, spectrum.masks)
    unique, mean, minimum, maximum, counts = group_eigenvalues(spectrum.eigenvalues, keys)
    groups = []
    for index, key in enumerate(unique.tolist()):
        degrees = tuple((key // radix) % base for radix, base in radices)
        group = EigenGroup(
            degrees,
            float(mean[index]),
            float(minimum[index]),
            float(maximum[index]),
            int(counts[index]),
        )
        subtree = tuple(sorted(spanning_subtree(tree, degrees)))
        groups.append(ProfileGroup(degrees, subtree, group))
    return tuple(groups)


def group_by_frequency_and_extent(
    spectrum: HypercubeSpectrum, cyclic: bool = False
) -> tuple[EigenGroup, ...]:
    """Groups labelled (|S|, extent(S)): linear diameter max − min + 1, or the cyclic one γ(S)."""
    dimension = spectrum.input_dimension
    masks = spectrum.masks
    frequency = subset_sizes(dimension, masks.device)
    extent = cyclic_extent(masks, dimension) if cyclic else linear_extent(masks)
    keys = frequency * (dimension + 1) + extent
    unique, mean, minimum, maximum, counts = group_eigenvalues(spectrum.eigenvalues, keys)
    return tuple(
        EigenGroup(
            (key // (dimension + 1), key % (dimension + 1)),
            float(mean[i]),
            float(minimum[i]),
            float(maximum[i]),
            int(counts[i]),
        )
        for i, key in enumerate(unique.tolist())
    )
