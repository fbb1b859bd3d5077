"""Convolutional Neural Feature Ansatz: agreement of WᵀW with G^α per layer (docs/math/features.md
§3).

Measures, always named in output:
    pearson(A, B) = ⟨A − ā, B − b̄⟩ / (‖A − ā‖ ‖B − b̄‖),  ā the scalar mean of A's entries;
    cosine(A, B)  = ⟨A, B⟩ / (‖A‖ ‖B‖)  (Frobenius inner products of the flattened matrices).
G^α is taken through eigh with tiny negative eigenvalues (rounding) clipped to zero (metric.py).
Each layer is reported for the trained model and two baselines — the model at initialization,
and the initial filters against the trained AGOP — with percentile-bootstrap intervals over
images and the convergence of the measures with the number of images used for G. Grouped convs
are compared on their stacked per-group matrices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from krenorm.features.agop import OutputFunction, PatchAGOP, patch_agop
from krenorm.features.metric import psd_eigh


def pearson_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the flattened entries (scalar mean subtracted)."""
    a, b = _flat_pair(a, b)
    return _cosine(a - a.mean(), b - b.mean())


def cosine_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity ⟨A, B⟩/(‖A‖‖B‖) of the flattened matrices (no centring)."""
    return _cosine(*_flat_pair(a, b))


def _flat_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(
            f"matrices must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    return a.reshape(-1).to(torch.float64), b.reshape(-1).to(torch.float64)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = a.norm() * b.norm()
    if norm == 0:
        raise ValueError("agreement is undefined for a zero matrix (constant entries for Pearson).")
    return float(a @ b / norm)


@dataclass(frozen=True)
class Agreement:
    """Pearson and cosine agreement with percentile-bootstrap intervals over images."""

    pearson: float
    cosine: float
    pearson_interval: tuple[float, float]
    cosine_interval: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PointAgreement:
    """Pearson and cosine agreement of two fixed matrices (no images, so no interval)."""

    pearson: float
    cosine: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ConvergencePoint:
    """Agreement of WᵀW with G^α when G uses the first `n_images` images."""

    n_images: int
    pearson: float
    cosine: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerCNFA:
    """CNFA of one layer at one α.

    trained: W_Tᵀ W_T against G_T^α (trained filters, trained network's AGOP).
    initialization: W_0ᵀ W_0 against G_0^α, the same measure for the network at initialization.
    initial_filters: W_0ᵀ W_0 against G_T^α — do the random initial filters explain the trained
    AGOP as well as the trained ones? (the informative baseline, docs/features.md). At
    initialization Δ is close to isotropic, so G_0 ≈ c W_0ᵀW_0 and the
    `initialization` agreement is high by construction, especially at α = 1.
    isotropic_initialization: W_0ᵀ W_0 against (W_0ᵀ W_0)^α, no gradients at all — the value
    `initialization` takes when Δ_0 is exactly isotropic (G_0 = c W_0ᵀW_0); 1 at α = 1. How
    close `initialization` is to it measures how little that baseline says about gradients.
    convergence: `trained` measures with G_T from the first n images.
    """

    layer: str
    alpha: float
    trained: Agreement
    initialization: Agreement
    initial_filters: Agreement
    isotropic_initialization: PointAgreement
    convergence: tuple[ConvergencePoint, ...]

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "alpha": self.alpha,
            "trained": self.trained.to_dict(),
            "initialization": self.initialization.to_dict(),
            "initial_filters": self.initial_filters.to_dict(),
            "isotropic_initialization": self.isotropic_initialization.to_dict(),
            "convergence": [point.to_dict() for point in self.convergence],
        }


@dataclass(frozen=True)
class CNFAReport:
    """CNFA per layer and α (docs/math/features.md §3)."""

    layers: tuple[LayerCNFA, ...]
    n_images: int
    n_bootstrap: int
    confidence: float
    estimator: str

    def to_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "n_images": self.n_images,
            "n_bootstrap": self.n_bootstrap,
            "confidence": self.confidence,
            "estimator": self.estimator,
        }

    def table(self) -> list[dict]:
        """One row per (layer, α): Pearson and cosine, trained and both baselines."""
        rows = []
        for entry in self.layers:
            row = {"layer": entry.layer, "alpha": entry.alpha}
            for name in ("trained", "initialization", "initial_filters"):
                agreement = getattr(entry, name)
                row[f"pearson_{name}"] = agreement.pearson
                row[f"pearson_{name}_interval"] = agreement.pearson_interval
                row[f"cosine_{name}"] = agreement.cosine
            rows.append(row)
        return rows


def agop_from_output_covariance(
    filters: torch.Tensor, output_covariance: torch.Tensor
) -> torch.Tensor:
    """G_g = W_gᵀ Δ_g W_g for stacks filters (groups, k, d) and Δ (..., groups, k, k)."""
    return filters.transpose(-1, -2) @ output_covariance @ filters


def _powers(agops: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
    """{α: G^α} for a stack of PSD matrices, from one eigen-decomposition of the stack."""
    if any(alpha <= 0 for alpha in alphas):
        raise ValueError(f"alphas must be positive, got {list(alphas)}.")
    eigenvalues, eigenvectors = psd_eigh(agops)
    transposed = eigenvectors.transpose(-1, -2)
    return {
        alpha: (eigenvectors * (eigenvalues**alpha)[..., None, :]) @ transposed for alpha in alphas
    }


def _per_image(result: PatchAGOP) -> torch.Tensor:
    """The per-image output covariances (kept by patch_agop(..., keep_per_image=True))."""
    if result.per_image_output_covariance is None:
        raise ValueError("the patch-AGOP was computed without keep_per_image=True.")
    return result.per_image_output_covariance


def _resampled_agops(result: PatchAGOP, resamples: torch.Tensor) -> torch.Tensor:
    """(1 + B, groups, d, d): G from all images, then from each multinomial resample of images."""
    per_image = _per_image(result)
    weights = torch.cat([torch.ones(1, per_image.shape[0]), resamples.to(torch.float64)])
    deltas = torch.einsum("bn,ngkj->bgkj", weights.to(per_image), per_image) / per_image.shape[0]
    return agop_from_output_covariance(result.filters, deltas)


def _agreement(second_moment: torch.Tensor, powered: torch.Tensor, confidence: float) -> Agreement:
    """Point values from powered[0] (all images), percentile intervals from powered[1:]."""
    values = torch.tensor(
        [
            (pearson_agreement(second_moment, g), cosine_agreement(second_moment, g))
            for g in powered
        ],
        dtype=torch.float64,
    )
    tail = (1 - confidence) / 2
    low = torch.quantile(values[1:], tail, dim=0)
    high = torch.quantile(values[1:], 1 - tail, dim=0)
    return Agreement(
        pearson=float(values[0, 0]),
        cosine=float(values[0, 1]),
        pearson_interval=(float(low[0]), float(high[0])),
        cosine_interval=(float(low[1]), float(high[1])),
    )


def _convergence(
    result: PatchAGOP, alphas: Sequence[float], sizes: Sequence[int]
) -> dict[float, tuple[ConvergencePoint, ...]]:
    second_moment = result.filter_second_moment()
    cumulative = _per_image(result).cumsum(0)
    deltas = torch.stack([cumulative[size - 1] / size for size in sizes])
    powered = _powers(agop_from_output_covariance(result.filters, deltas), alphas)
    return {
        alpha: tuple(
            ConvergencePoint(
                n_images=size,
                pearson=pearson_agreement(second_moment, matrix),
                cosine=cosine_agreement(second_moment, matrix),
            )
            for size, matrix in zip(sizes, powered[alpha], strict=True)
        )
        for alpha in alphas
    }


def default_convergence_sizes(n_images: int) -> list[int]:
    """Powers of two up to n_images, and n_images itself."""
    sizes, size = [], 1
    while size < n_images:
        sizes.append(size)
        size *= 2
    return [*sizes, n_images]


def cnfa_report(
    trained_model: nn.Module,
    initial_model: nn.Module,
    images: torch.Tensor | Iterable,
    layers: str | Sequence[str] | None = None,
    alphas: Sequence[float] = (0.5, 1.0),
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    convergence_sizes: Sequence[int] | None = None,
    estimator: str = "exact",
    n_probes: int = 16,
    seed: int = 0,
    output_fn: OutputFunction | None = None,
    batch_size: int = 64,
) -> CNFAReport:
    """CNFA report of `trained_model` against `initial_model` (same architecture, its weights at
    initialization) on the same images (docs/math/features.md §3).

    For each conv layer and α: Pearson and cosine between WᵀW and G^α for the trained model, the
    model at initialization, and the initial filters against the trained AGOP (LayerCNFA);
    percentile-bootstrap intervals from `n_bootstrap` resamples of the images (`confidence`
    level; the same resamples for every layer and both models); and the trained measures with G
    from the first n images for each n in `convergence_sizes` (default: powers of two).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}.")
    alphas = tuple(float(alpha) for alpha in alphas)
    options: dict[str, Any] = dict(
        layers=layers,
        estimator=estimator,
        n_probes=n_probes,
        seed=seed,
        output_fn=output_fn,
        batch_size=batch_size,
        keep_per_image=True,
    )
    if not isinstance(images, torch.Tensor):
        images = torch.cat(
            [batch[0] if isinstance(batch, tuple | list) else batch for batch in images]
        )
    trained = patch_agop(trained_model, images, **options)
    initial = patch_agop(initial_model, images, **options)
    n_images = images.shape[0]
    sizes = (
        default_convergence_sizes(n_images)
        if convergence_sizes is None
        else list(convergence_sizes)
    )
    if any(size < 1 or size > n_images for size in sizes):
        raise ValueError(f"convergence_sizes must lie in [1, {n_images}], got {sizes}.")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(n_images, (n_bootstrap, n_images), generator=generator)
    resamples = torch.stack([torch.bincount(row, minlength=n_images) for row in draws])
    entries = []
    for name, result in trained.items():
        trained_powers = _powers(_resampled_agops(result, resamples), alphas)
        initial_powers = _powers(_resampled_agops(initial[name], resamples), alphas)
        trained_moment = result.filter_second_moment()
        initial_moment = initial[name].filter_second_moment()
        curves = _convergence(result, alphas, sizes)
        isotropic = _powers(initial_moment, alphas)
        for alpha in alphas:
            entries.append(
                LayerCNFA(
                    layer=name,
                    alpha=alpha,
                    trained=_agreement(trained_moment, trained_powers[alpha], confidence),
                    initialization=_agreement(initial_moment, initial_powers[alpha], confidence),
                    initial_filters=_agreement(initial_moment, trained_powers[alpha], confidence),
                    isotropic_initialization=PointAgreement(
                        pearson=pearson_agreement(initial_moment, isotropic[alpha]),
                        cosine=cosine_agreement(initial_moment, isotropic[alpha]),
                    ),
                    convergence=curves[alpha],
                )
            )
    return CNFAReport(
        layers=tuple(entries),
        n_images=n_images,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        estimator=estimator,
    )
