"""Posterior observables of sampled networks and their Monte-Carlo error (docs/math/theory.md §3,
§4).

- Instantaneous errors: the posterior average of E[(y − f)²] per sample (never the error of the
  averaged predictor), split as bias² = (y − E f)² and variance = Var f (docs/math/theory.md §4).
- Integrated autocorrelation time with Sokal's adaptive window, pooled over chains (an
  independent check of τ; the summaries' errors, ESS and R̂ come from ArviZ, see `diagnostics`).
- Kernels: posterior-averaged hidden-layer kernel ΦΦᵀ versus the NNGP kernel, compared by
  kernel–target alignment (KTA) and centred kernel alignment (CKA); both are scale invariant, so
  the readout normalisation of Φ and the 1/λ1 of the NNGP kernel do not matter.
- Readout order parameter: Q_ij = (λ1/N) Σ_k ⟨a_{k,i} a_{k,j}⟩ (positions i, j; averaged over
  outputs). Its prior expectation is δ_ij, the infinite-width value of Q̄; differentiating
  ln Z = −(N/2) S(Q̄*) with respect to a per-position readout precision shows that at the saddle
  point this posterior second moment equals Q̄ of docs/math/theory.md §3 (scalar for FC and CNN-GAP,
  Np×Np for CNN, diagonal q̄_i for LCN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from krenorm.networks.diagnostics import RELIABLE_LENGTH_IN_TAU, check_traces

#: Sokal's window constant: the smallest M with M ≥ c·τ(M).
SOKAL_WINDOW_CONSTANT = 5.0


def autocorrelation_function(traces: torch.Tensor) -> torch.Tensor:
    """ρ(t) pooled over chains: C(t) = mean_r (1/n) Σ_s δx_r(s) δx_r(s + t), δx = x − grand mean,
    ρ = C/C(0), by FFT. Using the grand mean lets between-chain offsets lengthen τ. (n,)"""
    traces = check_traces(traces)
    n = traces.shape[0]
    centred = traces - traces.mean()
    size = 1 << (2 * n - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=size, dim=0)
    covariance = torch.fft.irfft(spectrum * spectrum.conj(), n=size, dim=0)[:n].mean(1) / n
    if covariance[0] <= 0:  # a constant trace: no correlation to measure
        rho = torch.zeros(n, dtype=torch.float64)
        rho[0] = 1.0
        return rho
    return covariance / covariance[0]


@dataclass(frozen=True)
class AutocorrelationTime:
    """τ_int = 1 + 2 Σ_{t=1}^{M} ρ(t) with Sokal's window M; `reliable` when n ≥ 50 τ."""

    tau: float
    window: int
    n_samples: int
    n_chains: int
    reliable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def integrated_autocorrelation_time(
    traces: torch.Tensor, window_constant: float = SOKAL_WINDOW_CONSTANT
) -> AutocorrelationTime:
    """Integrated autocorrelation time of (n, R) traces with Sokal's adaptive window: the smallest
    M with M ≥ c·τ(M). If no such M < n exists, τ at M = n − 1 is returned, marked unreliable."""
    traces = check_traces(traces)
    n, chains = traces.shape
    rho = autocorrelation_function(traces)
    taus = 2 * torch.cumsum(rho, 0) - 1  # τ(M) = 1 + 2 Σ_{t=1}^{M} ρ(t) = 2 Σ_{t=0}^{M} ρ − 1
    lags = torch.arange(n, dtype=torch.float64)
    admissible = torch.nonzero(lags >= window_constant * taus)
    found = admissible.numel() > 0
    window = int(admissible[0]) if found else n - 1
    # τ ≥ 1/(nR)-style lower bounds are irrelevant here; a negative τ only arises from noise.
    tau = max(float(taus[window]), 1.0 / n)
    return AutocorrelationTime(
        tau=tau,
        window=window,
        n_samples=n,
        n_chains=chains,
        reliable=bool(found and n >= RELIABLE_LENGTH_IN_TAU * tau),
    )


def _target_gram(targets: torch.Tensor) -> torch.Tensor:
    targets = targets[:, None] if targets.ndim == 1 else targets
    return targets @ targets.T


def _centre(kernel: torch.Tensor) -> torch.Tensor:
    return kernel - kernel.mean(0, keepdim=True) - kernel.mean(1, keepdim=True) + kernel.mean()


def _cosine(left: torch.Tensor, right: torch.Tensor) -> float:
    norm = torch.linalg.norm(left) * torch.linalg.norm(right)
    if norm <= 0:
        raise ValueError("alignment of a zero kernel is undefined.")
    return float((left * right).sum() / norm)


def kernel_target_alignment(kernel: torch.Tensor, targets: torch.Tensor) -> float:
    """KTA = ⟨K, yyᵀ⟩_F / (|K|_F |yyᵀ|_F) (Cristianini et al.), targets (P,) or (P, D)."""
    kernel = kernel.to(torch.float64)
    return _cosine(kernel, _target_gram(targets.to(kernel)))


def centered_kernel_alignment(left: torch.Tensor, right: torch.Tensor) -> float:
    """CKA = ⟨HKH, HLH⟩_F / (|HKH|_F |HLH|_F), H = 1 − 11ᵀ/P (Cortes et al.)."""
    left, right = left.to(torch.float64), right.to(torch.float64)
    if left.shape != right.shape or left.ndim != 2 or left.shape[0] != left.shape[1]:
        raise ValueError(f"kernels must be equal square matrices, got {left.shape}, {right.shape}.")
    return _cosine(_centre(left), _centre(right))


@dataclass(frozen=True)
class KernelAlignment:
    """Kernel similarity before (NNGP) and after training (posterior-averaged hidden kernel)."""

    target_alignment_nngp: float
    target_alignment_posterior: float
    centered_target_alignment_nngp: float
    centered_target_alignment_posterior: float
    cka_posterior_nngp: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_kernels(
    posterior_kernel: torch.Tensor, nngp: torch.Tensor, targets: torch.Tensor
) -> KernelAlignment:
    """KTA and CKA of the NNGP and the posterior-averaged hidden kernel with the targets, and the
    CKA between the two kernels."""
    target_gram = _target_gram(targets.to(torch.float64))
    return KernelAlignment(
        target_alignment_nngp=kernel_target_alignment(nngp, targets),
        target_alignment_posterior=kernel_target_alignment(posterior_kernel, targets),
        centered_target_alignment_nngp=centered_kernel_alignment(nngp, target_gram),
        centered_target_alignment_posterior=centered_kernel_alignment(
            posterior_kernel, target_gram
        ),
        cka_posterior_nngp=centered_kernel_alignment(posterior_kernel, nngp),
    )


def readout_order_parameter(
    block_second_moments: torch.Tensor, width: float, lambda1: float
) -> torch.Tensor:
    """Q_ij = (λ1/N) S_ij from S_ij = (1/D) Σ_{k,d} ⟨a_{k,i,d} a_{k,j,d}⟩ (…, pos, pos); the
    prior gives δ_ij exactly, the posterior estimates Q̄ of docs/math/theory.md §3."""
    return block_second_moments * (lambda1 / width)
