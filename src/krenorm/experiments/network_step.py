"""The one place the experiments layer samples a finite network's posterior
(docs/math/theory.md §1, §4) with `krenorm.networks.settings.SamplerSettings`."""

from __future__ import annotations

import warnings

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.data import Dataset
from krenorm.networks import PosteriorSummary, sample_posterior
from krenorm.networks.settings import SamplerSettings


def sample_network(architecture: ArchitectureSpec, width: float, dataset: Dataset, *,
                   temperature: float, lambda0: float, lambda1: float,
                   settings: SamplerSettings, device: torch.device | str | None = None
                   ) -> PosteriorSummary:
    """Posterior averages of the network of width N on the dataset's train/test split.

    The sampler's chain-length and R̂ notes are kept in `summary.warnings` (reports put them
    next to the point they qualify) instead of being emitted as RuntimeWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sample_posterior(
            architecture, width, dataset.x_train, dataset.y_train, dataset.x_test,
            dataset.y_test, temperature=temperature, lambda0=lambda0, lambda1=lambda1,
            settings=settings, device=device)
