"""Activation functions and their Gaussian dual kernels (docs/math/theory.md §2).

κ(a, b, c) = E[σ(u)σ(v)],  (u, v) ~ N(0, [[a, b], [b, c]]),   μ(a) = E[σ(u)],  u ~ N(0, a).

Closed forms for erf, relu, identity and square; any other elementwise torch function through
vectorised Gauss–Hermite quadrature (probabilists' nodes, exact for polynomials of degree < 2n).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ElementwiseFn = Callable[[torch.Tensor], torch.Tensor]

#: Entries of the (E, n, n) quadrature temporaries evaluated at once; bounds memory to ~128 MB.
_QUADRATURE_CHUNK_ELEMENTS = 2**24


def _erf_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    argument = 2 * b / torch.sqrt((1 + 2 * a) * (1 + 2 * c))
    return (2 / math.pi) * torch.asin(argument.clamp(-1.0, 1.0))


def _relu_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or c.requires_grad):
        return _ReluKernelWithPartials.apply(a, b, c)
    return _relu_kernel_value(a, b, c)


class _ReluKernelWithPartials(torch.autograd.Function):
    """κ_relu with its closed-form partials, finite where autograd through acos and √(1 − ρ²)
    gives inf·0 = NaN (ρ = ±1: an input against itself; a zero input):
        ∂κ/∂b = (π − θ)/(2π),   ∂κ/∂a = √(c/a) sin θ/(4π)   (0 where a or c is 0),
    from κ = √(ac) J(ρ)/(2π), J = sin θ + (π − θ) cos θ, J'(ρ) = π − θ."""

    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b, c)
        return _relu_kernel_value(a, b, c)

    @staticmethod
    def backward(ctx, grad):
        a, b, c = ctx.saved_tensors
        norm = torch.sqrt(a * c)
        valid = norm > 0
        rho = torch.where(valid, b / torch.where(valid, norm, torch.ones_like(norm)), 0.0)
        rho = rho.clamp(-1.0, 1.0)
        sine = torch.sqrt(1 - rho**2)
        d_b = torch.where(valid, (math.pi - torch.acos(rho)) / (2 * math.pi), 0.0)

        def side(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            ratio = torch.sqrt(torch.where(valid, other / torch.where(valid, own, 1.0), 0.0))
            return ratio * sine / (4 * math.pi)

        return ((grad * side(a, c)).sum_to_size(a.shape), (grad * d_b).sum_to_size(b.shape),
                (grad * side(c, a)).sum_to_size(c.shape))


def _relu_kernel_value(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    norm = torch.sqrt(a * c)
    # ρ is clipped to [−1, 1]: rounding can push |b| slightly above √(ac) on the diagonal.
    rho = torch.where(norm > 0, b / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
    rho = rho.clamp(-1.0, 1.0)
    return norm / (2 * math.pi) * (torch.sqrt(1 - rho**2) + rho * (math.pi - torch.acos(rho)))


def _identity_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return b.clone()


def _square_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return a * c + 2 * b**2


@dataclass(frozen=True)
class SeparableForm:
    """κ(a, b, c) = s(a) s(c) g(b t(a) t(c)): the kernel depends on the covariance only through a
    normalised correlation. Lets Gram code scale rows once and apply g in place to the matrix of
    dot products, instead of broadcasting three full tensors (the hot loop of every kernel)."""

    input_scale: Callable[[torch.Tensor], torch.Tensor]
    link_: Callable[[torch.Tensor], torch.Tensor]
    output_scale: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: g = link_factor · unscaled_link_ (when given): code that sums many kernels with
    #: coefficients folds the constant into them and saves a pass over every entry. Its second
    #: argument says whether ρ must be clipped to [−1, 1] first.
    unscaled_link_: Callable[[torch.Tensor, bool], torch.Tensor] | None = None
    link_factor: float = 1.0
    #: |ρ| ≤ argument_bound(a_max) exactly, for linked rows whose largest |x|² is a_max (None:
    #: no bound below 1); lets callers skip the clip where rounding cannot reach ±1.
    argument_bound: Callable[[float], float] | None = None


def _erf_input_scale(a: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt(0.5 + a)  # 2/√((1+2a)(1+2c)) = t(a) t(c) with t(a) = (1/2 + a)^(−1/2)


def _erf_unscaled_link_(rho: torch.Tensor, clip: bool = True) -> torch.Tensor:
    return (rho.clamp_(-1.0, 1.0) if clip else rho).asin_()


def _erf_link_(rho: torch.Tensor) -> torch.Tensor:
    return _erf_unscaled_link_(rho).mul_(2 / math.pi)


def _erf_argument_bound(largest_norm: float) -> float:
    # Linked rows have |x t(|x|²)|² = a/(a + 1/2) < 1, so |ρ| ≤ a_max/(a_max + 1/2).
    return largest_norm / (largest_norm + 0.5)


def _relu_input_scale(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, torch.rsqrt(torch.where(a > 0, a, torch.ones_like(a))), 0.0)


def _relu_unscaled_link_(rho: torch.Tensor, clip: bool = True) -> torch.Tensor:
    rho.clamp_(-1.0, 1.0)  # always: ρ = ±1 is reached (an input against itself)
    root = torch.sqrt(1 - rho * rho)
    rho.mul_(math.pi - torch.acos(rho))
    return rho.add_(root)


def _relu_link_(rho: torch.Tensor) -> torch.Tensor:
    return _relu_unscaled_link_(rho).div_(2 * math.pi)


def _identity_link_(rho: torch.Tensor) -> torch.Tensor:
    return rho


def _unit_scale(a: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(a)


def _relu_mean(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(a / (2 * math.pi))


def _square_mean(a: torch.Tensor) -> torch.Tensor:
    return a.clone()


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity σ with its dual kernel κ and mean μ.

    `kernel`/`mean` are closed forms when known, else None (quadrature is used).
    `odd` means σ(−x) = −σ(x), so μ ≡ 0 and the mean term of docs/math/theory.md §3 vanishes.
    """

    name: str
    function: ElementwiseFn
    odd: bool
    closed_kernel: Callable[..., torch.Tensor] | None = None
    closed_mean: Callable[[torch.Tensor], torch.Tensor] | None = None
    separable: SeparableForm | None = None
    quadrature_nodes: int = 64

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def kernel(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """κ(a, b, c) elementwise over broadcastable tensors of variances a, c and covariance b."""
        a, b, c = torch.broadcast_tensors(a, b, c)
        if self.closed_kernel is not None:
            return self.closed_kernel(a, b, c)
        return gauss_hermite_kernel(self.function, a, b, c, self.quadrature_nodes)

    def kernel_(self, a: torch.Tensor, dots: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """κ(a, b, c) with b = `dots` overwritten in place when the kernel is separable (a and c
        broadcast against dots); otherwise the same as `kernel`."""
        form = self.separable
        if form is not None:
            dots.mul_(form.input_scale(a)).mul_(form.input_scale(c))
        return self.kernel_from_linked_(a, dots, c)

    def link_inputs(self, rows: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """Rows x scaled by t(|x|²) when the kernel is separable, so that their dot products are
        already the link's argument b·t(a)·t(c) (the scale costs O(rows), not O(rows²) as on the
        matrix of dot products); unchanged otherwise. `norms` holds |x|² for each row."""
        form = self.separable
        return rows if form is None else rows * form.input_scale(norms)[..., None]

    def kernel_from_linked_(self, a: torch.Tensor, dots: torch.Tensor, c: torch.Tensor
                            ) -> torch.Tensor:
        """κ(a, b, c) from `dots` of rows prepared by `link_inputs` (overwritten in place when
        separable); a and c are the rows' |x|² and broadcast against dots."""
        form = self.separable
        if form is None:
            return self.kernel(a, dots, c)
        form.link_(dots)
        if form.output_scale is not None:
            dots.mul_(form.output_scale(a)).mul_(form.output_scale(c))
        return dots

    def kernel_from_linked_unscaled_(self, a: torch.Tensor, dots: torch.Tensor, c: torch.Tensor,
                                     *, clip: bool = True) -> tuple[torch.Tensor, float]:
        """(κ/f, f): `kernel_from_linked_` without its constant factor f (2/π for erf,
        1/(2π) for relu, else 1), for callers that fold f into the coefficients of a sum of
        kernels (docs/scale.md §1): one elementwise pass fewer. In place like
        `kernel_from_linked_`; κ = f · (the returned tensor) up to rounding. clip=False skips
        clipping ρ to [−1, 1] — only where `link_needs_clip` says rounding cannot reach ±1."""
        form = self.separable
        if form is None or form.unscaled_link_ is None:
            return self.kernel_from_linked_(a, dots, c), 1.0
        form.unscaled_link_(dots, clip)
        if form.output_scale is not None:
            dots.mul_(form.output_scale(a)).mul_(form.output_scale(c))
        return dots, form.link_factor

    def link_needs_clip(self, largest_norm: float, dimension: int) -> bool:
        """Whether a dot product of two linked rows (`link_inputs`) of `dimension` entries, whose
        largest |x|² is `largest_norm`, can come out of [−1, 1] by rounding: the computed dot
        product and norms are within (dimension + 4)·2⁻⁵³ relative of the exact ones, so no
        clip is needed when argument_bound·(1 + 2(dimension + 4)·2⁻⁵³) < 1 (erf with |x|² up
        to ~10¹³). Always True without a bound (relu reaches ρ = ±1 exactly)."""
        form = self.separable
        if form is None or form.argument_bound is None or not math.isfinite(largest_norm):
            return True
        rounding = 2 * (dimension + 4) * 2.0**-53
        return form.argument_bound(largest_norm) * (1 + rounding) >= 1 - rounding

    def mean(self, a: torch.Tensor) -> torch.Tensor:
        """μ(a) = E[σ(u)], u ~ N(0, a); identically zero for odd σ."""
        if self.odd:
            return torch.zeros_like(a)
        if self.closed_mean is not None:
            return self.closed_mean(a)
        return gauss_hermite_mean(self.function, a, self.quadrature_nodes)


def _hermite_rule(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilists' Gauss–Hermite nodes and weights normalised to a standard normal measure."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / math.sqrt(2 * math.pi)
    return (
        torch.as_tensor(nodes, dtype=like.dtype, device=like.device),
        torch.as_tensor(weights, dtype=like.dtype, device=like.device),
    )


def gauss_hermite_kernel(
    function: ElementwiseFn,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    nodes: int = 64,
) -> torch.Tensor:
    """κ(a, b, c) by 2-D Gauss–Hermite quadrature.

    Writes u = √a z1, v = √c (ρ z1 + √(1−ρ²) z2) with ρ = b/√(ac), z1, z2 iid N(0, 1), and sums
    over the tensor-product rule. Chunked so temporaries stay near 2**24 entries.
    """
    z, w = _hermite_rule(nodes, a)
    shape = a.shape
    a_flat, b_flat, c_flat = (t.reshape(-1) for t in (a, b, c))
    out = torch.empty_like(a_flat)
    chunk = max(1, _QUADRATURE_CHUNK_ELEMENTS // (nodes * nodes))
    for start in range(0, a_flat.numel(), chunk):
        sl = slice(start, start + chunk)
        sa, sb, sc = a_flat[sl].clamp_min(0), b_flat[sl], c_flat[sl].clamp_min(0)
        norm = torch.sqrt(sa * sc)
        rho = torch.where(norm > 0, sb / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
        rho = rho.clamp(-1.0, 1.0)
        u = torch.sqrt(sa)[:, None] * z[None, :]  # (E, n)
        v = torch.sqrt(sc)[:, None, None] * (
            rho[:, None, None] * z[None, :, None]
            + torch.sqrt(1 - rho**2)[:, None, None] * z[None, None, :]
        )  # (E, n, n)
        inner = (function(v) * w[None, None, :]).sum(-1)  # (E, n): E_z2[σ(v) | z1]
        out[sl] = (function(u) * inner * w[None, :]).sum(-1)
    return out.reshape(shape)


def gauss_hermite_mean(function: ElementwiseFn, a: torch.Tensor, nodes: int = 64) -> torch.Tensor:
    """μ(a) = E[σ(√a z)] by 1-D Gauss–Hermite quadrature."""
    z, w = _hermite_rule(nodes, a)
    return (function(torch.sqrt(a.clamp_min(0))[..., None] * z) * w).sum(-1)


def _is_numerically_odd(function: ElementwiseFn) -> bool:
    grid = torch.linspace(-5, 5, 201, dtype=torch.float64)
    return bool(torch.allclose(function(-grid), -function(grid), atol=1e-12, rtol=1e-10))


_NAMED: dict[str, Activation] = {
    "erf": Activation(
        "erf", torch.erf, odd=True, closed_kernel=_erf_kernel,
        separable=SeparableForm(_erf_input_scale, _erf_link_,
                                unscaled_link_=_erf_unscaled_link_, link_factor=2 / math.pi,
                                argument_bound=_erf_argument_bound),
    ),
    "relu": Activation(
        "relu", torch.relu, odd=False, closed_kernel=_relu_kernel, closed_mean=_relu_mean,
        separable=SeparableForm(_relu_input_scale, _relu_link_, torch.sqrt,
                                unscaled_link_=_relu_unscaled_link_,
                                link_factor=1 / (2 * math.pi)),
    ),
    "identity": Activation(
        "identity", _identity, odd=True, closed_kernel=_identity_kernel,
        separable=SeparableForm(_unit_scale, _identity_link_),
    ),
    "square": Activation(
        "square", _square, odd=False, closed_kernel=_square_kernel, closed_mean=_square_mean
    ),
    "tanh": Activation("tanh", torch.tanh, odd=True),
    "sigmoid": Activation("sigmoid", torch.sigmoid, odd=False),
    "softplus": Activation("softplus", torch.nn.functional.softplus, odd=False),
    "gelu": Activation("gelu", torch.nn.functional.gelu, odd=False),
    "sin": Activation("sin", torch.sin, odd=True),
}
_ALIASES = {"linear": "identity", "lin": "identity"}

ACTIVATION_NAMES: tuple[str, ...] = tuple(_NAMED)


def get_activation(activation: str | Activation | ElementwiseFn) -> Activation:
    """Resolve a name ('erf', 'relu', 'identity'/'linear', 'square', 'tanh', ...), an
    Activation, or any elementwise torch callable (dual kernel then by quadrature)."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = _ALIASES.get(activation.lower(), activation.lower())
        if key not in _NAMED:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {sorted(_NAMED)} "
                "or pass an elementwise torch callable."
            )
        return _NAMED[key]
    if callable(activation):
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(name, activation, odd=_is_numerically_odd(activation))
    raise ValueError(f"activation must be a name or a callable, got {type(activation).__name__}.")
