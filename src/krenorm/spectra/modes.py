"""Spectrum-only modes of `krenorm spectra`: readout pooling of cyclic stride-1 CNNs on {±1}^d and
products of spheres (docs/spectra.md "Pooling and sphere mode"; docs/math/spectra.md §3, §6).

Both print eigenvalues only (no learning curves): the pooled spectrum is indexed by subset and
cyclic frequency, the sphere spectrum by degree profile, neither by the (frequency, extent) map
of the hypercube comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from krenorm.spectra.comparison import architecture_from_spec, standard_architectures
from krenorm.spectra.dual import KernelKind
from krenorm.spectra.hypercube import hypercube_spectrum, pooled_cyclic_spectrum, popcount
from krenorm.spectra.sphere import sphere_product_spectrum
from krenorm.spectra.trees import ArchitectureTree

__all__ = ["check_poolable_spec", "pooled_spectra", "sphere_spectra"]


def check_poolable_spec(spec: str) -> None:
    """Refuse a spec whose readout pooling the theory does not diagonalise: pooling is block
    diagonal over cyclic shift orbits only for cyclic CNNs with stride 1 in every layer."""
    parts = spec.strip().split(":")
    family = parts[0].lower()
    cyclic = len(parts) == 3 and parts[2].lower() == "cyclic"
    _, _, strides = parts[1].partition("/") if len(parts) > 1 else ("", "", "")
    stride_one = bool(strides) and all(s.strip() == "1" for s in strides.split(","))
    if family != "cnn" or not cyclic or not stride_one:
        raise ValueError(f"--pooling needs cyclic stride-1 CNNs (e.g. cnn:3/1:cyclic or "
                         f"cnn:3,3/1,1:cyclic), got {spec!r}: only there is readout pooling "
                         "diagonal over cyclic shift orbits (docs/math/spectra.md §3).")


def pooled_spectra(specs: Sequence[str], dimension: int, pooling_width: int,
                   kind: KernelKind = "nngp", activation: str = "relu") -> dict[str, dict]:
    """For each spec: the unpooled and pooled spectra on {±1}^d (summaries, the largest pooled
    eigenvalue per cyclic frequency f = 0..d−1, and the five largest with |S| and f)."""
    if not specs:
        raise ValueError("--pooling needs --architecture with cyclic stride-1 CNNs, e.g. "
                         "--architecture cnn:3/1:cyclic (the default architectures do not pool).")
    if not 1 <= pooling_width <= dimension:
        raise ValueError(f"--pooling must be between 1 and d = {dimension}, got {pooling_width}.")
    out = {}
    for spec in specs:
        check_poolable_spec(spec)
        tree = architecture_from_spec(spec, dimension, activation)
        spectrum = hypercube_spectrum(tree, kind)
        pooled = pooled_cyclic_spectrum(spectrum, pooling_width)
        sizes = popcount(spectrum.masks, dimension)
        per_frequency = [float(pooled.eigenvalues[pooled.cyclic_frequency == f].max())
                         for f in range(dimension)]
        top = torch.argsort(pooled.eigenvalues, descending=True)[:5].tolist()
        out[spec] = {
            **pooled.to_dict(),
            "unpooled_trace": float(spectrum.eigenvalues.sum()),
            "unpooled_largest": float(spectrum.eigenvalues.max()),
            "largest": float(pooled.eigenvalues.max()),
            "largest_per_cyclic_frequency": per_frequency,
            "top": [{"subset_size": int(sizes[m]), "cyclic_frequency":
                     int(pooled.cyclic_frequency[m]), "eigenvalue": float(pooled.eigenvalues[m])}
                    for m in top],
        }
    return out


def sphere_spectra(specs: Sequence[str], dimension: int, max_degree: int, nodes: int,
                   kind: KernelKind = "nngp", activation: str = "relu") -> dict[str, dict]:
    """For each spec (default: the three standard architectures) the eigenvalues on the product
    of spheres, one sphere per first-layer patch (patches must be disjoint), with the five
    largest degree profiles."""
    if max_degree < 0:
        raise ValueError(f"--max-degree must be >= 0, got {max_degree}.")
    if nodes < 2:
        raise ValueError(f"--quadrature-nodes must be >= 2, got {nodes}.")
    trees: dict[str, ArchitectureTree] = (
        {spec: architecture_from_spec(spec, dimension, activation) for spec in specs} if specs
        else standard_architectures(dimension, activation))
    out = {}
    for name, tree in trees.items():
        try:
            spectrum = sphere_product_spectrum(tree, max_degree, kind, nodes)
        except ValueError as error:
            raise ValueError(f"architecture {name!r} on spheres: {error}") from error
        order = sorted(range(len(spectrum.eigenvalues)), key=lambda i: -spectrum.eigenvalues[i])
        out[name] = {
            **spectrum.to_dict(),
            "quadrature_nodes": nodes,
            "top": [{"degrees": list(spectrum.degrees[i]), "eigenvalue": spectrum.eigenvalues[i],
                     "multiplicity": spectrum.multiplicities[i]} for i in order[:5]],
        }
    return out
