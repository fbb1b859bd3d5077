"""Anderson mixing for fixed points x = g(x), shared by the saddle-point solver
(docs/math/theory.md §3) and the adaptive lens' kernel iteration (docs/math/adaptive.md §2).

Type-II Anderson mixing (Walker & Ni 2011) with mixing β: from the last m iterates x_k and their
residuals r_k = g(x_k) − x_k, γ minimises |r − ΔR γ| (ΔX, ΔR: differences of consecutive
iterates and residuals) and the next iterate is

    x⁺ = x + β r − (ΔX + β ΔR) γ,

which is x + β r (a damped plain step) while the history holds one point. This module sits in
the bottom layer (it imports nothing else of krenorm).
"""

from __future__ import annotations

import itertools

import torch


class AndersonMixer:
    """The history and the extrapolation above. `propose(x, r)` records (x, r) and returns x⁺;
    `reset()` forgets the history (callers reset when an extrapolation misbehaves)."""

    def __init__(self, memory: int, *, mixing: float = 1.0, rcond: float | None = None) -> None:
        if memory < 1:
            raise ValueError(f"memory must be at least 1, got {memory}.")
        if not 0 < mixing <= 1:
            raise ValueError(f"mixing must be in (0, 1], got {mixing}.")
        self.memory, self.mixing, self.rcond = memory, mixing, rcond
        self._points: list[torch.Tensor] = []
        self._residuals: list[torch.Tensor] = []

    def reset(self) -> None:
        self._points, self._residuals = [], []

    def propose(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x⁺ from the current iterate x and its residual g(x) − x (1-D tensors)."""
        self._points = [*self._points[-self.memory:], x]
        self._residuals = [*self._residuals[-self.memory:], residual]
        beta = self.mixing
        if len(self._points) == 1:
            return x + beta * residual
        delta_x = torch.stack([b - a for a, b in itertools.pairwise(self._points)], 1)
        delta_r = torch.stack([b - a for a, b in itertools.pairwise(self._residuals)], 1)
        gamma = torch.linalg.lstsq(delta_r, residual[:, None], rcond=self.rcond).solution[:, 0]
        return x + beta * residual - (delta_x + beta * delta_r) @ gamma
