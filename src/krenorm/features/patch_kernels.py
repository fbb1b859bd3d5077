"""Elementwise patch kernels κ(a, b, c) and their partial derivatives (docs/math/features.md
"Kernels with a learned patch metric").

Every kernel compares two patches u, v through a = uᵀMu, b = uᵀMv, c = vᵀMv:
    laplace   exp(−√s / L),          s = a − 2b + c = ‖u − v‖²_M
    gaussian  exp(−s / (2L²))
    nngp      κ(a', b', c') = √(a'c')/(2π) (√(1−ρ²) + ρ(π − θ)),   ρ = b'/√(a'c') = cos θ
    ntk       κ(a', b', c') + b' κ̇(ρ),  κ̇ = (π − θ)/(2π)   (one-hidden-layer bias-free ReLU NTK)
with (a', b', c') = (a, b, c)/d for the ReLU kernels (d the patch dimension; this matches
krenorm.kernels' C = r·r'/(λ0 M) at λ0 = 1). Closed-form partials used for predictor gradients:
    laplace   ∂a = ∂s κ, ∂b = −2 ∂s κ,  ∂s κ = −κ/(2L√s)
    gaussian  ∂s κ = −κ/(2L²)
    nngp      ∂a = √(c/a) √(1−ρ²)/(4π),  ∂b = (π − θ)/(2π)
    ntk       ∂a = √(c/a) [√(1−ρ²) − ρ²/√(1−ρ²)]/(4π),  ∂b = 2κ̇ + ρ/(2π√(1−ρ²))
Where a gradient does not exist — s = 0 for Laplace (the self term), ρ = ±1 for the NTK, a zero
patch for the ReLU kernels — the singular part is set to zero, the convention docs/math/features.md
states for the Laplace self term.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

KernelName = Literal["laplace", "gaussian", "nngp", "ntk"]
KERNEL_NAMES: tuple[str, ...] = ("laplace", "gaussian", "nngp", "ntk")
#: Kernels whose scale parameter L is meaningful (the ReLU kernels are homogeneous).
BANDWIDTH_KERNELS: tuple[str, ...] = ("laplace", "gaussian")


def check_kernel_name(name: str) -> str:
    if name not in KERNEL_NAMES:
        raise ValueError(f"unknown patch kernel {name!r}; choose one of {KERNEL_NAMES}.")
    return name


def _singular_threshold(dtype: torch.dtype) -> float:
    """Relative size below which s (Laplace) or 1 − ρ² (NTK) is treated as exactly zero:
    rounding in a − 2b + c is a few machine epsilons of a + c."""
    return 1e3 * torch.finfo(dtype).eps


def _relu_geometry(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(√(ac), ρ clipped to [−1, 1], mask of pairs with both patches non-zero)."""
    norm = torch.sqrt(a * c)
    valid = norm > 0
    rho = torch.where(valid, b / torch.where(valid, norm, torch.ones_like(norm)), 0.0).clamp(-1, 1)
    return norm, rho, valid


def kernel_value(
    name: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, bandwidth: float, dimension: int
) -> torch.Tensor:
    """κ(a, b, c) elementwise over broadcastable tensors (no derivatives; for Gram matrices).

    a and c are the small broadcast factors (one per patch), b the full pair tensor: the work on
    b is done in place, one pass per operation, since Grams are dominated by these passes. For
    a zero patch (a or c = 0) the ReLU kernels are 0 (ρ is taken as 0 there).
    """
    if name in BANDWIDTH_KERNELS:
        squared = (b * -2).add_(a).add_(c).clamp_(min=0)
        if name == "laplace":
            return squared.sqrt_().mul_(-1 / bandwidth).exp_()
        return squared.mul_(-1 / (2 * bandwidth**2)).exp_()
    # κ is homogeneous of degree 1 in (a, b, c): evaluate on (a, b, c) and divide by d once.
    root_a, root_c = torch.sqrt(a), torch.sqrt(c)
    inverse_a = torch.where(root_a > 0, 1 / torch.where(root_a > 0, root_a, 1.0), 0.0)
    inverse_c = torch.where(root_c > 0, 1 / torch.where(root_c > 0, root_c, 1.0), 0.0)
    rho = (b * inverse_a).mul_(inverse_c).clamp_(-1, 1)
    angle_term = torch.acos(rho).neg_().add_(math.pi)  # π − θ
    sine = (rho * rho).neg_().add_(1).clamp_(min=0).sqrt_()
    value = rho.mul_(angle_term).add_(sine).mul_(root_a / (2 * math.pi * dimension)).mul_(root_c)
    if name == "ntk":
        value.add_(angle_term.mul_(b).mul_(1 / (2 * math.pi * dimension)))
    return value


def kernel_partials(
    name: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, bandwidth: float, dimension: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂κ/∂a, ∂κ/∂b) elementwise, with the singular parts set to zero (module docstring)."""
    threshold = _singular_threshold(a.dtype)
    if name in BANDWIDTH_KERNELS:
        squared = (a - 2 * b + c).clamp_min(0)
        value = kernel_value(name, a, b, c, bandwidth, dimension)
        if name == "laplace":
            regular = squared > threshold * (a + c)
            distance = torch.sqrt(torch.where(regular, squared, torch.ones_like(squared)))
            d_squared = torch.where(regular, -value / (2 * bandwidth * distance), 0.0)
        else:
            d_squared = -value / (2 * bandwidth**2)
        return d_squared, -2 * d_squared
    a, b, c = a / dimension, b / dimension, c / dimension
    _, rho, valid = _relu_geometry(a, b, c)
    sine_squared = 1 - rho**2
    sine = torch.sqrt(sine_squared)
    ratio = torch.sqrt(torch.where(valid, c / torch.where(valid, a, torch.ones_like(a)), 0.0))
    step = (math.pi - torch.acos(rho)) / (2 * math.pi)
    d_a = ratio * sine / (4 * math.pi)
    d_b = torch.where(valid, step, 0.0)
    if name == "ntk":
        regular = valid & (sine_squared > threshold)
        safe_sine = torch.where(regular, sine, torch.ones_like(sine))
        d_a = d_a - torch.where(regular, ratio * rho**2 / (4 * math.pi * safe_sine), 0.0)
        d_b = d_b + step + torch.where(regular, rho / (2 * math.pi * safe_sine), 0.0)
        d_b = torch.where(valid, d_b, 0.0)
    return d_a / dimension, d_b / dimension
