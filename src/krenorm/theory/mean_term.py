"""FC networks with a non-odd activation (ReLU): two order parameters (THEORY.md §3).

With m^μ = μ(C^{μμ}) and M = m mᵀ:
    K_R = (Q̄/λ1)(K − M) + M/(λ1(1 + Q)),
    S(Q̄, Q) = −Q̄Q + ln(1 + Q) + (1/N)[ln det A + yᵀA⁻¹y],   A = T·1 + K_R.
The stationary point is a saddle (not a minimum) in (Q̄, Q):
    ∂S/∂Q̄ = −Q + (1/N)⟨(K − M)/λ1, B⟩ = 0,
    ∂S/∂Q  = −Q̄ + 1/(1 + Q) − (1/N)⟨M, B⟩/(λ1(1 + Q)²) = 0,     B = A⁻¹ − v vᵀ.
With M = 0 the second equation gives Q̄ = 1/(1 + Q) and the pair reduces to Q̄⁻¹ = 1 + G.
Solved by a damped fixed point from the infinite-width point (Q̄, Q) = (1, 0), with a hybrid
Newton fallback (`solve_mean_term_saddle`) and continuation in N (`fit_theory`).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import torch

from krenorm._validation import check_positive
from krenorm.kernels.grams import fc_kernel, fc_kernel_diagonal, fc_means
from krenorm.theory.action import _cholesky, spd_inverse


class MeanTermAction:
    """S(Q̄, Q) for an FC network with a non-odd activation, with its gradient."""

    def __init__(self, kernel: torch.Tensor, means: torch.Tensor, y: torch.Tensor, width: float,
                 temperature: float, lambda1: float):
        self.kernel = kernel
        self.mean_outer = torch.outer(means, means)
        self.y = y
        self.width = check_positive("width", width)
        self.temperature = check_positive("temperature", temperature)
        self.lambda1 = check_positive("lambda1", lambda1)

    def train_kernel(self, q_bar: float, q: float) -> torch.Tensor:
        return (q_bar * (self.kernel - self.mean_outer) + self.mean_outer / (1 + q)) / self.lambda1

    def evaluate(self, q_bar: float, q: float) -> tuple[float, np.ndarray]:
        """S and (∂S/∂Q̄, ∂S/∂Q)."""
        if q <= -1:
            raise ValueError("Q must exceed −1.")
        a = self.train_kernel(q_bar, q)
        a.diagonal().add_(self.temperature)
        factor = _cholesky(a, "A = T·1 + K_R")
        v = torch.cholesky_solve(self.y[:, None], factor)[:, 0]
        log_det = 2 * torch.log(torch.diagonal(factor)).sum()
        b = spd_inverse(factor) - torch.outer(v, v)
        value = -q_bar * q + float(np.log1p(q)) + float(log_det + self.y @ v) / self.width
        centred = float(((self.kernel - self.mean_outer) * b).sum()) / (self.lambda1 * self.width)
        mean_part = float((self.mean_outer * b).sum()) / (self.lambda1 * self.width)
        gradient = np.array([-q + centred, -q_bar + 1 / (1 + q) - mean_part / (1 + q) ** 2])
        return value, gradient


def solve_mean_term_saddle(action: MeanTermAction, tolerance: float = 1e-10,
                           max_iterations: int = 2000,
                           start: tuple[float, float] = (1.0, 0.0)) -> tuple[float, float, dict]:
    """(Q̄, Q) at the stationary point, with diagnostics.

    Damped fixed point of the two stationarity conditions solved for (Q, Q̄):
        Q ← (1/N)⟨(K − M)/λ1, B⟩,   Q̄ ← 1/(1 + Q) − (1/N)⟨M, B⟩/(λ1(1 + Q)²),
    which for M = 0 is the iteration Q̄ ← (1 + G)⁻¹ of the odd case. The damping halves whenever
    the gradient norm grows (a saddle has no descent function to monitor). Where it stalls (large
    α: the map stops contracting) Powell's hybrid Newton method on ∇S = 0 (scipy's "hybr",
    Jacobian from `stationary_point_hessian`) is run from where it stopped and from `start`, and
    the point with the smaller gradient is kept. `start` defaults to the infinite-width point;
    `fit_theory` continues in N from near infinite width when this does not converge.
    """
    q_bar, q = start
    _, gradient = action.evaluate(q_bar, q)
    norm, damping, iteration = float(np.linalg.norm(gradient)), 0.5, 0
    while norm > tolerance and iteration < max_iterations and damping > 1e-8:
        iteration += 1
        centred = gradient[0] + q
        mean_part = (q_bar - 1 / (1 + q) + gradient[1]) * -(1 + q) ** 2
        target_q = centred
        target_q_bar = 1 / (1 + target_q) - mean_part / (1 + target_q) ** 2
        candidate = (q_bar + damping * (target_q_bar - q_bar), q + damping * (target_q - q))
        if not _in_domain(candidate):
            damping /= 2
            continue
        _, trial = action.evaluate(*candidate)
        trial_norm = float(np.linalg.norm(trial))
        if trial_norm > 2 * norm:
            damping /= 2
            continue
        (q_bar, q), gradient, norm = candidate, trial, trial_norm
    method = "damped fixed point"
    if norm > tolerance:
        # From where the fixed point stopped and from the start (a warm start near the solution
        # can be left far behind by a fixed point that does not contract).
        for origin in ((q_bar, q), start):
            polished = _newton_polish(action, *origin)
            if polished is not None and polished[2] < norm:
                q_bar, q, norm = polished
                method = "damped fixed point → hybrid Newton"
    value, gradient = action.evaluate(q_bar, q)
    norm = float(np.linalg.norm(gradient))
    hessian = stationary_point_hessian(action, q_bar, q)
    eigenvalues = np.linalg.eigvalsh(hessian)
    diagnostics = {
        "method": method,
        "converged": bool(norm <= tolerance),
        "iterations": iteration,
        "gradient_norm": norm,
        "action": float(value),
        "final_damping": damping,
        "hessian": hessian.tolist(),
        "hessian_eigenvalues": eigenvalues.tolist(),
        "min_hessian_eigenvalue": float(eigenvalues[0]),
        "is_saddle": bool(eigenvalues[0] < 0 < eigenvalues[1]),
    }
    return q_bar, q, diagnostics


def _newton_polish(action: MeanTermAction, q_bar: float, q: float
                   ) -> tuple[float, float, float] | None:
    """Powell's hybrid method on ∇S(Q̄, Q) = 0 from (q_bar, q); None if it leaves the domain."""
    def gradient(point: np.ndarray) -> np.ndarray:
        if not _in_domain(point):
            raise _OutsideDomainError
        return action.evaluate(*point)[1]

    def jacobian(point: np.ndarray) -> np.ndarray:
        if not _in_domain(point):
            raise _OutsideDomainError
        return stationary_point_hessian(action, *point)

    try:
        point = scipy.optimize.root(gradient, np.array([q_bar, q]), jac=jacobian,
                                    method="hybr", tol=1e-14).x
        return float(point[0]), float(point[1]), float(np.linalg.norm(gradient(point)))
    except (_OutsideDomainError, torch.linalg.LinAlgError):
        return None


def _in_domain(point) -> bool:
    """(Q̄, Q) with Q̄ > 0 and Q > −1, where S is defined."""
    return point[0] > 0 and point[1] > -1


class _OutsideDomainError(Exception):
    """A trial point with Q̄ ≤ 0 or Q ≤ −1, where S is not defined."""


def stationary_point_hessian(action: MeanTermAction, q_bar: float, q: float) -> np.ndarray:
    """∂²S/∂(Q̄, Q)² by central differences of the analytic gradient (steps 1e-5·max(1, |x|),
    smaller near the boundary Q̄ = 0, Q = −1; error O(step²)), symmetrised.

    At N = ∞ it is [[0, −1], [−1, −1/(1 + Q)²]] with determinant −1: the stationary point is a
    saddle in (Q̄, Q) — Q is the field conjugate to Q̄ — so one eigenvalue of each sign is
    expected, and `is_saddle` in the diagnostics says whether the solution has that signature."""
    point = np.array([q_bar, q])
    # Steps stay well inside the domain Q̄ > 0, Q > −1.
    steps = 1e-5 * np.minimum(np.maximum(1.0, np.abs(point)), [q_bar, 1 + q])
    columns = []
    for index in range(2):
        shift = np.zeros(2)
        shift[index] = steps[index]
        plus = action.evaluate(*(point + shift))[1]
        minus = action.evaluate(*(point - shift))[1]
        columns.append((plus - minus) / (2 * shift[index]))
    hessian = np.stack(columns, 1)
    return (hessian + hessian.T) / 2


class MeanTermKernels:
    """FC kernels with the mean term: K, m, and the test-side k_R, K_R(x0, x0)."""

    def __init__(self, activation: str, x_train: torch.Tensor, lambda0: float, lambda1: float):
        self.activation = activation
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.kernel = fc_kernel(x_train, None, activation, lambda0)
        self.means = fc_means(x_train, activation, lambda0)

    def action(self, y: torch.Tensor, width: float, temperature: float) -> MeanTermAction:
        return MeanTermAction(self.kernel, self.means, y, width, temperature, self.lambda1)

    def test_kernels(self, q_bar: float, q: float, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        cross = fc_kernel(x_test, self.x_train, self.activation, self.lambda0)
        diagonal = fc_kernel_diagonal(x_test, self.activation, self.lambda0)
        test_means = fc_means(x_test, self.activation, self.lambda0)
        cross_means = torch.outer(test_means, self.means)
        k_r = (q_bar * (cross - cross_means) + cross_means / (1 + q)) / self.lambda1
        k_00 = (q_bar * (diagonal - test_means**2) + test_means**2 / (1 + q)) / self.lambda1
        return k_r, k_00
