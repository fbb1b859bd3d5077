"""One theory case: the effective theory at finite width next to its infinite-width limit on
the same data (docs/math/theory.md §3–6). Used by `krenorm theory`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.experiments.theory_step import fit_at_width
from krenorm.width import INFINITE_WIDTH


@dataclass(frozen=True)
class TheoryCaseResult:
    """Finite- and infinite-width theory on one training/test split."""

    finite: dict
    infinite: dict
    finite_test: dict
    infinite_test: dict
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_theory_case(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, architecture: ArchitectureSpec, width: float,
                    temperature: float, lambda0: float = 1.0, lambda1: float = 1.0,
                    **solver_options: Any) -> TheoryCaseResult:
    """Fit the theory at width N and at infinite width; test losses of both."""
    start = time.perf_counter()
    finite = fit_at_width(x_train, y_train, architecture, width, temperature, lambda0=lambda0,
                          lambda1=lambda1, **solver_options)
    infinite = fit_at_width(x_train, y_train, architecture, INFINITE_WIDTH, temperature,
                            lambda0=lambda0, lambda1=lambda1)
    return TheoryCaseResult(
        finite=finite.summary().to_dict(),
        infinite=infinite.summary().to_dict(),
        finite_test=finite.test_loss(x_test, y_test).to_dict(),
        infinite_test=infinite.test_loss(x_test, y_test).to_dict(),
        seconds=time.perf_counter() - start,
    )
