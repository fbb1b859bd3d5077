"""Predicted vs measured learning curves on the hypercube (docs/math/spectra.md "Learning curves
from a spectrum"): eigenlearning on the exact Walsh spectrum against direct kernel ridge regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from krenorm.spectra.dual import KernelKind
from krenorm.spectra.eigenlearning import EigenlearningPrediction, eigenlearning_curve
from krenorm.spectra.hypercube import (
    hypercube_kernel_values,
    popcount,
    walsh_coefficients,
    walsh_hadamard_transform,
)
from krenorm.spectra.kernel_ridge import KernelRidgeResult, hypercube_kernel_ridge
from krenorm.spectra.trees import ArchitectureTree


def walsh_target(
    dimension: int, subsets: Sequence[Sequence[int]], coefficients: Sequence[float]
) -> torch.Tensor:
    """f*(z) = Σ_j c_j χ_{S_j}(z) on all 2^d points (index = bit mask of the −1 entries)."""
    if len(subsets) != len(coefficients):
        raise ValueError("give one coefficient per subset.")
    masks = torch.arange(1 << dimension)
    values = torch.zeros(1 << dimension, dtype=torch.float64)
    for subset, coefficient in zip(subsets, coefficients, strict=True):
        if any(not 0 <= i < dimension for i in subset):
            raise ValueError(f"subset {tuple(subset)} has coordinates outside [0, {dimension}).")
        subset_mask = sum(1 << i for i in set(subset))
        parity = popcount(masks & subset_mask, dimension) & 1
        values += coefficient * (1.0 - 2.0 * parity.to(torch.float64))
    return values


@dataclass(frozen=True)
class LearningCurveComparison:
    """Eigenlearning predictions (any grid of sample sizes) and KRR results (one row of seeds per
    experimental sample size)."""

    architecture: str
    target: str
    theory: tuple[EigenlearningPrediction, ...]
    experiment_sample_sizes: tuple[int, ...]
    experiments: tuple[tuple[KernelRidgeResult, ...], ...]

    @property
    def theory_sample_sizes(self) -> tuple[int, ...]:
        return tuple(p.sample_size for p in self.theory)

    def theory_test_mse(self, sample_size: int) -> float:
        """Predicted test MSE at a sample size of the theory grid."""
        for prediction in self.theory:
            if prediction.sample_size == sample_size:
                return prediction.test_mse
        raise ValueError(f"no theory prediction at n = {sample_size}; add it to the grid.")

    def measured_mean(self) -> tuple[float, ...]:
        return tuple(sum(r.test_mse for r in row) / len(row) for row in self.experiments)

    def measured_standard_error(self) -> tuple[float, ...]:
        """Standard error of the seed mean (sample standard deviation / √seeds; 0 for 1 seed)."""
        errors = []
        for row in self.experiments:
            values = torch.tensor([r.test_mse for r in row], dtype=torch.float64)
            spread = float(values.std()) if len(row) > 1 else 0.0
            errors.append(spread / math.sqrt(len(row)))
        return tuple(errors)

    def finite_size_deviation(self) -> tuple[tuple[float, float], ...]:
        """Per experimental sample size: (relative difference (KRR − theory)/theory, z =
        (KRR − theory)/s.e.). Eigenlearning is the large-n (deterministic-equivalent) limit;
        this is its finite-size error measured by KRR (docs/math/spectra.md §5). z is NaN with
        one seed (no standard error)."""
        rows = []
        for n, mean, error in zip(self.experiment_sample_sizes, self.measured_mean(),
                                  self.measured_standard_error(), strict=True):  # fmt: skip
            theory = self.theory_test_mse(n)
            relative = (mean - theory) / theory if theory > 0 else math.nan
            rows.append((relative, (mean - theory) / error if error > 0 else math.nan))
        return tuple(rows)

    def to_dict(self) -> dict:
        return {
            "finite_size_deviation": [
                {"relative": relative, "z": z} for relative, z in self.finite_size_deviation()
            ],
            "architecture": self.architecture,
            "target": self.target,
            "theory": [p.to_dict() for p in self.theory],
            "experiment_sample_sizes": list(self.experiment_sample_sizes),
            "experiments": [[r.to_dict() for r in row] for row in self.experiments],
            "measured_mean": list(self.measured_mean()),
            "measured_standard_error": list(self.measured_standard_error()),
        }


def compare_learning_curve(
    tree: ArchitectureTree,
    target_values: torch.Tensor,
    sample_sizes: Sequence[int],
    seeds: Sequence[int],
    ridge: float,
    noise_variance: float = 0.0,
    kind: KernelKind = "nngp",
    target_name: str = "target",
    theory_sample_sizes: Sequence[int] | None = None,
) -> LearningCurveComparison:
    """Eigenlearning on the full 2^d Walsh spectrum of the tree kernel (at `theory_sample_sizes`,
    default `sample_sizes`) and KRR at every (sample size, seed); no seeds: theory only.

    target_values: f* on all 2^d points (index = bit mask).
    """
    kernel_values = hypercube_kernel_values(tree, kind)
    if target_values.shape != kernel_values.shape:
        raise ValueError(
            f"target_values must hold f* on all 2^{tree.input_dimension} points, got shape "
            f"{tuple(target_values.shape)}."
        )
    eigenvalues = walsh_hadamard_transform(kernel_values) / kernel_values.numel()
    target_power = walsh_coefficients(target_values) ** 2
    grid = sample_sizes if theory_sample_sizes is None else theory_sample_sizes
    theory = eigenlearning_curve(eigenvalues, target_power, grid, ridge, noise_variance)
    experiments = (
        tuple(
            tuple(
                hypercube_kernel_ridge(kernel_values, target_values, n, ridge, noise_variance, seed)
                for seed in seeds
            )
            for n in sample_sizes
        )
        if seeds
        else ()
    )
    sizes = tuple(int(n) for n in sample_sizes) if seeds else ()
    return LearningCurveComparison(tree.name, target_name, theory, sizes, experiments)
