"""FC networks with a non-odd activation (ReLU): the (Q̄, Q) action (docs/math/theory.md §3).

With m^μ = μ(C^{μμ}) and M = m mᵀ:
    K_R = (Q̄/λ1)(K − M) + M/(λ1(1 + Q)),
    S(Q̄, Q) = −Q̄Q + ln(1 + Q) + (1/N)[ln det A + yᵀA⁻¹y],   A = T·1 + K_R.
The stationary point is a saddle (not a minimum) in (Q̄, Q), B = A⁻¹ − v vᵀ, v = A⁻¹y:
    ∂S/∂Q̄ = −Q + (1/N)⟨(K − M)/λ1, B⟩,
    ∂S/∂Q  = −Q̄ + 1/(1 + Q) − (1/N)⟨M, B⟩/(λ1(1 + Q)²).
With ∂_a A the derivatives of K_R (∂_Q̄ A = (K − M)/λ1, ∂_Q A = −M/(λ1(1 + Q)²),
∂²_Q A = 2M/(λ1(1 + Q)³)) the data term's Hessian-vector product is
    (1/N)[⟨∂_a A, −A⁻¹ A[V] A⁻¹ + u vᵀ + v uᵀ⟩ + V_Q ⟨∂_a ∂_Q A, B⟩],  A[V] = Σ_b V_b ∂_b A,
    u = A⁻¹ A[V] v,
analytic like the other actions. With M = 0 the pair reduces to Q̄⁻¹ = 1 + G. `MeanTermAction`
implements the common `EffectiveAction` interface with the point (Q̄, Q) and the
`MeanTermStructure`; `solve_saddle_point` finds the saddle (damped fixed point, hybrid Newton,
continuation in α and T in `fit_theory`, docs/math/theory.md §3.7).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, overload

import numpy as np
import torch

from krenorm._validation import check_positive, check_targets
from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.grams import fc_kernel, fc_kernel_diagonal, fc_means
from krenorm.linalg import factor_noisy_kernel, log_det_from_factor, spd_inverse
from krenorm.theory.action import ActionEvaluation, EffectiveAction
from krenorm.theory.kernel_model import RenormalizedKernels
from krenorm.theory.order_parameters import MeanTermStructure
from krenorm.theory.solvers import solve_saddle_point
from krenorm.width import check_width


def mean_term_kernel(q_bar: torch.Tensor | float, q: torch.Tensor | float,
                     centred: torch.Tensor, mean_outer: torch.Tensor,
                     lambda1: float) -> torch.Tensor:
    """K_R = (Q̄ (K − M) + M/(1 + Q))/λ1 for the centred kernel K − M and the mean part M."""
    return (q_bar * centred + mean_outer / (1 + q)) / lambda1


def _as_point(point: torch.Tensor | float, q: float | None, what: str) -> torch.Tensor:
    """The point (Q̄, Q) from a tensor, or (deprecated) from two floats."""
    if q is None:
        return torch.as_tensor(point, dtype=torch.float64)
    warnings.warn(f"MeanTermAction.{what}(q_bar, q) is deprecated; pass the point "
                  f"torch.tensor([q_bar, q]).", DeprecationWarning, stacklevel=3)
    return torch.tensor([float(point), float(q)], dtype=torch.float64)


class MeanTermAction(EffectiveAction):
    """S(Q̄, Q) for an FC network with a non-odd activation (module docstring)."""

    cheap_hessian = True

    def __init__(self, kernel: torch.Tensor, means: torch.Tensor, y: torch.Tensor, width: float,
                 temperature: float, lambda1: float):
        self.kernel = kernel
        self.mean_outer = torch.outer(means, means)
        self.y = check_targets("y", y, kernel.shape[0])
        if self.y.ndim != 1:
            raise ValueError("several outputs with a non-odd activation are not supported; fit "
                             "one output at a time.")
        self.width = check_width(width)
        self.temperature = check_positive("temperature", temperature)
        self.lambda1 = check_positive("lambda1", lambda1)
        self.structure = MeanTermStructure()

    def at_width(self, width: float) -> MeanTermAction:
        action = copy.copy(self)  # shares the kernels and targets
        action.width = check_width(width)
        return action

    @overload
    def train_kernel(self, point: torch.Tensor) -> torch.Tensor: ...
    @overload
    def train_kernel(self, point: float, q: float) -> torch.Tensor: ...

    def train_kernel(self, point: Any, q: float | None = None) -> torch.Tensor:
        """K_R(Q̄, Q) on the training set."""
        point = _as_point(point, q, "train_kernel")
        return mean_term_kernel(point[0].to(self.kernel), point[1].to(self.kernel),
                                self.kernel - self.mean_outer, self.mean_outer, self.lambda1)

    @overload
    def evaluate(self, point: torch.Tensor) -> ActionEvaluation: ...
    @overload
    def evaluate(self, point: float, q: float) -> tuple[float, np.ndarray]: ...

    def evaluate(self, point: Any, q: float | None = None) -> Any:
        """S with its gradient and Hessian-vector product at the point (Q̄, Q).

        Deprecated form: ``evaluate(q_bar, q)`` returns (S, gradient as a NumPy array)."""
        if q is None:
            return super().evaluate(torch.as_tensor(point, dtype=torch.float64))
        evaluation = super().evaluate(_as_point(point, q, "evaluate"))
        return evaluation.value, evaluation.gradient.numpy()

    def data_term(self, point: torch.Tensor) -> ActionEvaluation:
        q = point[1]
        centred = (self.kernel - self.mean_outer) / self.lambda1  # ∂A/∂Q̄
        mean = self.mean_outer / self.lambda1
        factor = factor_noisy_kernel(self.train_kernel(point), self.temperature, overwrite=True)
        v = torch.cholesky_solve(self.y[:, None].to(factor), factor)[:, 0]
        a_inverse = spd_inverse(factor)
        b = a_inverse - torch.outer(v, v)
        data_fit = float(log_det_from_factor(factor) + self.y.to(v) @ v)
        shift = float(1 + q)
        derivatives = torch.stack([centred, -mean / shift**2])  # ∂_Q̄ A, ∂_Q A
        gradient = (derivatives * b).sum((-2, -1)).to(point) / self.width
        second = float((mean * b).sum()) * 2 / shift**3  # ⟨∂²_Q A, B⟩

        def hessian_vector(direction: torch.Tensor) -> torch.Tensor:
            # Batched over leading axes of `direction` (..., 2).
            change = torch.einsum("...a,apq->...pq", direction.to(derivatives), derivatives)
            solved = a_inverse @ change  # A⁻¹ A[V]
            u = solved @ v
            cross = u[..., :, None] * v
            term = -solved @ a_inverse + cross + cross.transpose(-1, -2)
            first = torch.einsum("apq,...pq->...a", derivatives, term)
            curvature = torch.zeros_like(first)
            curvature[..., 1] = second * direction[..., 1].to(first)
            return (first + curvature).to(direction) / self.width

        return ActionEvaluation(point, data_fit / self.width, gradient, hessian_vector)


class MeanTermKernels(RenormalizedKernels):
    """FC kernels with the mean term: K, m, and the test-side k_R, K_R(x0, x0) at (Q̄, Q)."""

    def __init__(self, activation: str, x_train: torch.Tensor, lambda0: float, lambda1: float):
        self.activation = activation
        self.x_train = x_train
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.kernel = fc_kernel(x_train, None, activation, lambda0)
        self.means = fc_means(x_train, activation, lambda0)

    @classmethod
    def from_spec(cls, spec: ArchitectureSpec, x_train: torch.Tensor, lambda0: float,
                  lambda1: float, **_memory_options: Any) -> MeanTermKernels:
        """The model of an FC spec (dense P×P kernels: the memory options do not apply)."""
        return cls(spec.activation, x_train, lambda0, lambda1)

    def action(self, y: torch.Tensor, width: float, temperature: float) -> MeanTermAction:
        return MeanTermAction(self.kernel, self.means, y, width, temperature, self.lambda1)

    def train_kernel(self, point: torch.Tensor) -> torch.Tensor:
        mean_outer = torch.outer(self.means, self.means)
        return mean_term_kernel(float(point[0]), float(point[1]), self.kernel - mean_outer,
                                mean_outer, self.lambda1)

    def test_kernels(self, point: torch.Tensor, x_test: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        q_bar, q = float(point[0]), float(point[1])
        cross = fc_kernel(x_test, self.x_train, self.activation, self.lambda0)
        diagonal = fc_kernel_diagonal(x_test, self.activation, self.lambda0)
        test_means = fc_means(x_test, self.activation, self.lambda0)
        cross_means = torch.outer(test_means, self.means)
        return (mean_term_kernel(q_bar, q, cross - cross_means, cross_means, self.lambda1),
                mean_term_kernel(q_bar, q, diagonal - test_means**2, test_means**2,
                                 self.lambda1))


def stationary_point_hessian(action: MeanTermAction, q_bar: float, q: float) -> np.ndarray:
    """Deprecated: the analytic ∂²S/∂(Q̄, Q)² from ``action.evaluate(point).hessian_vector``
    (the solver reports it as ``SolverDiagnostics.hessian``)."""
    warnings.warn("stationary_point_hessian is deprecated; use "
                  "action.evaluate(point).hessian_vector or SolverDiagnostics.hessian.",
                  DeprecationWarning, stacklevel=2)
    evaluation = action.evaluate(torch.tensor([q_bar, q], dtype=torch.float64))
    hessian = evaluation.hessian_vector(torch.eye(2, dtype=torch.float64))
    return ((hessian + hessian.T) / 2).numpy()


def solve_mean_term_saddle(action: MeanTermAction, tolerance: float = 1e-10,
                           max_iterations: int = 2000,
                           start: tuple[float, float] = (1.0, 0.0)
                           ) -> tuple[float, float, dict[str, Any]]:
    """Deprecated: ``solve_saddle_point(action, start=torch.tensor(start), tolerance=…)``,
    which returns a `SaddlePoint`. This wrapper returns (Q̄, Q, diagnostics as a dict)."""
    warnings.warn("solve_mean_term_saddle is deprecated; use solve_saddle_point(action), which "
                  "returns a SaddlePoint.", DeprecationWarning, stacklevel=2)
    solution = solve_saddle_point(action, torch.tensor(start, dtype=torch.float64),
                                  tolerance=tolerance, max_iterations=max_iterations)
    q_bar, q = (float(value) for value in solution.point)
    return q_bar, q, solution.diagnostics.to_dict()
