"""The one place the experiments layer fits the effective theory (docs/math/theory.md §3–6):
at a width N, where N = math.inf is the infinite-width (NNGP) limit, and the infinite-width
Gaussian process with readout priors retuned by a finite-width Q̄."""

from __future__ import annotations

from typing import Any

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.theory import fit_theory
from krenorm.theory.fit import FittedTheory
from krenorm.width import is_infinite


def fit_at_width(x_train: torch.Tensor, y_train: torch.Tensor, architecture: ArchitectureSpec,
                 width: float, temperature: float, *, lambda0: float, lambda1: float,
                 **options: Any) -> FittedTheory:
    """The theory at width N (math.inf: the NNGP limit, Q̄ = 1). options: solver options,
    device, fixed_q_bar (see `krenorm.theory.fit.TheoryConfig`).

    Do not read width or α from the fit's summary at N = ∞ (see the comment below); use
    `krenorm.width.alpha`."""
    if is_infinite(width):
        # Transitional: this version of krenorm.theory takes the infinite-width limit as a flag
        # with some finite width it does not use (the test loss is independent of it), not as
        # width = math.inf. When it does, this branch becomes the plain call below.
        return fit_theory(x_train, y_train, architecture, 1.0, temperature, lambda0=lambda0,
                          lambda1=lambda1, infinite_width=True, **options)
    return fit_theory(x_train, y_train, architecture, width, temperature, lambda0=lambda0,
                      lambda1=lambda1, **options)


def retuned_q_bar(architecture: ArchitectureSpec, q_bar: torch.Tensor) -> tuple[float, ...]:
    """The part of Q̄ an infinite-width network can absorb into its readout priors, flattened
    for `fixed_q_bar`: all of Q̄ for FC and LCN (λ1/Q̄, λ1/q̄_i), the diagonal (per-position
    priors) for a CNN without pooling (docs/math/theory.md §3)."""
    if architecture.kind == "cnn":
        q_bar = torch.diag(torch.diagonal(q_bar))
    return tuple(q_bar.reshape(-1).tolist())
