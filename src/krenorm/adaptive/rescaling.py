"""Scalar kernel rescaling of linear networks, one and many layers (docs/math/adaptive.md §4;
back-propagating kernel renormalization).

The output prior of a deep linear network is a GP with kernel U K̂/χ, U = Π_l Q_l, with independent
Q_l ~ Gamma(N_l/2, scale 2/N_l). Stationarity of the log posterior in ln Q_l gives

    N_l (Q_l − 1) = G(U),   G(U) = U [χ tᵀK̂t − tr(A⁻¹K̂)],   A = U K̂ + κ,  t = A⁻¹ y,

so every Q_l = 1 + G(U)/N_l and U solves one 1-D equation in ln U:

    F(ln U) = ln U − Σ_l ln(1 + G(U)/N_l) = 0.

With one layer this is the standard-scaling correction 1 − 1/Q = (χ/N) tᵀK̂t − (1/N) tr(A⁻¹K̂),
i.e. the scalar-Q̄ equation of docs/math/theory.md §3 at χ = 1. Dropping the trace (fluctuation)
term gives the tree level 1 − 1/Q = (χ/N) tᵀK̂t of the adaptive theory for linear φ.
K̂ may be any kernel (NNGP of a nonlinear φ included): the equation is then the Gaussian-
equivalence rescaling theory of docs/math/theory.md §3 carried to general χ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq

from krenorm._validation import check_finite, check_positive

#: Grid in ln U scanned for sign changes of F before Brent refinement.
_SCAN_LOG_SCALES = np.linspace(-40.0, 40.0, 16001)


@dataclass(frozen=True)
class KernelSpectrum:
    """K̂ = Σ_j λ_j e_j e_jᵀ with the labels in its eigenbasis ỹ_j = e_j·y (float64 numpy)."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    projected_labels: np.ndarray

    @classmethod
    def from_kernel(cls, kernel: torch.Tensor, y: torch.Tensor) -> KernelSpectrum:
        """Eigendecompose a symmetric PSD P×P kernel; eigenvalues below 0 from rounding → 0."""
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"kernel must be square (P, P), got {tuple(kernel.shape)}.")
        if kernel.shape[0] != y.shape[0]:
            raise ValueError(
                f"kernel is {kernel.shape[0]}×{kernel.shape[0]} but y has {y.shape[0]}."
            )
        check_finite("kernel", kernel)
        check_finite("y", y)
        values, vectors = np.linalg.eigh(0.5 * (kernel + kernel.T).numpy())
        scale = max(float(np.abs(values).max()), 1e-300)
        if values.min() < -1e-8 * scale:
            raise ValueError(
                f"kernel has a negative eigenvalue {values.min():.3g}; pass a PSD kernel."
            )
        values = np.clip(values, 0.0, None)
        return cls(values, vectors, vectors.T @ y.numpy())

    def data_term(self, scale: np.ndarray | float, chi: float, kappa: float) -> np.ndarray:
        """χ tᵀK̂t with t = (U K̂ + κ)⁻¹ y, vectorised over U."""
        scale = np.asarray(scale, dtype=np.float64)[..., None]
        denominator = scale * self.eigenvalues + kappa
        return chi * np.sum(self.eigenvalues * self.projected_labels**2 / denominator**2, axis=-1)

    def trace_term(self, scale: np.ndarray | float, kappa: float) -> np.ndarray:
        """tr[(U K̂ + κ)⁻¹ K̂], vectorised over U."""
        scale = np.asarray(scale, dtype=np.float64)[..., None]
        return np.sum(self.eigenvalues / (scale * self.eigenvalues + kappa), axis=-1)

    def log_likelihood(self, scale: np.ndarray | float, chi: float, kappa: float) -> np.ndarray:
        """ln N(y; 0, (U K̂ + κ)/χ) up to a U-independent constant:
        −½ Σ ln(Uλ + κ) − (χ/2) Σ ỹ²/(Uλ + κ)."""
        scale = np.asarray(scale, dtype=np.float64)[..., None]
        denominator = scale * self.eigenvalues + kappa
        return -0.5 * np.sum(np.log(denominator), axis=-1) - 0.5 * chi * np.sum(
            self.projected_labels**2 / denominator, axis=-1
        )


@dataclass(frozen=True)
class RescalingSolution:
    """Saddle point of the scalar rescaling theory.

    total_scale U = Π Q_l; layer_scales Q_l; data_term χ tᵀK̂t and trace_term tr(A⁻¹K̂) at the
    solution; residual |F(ln U)|; n_roots: sign changes of F found on the scan (the one with the
    largest log posterior is returned).
    """

    total_scale: float
    layer_scales: tuple[float, ...]
    widths: tuple[int, ...]
    chi: float
    kappa: float
    fluctuations: bool
    data_term: float
    trace_term: float
    residual: float
    n_roots: int

    def to_dict(self) -> dict:
        return {
            "total_scale": self.total_scale,
            "layer_scales": list(self.layer_scales),
            "widths": list(self.widths),
            "chi": self.chi,
            "kappa": self.kappa,
            "fluctuations": self.fluctuations,
            "data_term": self.data_term,
            "trace_term": self.trace_term,
            "residual": self.residual,
            "n_roots": self.n_roots,
        }


def _check_widths(widths: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    widths = (widths,) if isinstance(widths, int) else tuple(widths)
    if not widths or not all(isinstance(n, int | np.integer) and n >= 1 for n in widths):
        raise ValueError(f"widths must be positive ints (one per hidden layer), got {widths!r}.")
    return tuple(int(n) for n in widths)


def solve_rescaling(
    kernel: torch.Tensor,
    y: torch.Tensor,
    kappa: float,
    chi: float,
    widths: int | tuple[int, ...] | list[int],
    fluctuations: bool = True,
    spectrum: KernelSpectrum | None = None,
) -> RescalingSolution:
    """Solve N_l(Q_l − 1) = U[χ tᵀK̂t − f·tr(A⁻¹K̂)], U = Π Q_l (f = 1, or 0 for the tree level).

    One root in ln U (docs/math/adaptive.md §4): F is scanned on a grid of ln U for sign
    changes, each bracket is refined by Brent's method, and the root with the largest log
    posterior Σ_l (N_l/2)(ln Q_l − Q_l) + ln N(y; 0, (UK̂ + κ)/χ) is kept.
    """
    kappa = check_positive("kappa", kappa)
    chi = check_positive("chi", chi)
    widths = _check_widths(widths)
    spectrum = spectrum or KernelSpectrum.from_kernel(kernel, y)
    weight = 1.0 if fluctuations else 0.0
    width_array = np.asarray(widths, dtype=np.float64)

    def growth(scale: np.ndarray) -> np.ndarray:
        return scale * (
            spectrum.data_term(scale, chi, kappa) - weight * spectrum.trace_term(scale, kappa)
        )

    def equation(log_scale: np.ndarray) -> np.ndarray:
        ratios = 1.0 + growth(np.exp(log_scale))[..., None] / width_array
        with np.errstate(invalid="ignore", divide="ignore"):
            value = log_scale - np.sum(np.log(ratios), axis=-1)
        return np.where(np.all(ratios > 0, axis=-1), value, np.nan)

    values = equation(_SCAN_LOG_SCALES)
    defined = np.isfinite(values)
    changes = np.flatnonzero(
        defined[:-1] & defined[1:] & (np.sign(values[:-1]) != np.sign(values[1:]))
    )
    if changes.size == 0:
        raise ValueError(
            "the rescaling equation has no root for ln U in [−40, 40]: check that y is not zero, "
            f"that kappa ({kappa}) and chi ({chi}) are sensible, and that every width exceeds "
            "the kernel rank when kappa is tiny."
        )
    roots = [
        brentq(
            lambda s: float(equation(np.asarray(s))),
            _SCAN_LOG_SCALES[i],
            _SCAN_LOG_SCALES[i + 1],
            xtol=1e-15,
            rtol=4 * np.finfo(float).eps,
            maxiter=500,
        )
        for i in changes
    ]

    def log_posterior(log_scale: float) -> float:
        scale = np.exp(log_scale)
        layers = 1.0 + growth(np.asarray(scale)) / width_array
        prior = float(np.sum(0.5 * width_array * (np.log(layers) - layers)))
        return prior + float(spectrum.log_likelihood(scale, chi, kappa))

    best = max(roots, key=log_posterior)
    scale = float(np.exp(best))
    layer_scales = tuple(float(q) for q in 1.0 + growth(np.asarray(scale)) / width_array)
    return RescalingSolution(
        total_scale=scale,
        layer_scales=layer_scales,
        widths=widths,
        chi=chi,
        kappa=kappa,
        fluctuations=fluctuations,
        data_term=float(spectrum.data_term(scale, chi, kappa)),
        trace_term=float(spectrum.trace_term(scale, kappa)),
        residual=float(abs(equation(np.asarray(best)))),
        n_roots=len(roots),
    )
