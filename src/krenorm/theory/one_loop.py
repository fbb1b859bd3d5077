"""Gaussian-fluctuation (one-loop) correction to the posterior test loss (experimental;
docs/math/theory.md §7, docs/selection.md §5).

The leading-order theory evaluates the test loss at the saddle point Q̄* of the action
S(Q̄) = Tr Q̄ − ln det Q̄ + (1/N)[ln det A + yᵀA⁻¹y], A = T·1 + K_R(Q̄) (docs/math/theory.md §3).
For the *Gaussian-equivalent network* — each hidden unit (FC) or channel (CNN, LCN) replaced by a
Gaussian process with the unit's kernel, which for a linear network is the network itself — the
posterior of Q̄ is exactly

    p(Q̄ | y) dQ̄ ∝ exp(−(N/2) S(Q̄)) det(Q̄)^(−m) dQ̄      (m = (r + 1)/2 for an r×r SPD Q̄,
                                                           m = 1 for a diagonal Q̄)

(a Wishart / Gamma prior times a Gaussian likelihood), and the posterior test loss is the average
of the Gaussian-process loss ε(Q̄) over it. With θ the free entries of Q̄ (K_R(θ) = Σ_a θ_a B_a,
Q̄ = Σ_a θ_a E_a), Φ = (N/2)S, C = (∇²Φ)⁻¹ at θ*, μ = m ln det Q̄, Laplace's method gives

    ⟨ε⟩ = ε(θ*) + ½ Σ_ab C_ab ε_ab − Σ_a ε_a Σ_b C_ab (½ Σ_cd Φ_bcd C_cd + μ_b) + O(1/N²),

every term after ε(θ*) of order 1/N. All derivatives are analytic (Cholesky solves and
contractions of the basis kernels); `tests/test_one_loop.py` checks each against central
differences and the whole against exact finite-N linear networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.kernels.activations import get_activation
from krenorm.kernels.grams import (
    compute_local_blocks,
    fc_kernel,
    fc_kernel_diagonal,
    local_cross_blocks,
    local_test_diagonals,
)
from krenorm.linalg import cholesky, factor_noisy_kernel, log_det_from_factor
from krenorm.memory import check_allocation

__all__ = [
    "KernelFamily",
    "OneLoopResult",
    "action_derivatives",
    "kernel_family",
    "loss_derivatives",
    "one_loop_test_loss",
]

_TEST_CHUNK = 64


@dataclass(frozen=True)
class KernelFamily:
    """A renormalized kernel linear in the free entries θ of Q̄.

    train (n, P, P): B_a, so K_R = Σ_a θ_a B_a on the training set; cross (n, Pt, P) and
    test_diagonal (n, Pt): the same on the test side; order_basis (n, r, r): E_a, Q̄ = Σ θ_a E_a;
    measure_power m: the invariant measure det(Q̄)^(−m) of the Wishart/Gamma prior."""

    train: torch.Tensor
    cross: torch.Tensor
    test_diagonal: torch.Tensor
    order_basis: torch.Tensor
    measure_power: float

    @property
    def n_free(self) -> int:
        return int(self.train.shape[0])

    def q_bar(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.einsum("a,aij->ij", theta, self.order_basis)

    def theta(self, q_bar: torch.Tensor) -> torch.Tensor:
        """Free entries of Q̄ (least squares on the basis; exact for a Q̄ of the family)."""
        basis = self.order_basis.reshape(self.n_free, -1)
        target = torch.as_tensor(q_bar, dtype=basis.dtype).reshape(-1)
        return torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0]

    def kernel(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.einsum("a,apq->pq", theta, self.train)


def kernel_family(spec: ArchitectureSpec, x_train: torch.Tensor, x_test: torch.Tensor, *,
                  lambda0: float = 1.0, lambda1: float = 1.0,
                  memory_limit: int | None = None) -> KernelFamily:
    """The family of an odd-activation `fc` (scalar Q̄), `cnn` (symmetric Np×Np Q̄, θ = its
    entries i ≤ j) or `lcn` (diagonal Q̄) network (docs/math/theory.md §3 table)."""
    if spec.kind not in ("fc", "cnn", "lcn"):
        raise ValueError(f"the one-loop correction supports 'fc', 'cnn' and 'lcn', got "
                         f"{spec.kind!r}.")
    if not get_activation(spec.activation).odd:
        raise ValueError(f"the one-loop correction needs an odd activation (no mean term); "
                         f"{spec.activation!r} is not odd.")
    if not (lambda0 > 0 and lambda1 > 0):
        raise ValueError(f"lambda0 and lambda1 must be positive, got {lambda0}, {lambda1}.")
    x_train = torch.as_tensor(x_train, dtype=torch.float64)
    x_test = torch.as_tensor(x_test, dtype=torch.float64)
    if spec.kind == "fc":
        kernel = fc_kernel(x_train, activation=spec.activation, lambda0=lambda0)
        cross = fc_kernel(x_test, x_train, activation=spec.activation, lambda0=lambda0)
        diagonal = fc_kernel_diagonal(x_test, activation=spec.activation, lambda0=lambda0)
        one = torch.ones(1, 1, 1, dtype=torch.float64)
        return KernelFamily(kernel[None] / lambda1, cross[None] / lambda1,
                            diagonal[None] / lambda1, one, 1.0)
    geometry = spec.geometry
    blocks = compute_local_blocks(x_train, geometry, activation=spec.activation,
                                  lambda0=lambda0, memory_limit=memory_limit)
    n_patches, n_train, n_test = blocks.n_patches, x_train.shape[0], x_test.shape[0]
    scale = 1.0 / (lambda1 * n_patches)
    i, j = blocks.pair_index.T
    if spec.kind == "lcn":
        keep = i == j
        i, j = i[keep], j[keep]
        train = blocks.pairs[keep] * scale
    else:
        check_allocation("the one-loop basis kernels",
                         len(i) * (n_train * n_train + n_test * n_train), torch.float64,
                         memory_limit)
        off = (i != j).to(torch.float64)[:, None, None]
        train = (blocks.pairs + off * blocks.pairs.transpose(1, 2)) * scale
    cross_blocks = local_cross_blocks(x_test, x_train, geometry, activation=spec.activation,
                                      lambda0=lambda0, memory_limit=memory_limit)
    test_blocks = local_test_diagonals(x_test, geometry, activation=spec.activation,
                                       lambda0=lambda0)
    upper = (i != j).to(torch.float64)
    cross = (cross_blocks[i, j] + upper[:, None, None] * cross_blocks[j, i]) * scale
    diagonal = (test_blocks[i, j] + upper[:, None] * test_blocks[j, i]) * scale
    basis = torch.zeros(len(i), n_patches, n_patches, dtype=torch.float64)
    index = torch.arange(len(i))
    basis[index, i, j] = 1.0
    basis[index, j, i] = 1.0
    power = 1.0 if spec.kind == "lcn" else (n_patches + 1) / 2
    return KernelFamily(train, cross, diagonal, basis, power)


def _log_det_derivatives(matrix: torch.Tensor, basis: torch.Tensor, covariance: torch.Tensor |
                         None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor |
                                        None]:
    """ln det M and, with G_a = M⁻¹E_a: gradient tr G_a, Hessian −tr(G_a G_b) and the
    contracted third derivative Σ_cd C_cd ∂³_bcd ln det M = 2 tr(G_b Y), Y = Σ_cd C_cd G_c G_d."""
    factor = cholesky(matrix, "Q̄ (or A)", advice="start the saddle point closer to Q̄ = 1")
    value = log_det_from_factor(factor)
    n, size = basis.shape[0], basis.shape[-1]
    g = torch.cholesky_solve(basis.permute(1, 0, 2).reshape(size, -1), factor)
    g = g.reshape(size, n, size).permute(1, 0, 2)  # G_a = M⁻¹ E_a
    gradient = torch.diagonal(g, dim1=1, dim2=2).sum(-1)
    hessian = -(g.reshape(n, -1) @ g.transpose(1, 2).reshape(n, -1).T)
    third = None
    if covariance is not None:
        z = torch.einsum("cd,dpq->cpq", covariance, g)
        y = torch.einsum("cpr,crq->pq", g, z)
        third = 2 * torch.einsum("bpq,qp->b", g, y)
    return value, gradient, hessian, third


@dataclass(frozen=True)
class ActionDerivatives:
    """S(θ), ∇S, ∇²S and (given C) Σ_cd C_cd ∂³S_bcd, with ∇ ln det Q̄ for the measure."""

    value: float
    gradient: torch.Tensor
    hessian: torch.Tensor
    third: torch.Tensor | None
    log_det_gradient: torch.Tensor


def action_derivatives(family: KernelFamily, theta: torch.Tensor, y_train: torch.Tensor,
                       width: float, temperature: float,
                       covariance: torch.Tensor | None = None) -> ActionDerivatives:
    """Derivatives of S(θ) = Tr Q̄ − ln det Q̄ + (1/N)[ln det A + yᵀA⁻¹y] in θ.

    Data term with X_a = A⁻¹B_a, v = A⁻¹y, u_a = B_a v, w_a = A⁻¹u_a:
    ∂_a = tr X_a − vᵀu_a; ∂_ab = −tr(X_a X_b) + 2 u_aᵀw_b; contracted third
    2 tr(X_b Y) − 2 tr(B_b W) − 4 w_bᵀ r with Y = Σ C_cd X_c X_d, W = wᵀCw, r = Σ_c B_c (Cw)_c."""
    q_bar = family.q_bar(theta)
    prior_trace = torch.einsum("aii->a", family.order_basis)
    log_det_q, grad_q, hess_q, third_q = _log_det_derivatives(q_bar, family.order_basis,
                                                              covariance)
    factor = factor_noisy_kernel(family.kernel(theta), temperature, overwrite=True)
    n, size = family.train.shape[0], family.train.shape[-1]
    v = torch.cholesky_solve(y_train[:, None], factor)[:, 0]
    x = torch.cholesky_solve(family.train.permute(1, 0, 2).reshape(size, -1), factor)
    x = x.reshape(size, n, size).permute(1, 0, 2)  # X_a = A⁻¹B_a
    u = family.train @ v  # (n, P)
    w = torch.cholesky_solve(u.T, factor).T
    data_value = log_det_from_factor(factor) + y_train @ v
    data_gradient = torch.diagonal(x, dim1=1, dim2=2).sum(-1) - u @ v
    data_hessian = -(x.reshape(n, -1) @ x.transpose(1, 2).reshape(n, -1).T) + 2 * u @ w.T
    data_hessian = 0.5 * (data_hessian + data_hessian.T)
    third = None
    if covariance is not None:
        z = torch.einsum("cd,dpq->cpq", covariance, x)
        y_mat = torch.einsum("cpr,crq->pq", x, z)
        omega = covariance @ w
        r = torch.einsum("cpq,cq->p", family.train, omega)
        big_w = w.T @ covariance @ w
        data_third = (2 * torch.einsum("bpq,qp->b", x, y_mat)
                      - 2 * torch.einsum("bpq,pq->b", family.train, big_w) - 4 * w @ r)
        assert third_q is not None
        third = -third_q + data_third / width
    return ActionDerivatives(
        value=float(prior_trace @ theta - log_det_q + data_value / width),
        gradient=prior_trace - grad_q + data_gradient / width,
        hessian=-hess_q + data_hessian / width,
        third=third,
        log_det_gradient=grad_q,
    )


@dataclass(frozen=True)
class LossDerivatives:
    """ε(θ), ∇ε and (given C) Σ_ab C_ab ∂²ε_ab for the test loss of the GP with K_R(θ)."""

    value: float
    gradient: torch.Tensor
    contracted_hessian: float | None


def loss_derivatives(family: KernelFamily, theta: torch.Tensor, y_train: torch.Tensor,
                          y_test: torch.Tensor, temperature: float,
                          covariance: torch.Tensor | None = None) -> LossDerivatives:
    """ε = (1/Pt) Σ_t [(y_t − m_t)² + v_t], m = kᵀA⁻¹y, v = K** − kᵀA⁻¹k (docs/math/theory.md
    §4), with k = Σ θ_a b_a. Per test point, s = A⁻¹k, σ_a = B_a s:
    m_a = b_aᵀv − sᵀu_a, m_ab = −b_aᵀw_b − b_bᵀw_a + sᵀ(B_a w_b + B_b w_a),
    v_a = d_a − 2 b_aᵀs + sᵀσ_a,
    v_ab = −2 b_aᵀA⁻¹b_b + 2 (A⁻¹b_a)ᵀσ_b + 2 (A⁻¹b_b)ᵀσ_a − 2 σ_aᵀA⁻¹σ_b.
    Test points are processed in chunks."""
    factor = factor_noisy_kernel(family.kernel(theta), temperature, overwrite=True)
    v = torch.cholesky_solve(y_train[:, None], factor)[:, 0]
    u = family.train @ v
    w = torch.cholesky_solve(u.T, factor).T
    n_test = y_test.shape[0]
    total, gradient = 0.0, torch.zeros_like(theta)
    contracted = 0.0
    if covariance is not None:
        omega = covariance @ w
        r = torch.einsum("cpq,cq->p", family.train, omega)
    for start in range(0, n_test, _TEST_CHUNK):
        stop = min(start + _TEST_CHUNK, n_test)
        b = family.cross[:, start:stop]  # (n, t, P)
        d = family.test_diagonal[:, start:stop]
        k = torch.einsum("a,atp->tp", theta, b)
        s = torch.cholesky_solve(k.T, factor)  # (P, t)
        mean = k @ v
        residual = y_test[start:stop] - mean
        variance = theta @ d - (k * s.T).sum(-1)
        total += float((residual**2 + variance).sum())
        sigma = family.train @ s  # (n, P, t)
        mean_grad = b @ v - u @ s  # (n, t)
        var_grad = d - 2 * torch.einsum("atp,pt->at", b, s) + torch.einsum("pt,apt->at",
                                                                              s, sigma)
        gradient += (-2 * residual * mean_grad + var_grad).sum(-1)
        if covariance is not None:
            size, m = s.shape
            b_solved = torch.cholesky_solve(b.transpose(1, 2).permute(1, 0, 2).reshape(size, -1),
                                            factor).reshape(size, -1, m).permute(1, 0, 2)
            sigma_solved = torch.cholesky_solve(sigma.permute(1, 0, 2).reshape(size, -1),
                                                factor).reshape(size, -1, m).permute(1, 0, 2)
            mean_curv = -2 * torch.einsum("atp,ap->t", b, omega) + 2 * r @ s
            var_curv = (-2 * torch.einsum("atp,apt->t", b,
                                          torch.einsum("ab,bpt->apt", covariance, b_solved))
                        + 4 * torch.einsum("apt,apt->t", b_solved,
                                           torch.einsum("ab,bpt->apt", covariance, sigma))
                        - 2 * torch.einsum("apt,apt->t", sigma,
                                           torch.einsum("ab,bpt->apt", covariance,
                                                        sigma_solved)))
            quadratic = torch.einsum("at,ab,bt->t", mean_grad, covariance, mean_grad)
            contracted += float((2 * quadratic - 2 * residual * mean_curv + var_curv).sum())
    return LossDerivatives(total / n_test, gradient / n_test,
                           None if covariance is None else contracted / n_test)


@dataclass(frozen=True)
class OneLoopResult:
    """Leading-order test loss ε(Q̄*) and its O(1/N) correction, split into the curvature term
    ½ tr(C∇²ε), the cubic (skewness) shift and the measure shift; `q_bar` = Q̄*,
    `q_bar_std` the Laplace standard deviations of the free entries of Q̄."""

    leading: float
    correction: float
    curvature: float
    cubic_shift: float
    measure_shift: float
    q_bar: torch.Tensor
    q_bar_std: torch.Tensor
    gradient_norm: float
    newton_steps: int

    @property
    def corrected(self) -> float:
        return self.leading + self.correction

    def to_dict(self) -> dict:
        return {"leading": self.leading, "correction": self.correction,
                "corrected": self.corrected, "curvature": self.curvature,
                "cubic_shift": self.cubic_shift, "measure_shift": self.measure_shift,
                "q_bar": self.q_bar.tolist(), "q_bar_std": self.q_bar_std.tolist(),
                "gradient_norm": self.gradient_norm, "newton_steps": self.newton_steps}


def _saddle(family: KernelFamily, theta: torch.Tensor, y_train: torch.Tensor, width: float,
            temperature: float, tolerance: float, max_steps: int) -> tuple[torch.Tensor, int]:
    """Newton's method on S(θ) with backtracking that keeps Q̄ SPD and S decreasing."""
    derivatives = action_derivatives(family, theta, y_train, width, temperature)
    for step in range(max_steps):
        if float(derivatives.gradient.norm()) < tolerance:
            return theta, step
        direction = -torch.linalg.solve(derivatives.hessian, derivatives.gradient)
        if float(direction @ derivatives.gradient) >= 0:  # not a descent direction
            direction = -derivatives.gradient
        size = 1.0
        while size > 1e-8:
            trial = theta + size * direction
            try:
                trial_derivatives = action_derivatives(family, trial, y_train, width,
                                                       temperature)
            except torch.linalg.LinAlgError:
                size /= 2
                continue
            if trial_derivatives.value <= derivatives.value + 1e-12 * abs(derivatives.value):
                break
            size /= 2
        else:
            break
        theta, derivatives = trial, trial_derivatives
    if float(derivatives.gradient.norm()) >= tolerance:
        raise RuntimeError(f"the saddle point did not converge in {max_steps} Newton steps "
                           f"(|∇S| = {float(derivatives.gradient.norm()):.2e}); pass a start "
                           "from krenorm.theory.solvers.solve_saddle_point.")
    return theta, max_steps


def one_loop_test_loss(family: KernelFamily, y_train: torch.Tensor, y_test: torch.Tensor, *,
                       width: float, temperature: float, q_bar_start: torch.Tensor | None = None,
                       tolerance: float = 1e-10, max_newton_steps: int = 50) -> OneLoopResult:
    """Leading-order posterior test loss and its one-loop O(1/N) correction (module docstring).

    Solves ∇S = 0 by Newton's method (from Q̄ = 1 or `q_bar_start`), then evaluates
    C = (2/N)(∇²S)⁻¹, the contracted third derivatives and the loss derivatives. Experimental:
    exact to O(1/N²) for linear networks (tests/test_one_loop.py); for nonlinear networks it
    contains only the fluctuations of Q̄ (docs/math/theory.md §7)."""
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite positive number (the correction vanishes at "
                         f"N = ∞), got {width!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}.")
    y_train = torch.as_tensor(y_train, dtype=torch.float64)
    y_test = torch.as_tensor(y_test, dtype=torch.float64)
    if y_train.ndim != 1 or y_test.ndim != 1:
        raise ValueError("y_train and y_test must be vectors (one output).")
    if y_train.shape[0] != family.train.shape[-1] or y_test.shape[0] != family.cross.shape[1]:
        raise ValueError("y_train / y_test lengths do not match the kernel family.")
    start = (torch.eye(family.order_basis.shape[-1], dtype=torch.float64) if q_bar_start is None
             else torch.as_tensor(q_bar_start, dtype=torch.float64))
    theta, steps = _saddle(family, family.theta(start), y_train, width, temperature, tolerance,
                           max_newton_steps)
    derivatives = action_derivatives(family, theta, y_train, width, temperature)
    covariance = torch.linalg.inv(derivatives.hessian) * (2.0 / width)
    covariance = 0.5 * (covariance + covariance.T)
    derivatives = action_derivatives(family, theta, y_train, width, temperature, covariance)
    assert derivatives.third is not None
    loss = loss_derivatives(family, theta, y_train, y_test, temperature, covariance)
    assert loss.contracted_hessian is not None
    cubic = -0.5 * float(loss.gradient @ covariance @ (0.5 * width * derivatives.third))
    measure = -float(loss.gradient @ covariance
                     @ (family.measure_power * derivatives.log_det_gradient))
    curvature = 0.5 * loss.contracted_hessian
    return OneLoopResult(
        leading=loss.value, correction=curvature + cubic + measure, curvature=curvature,
        cubic_shift=cubic, measure_shift=measure, q_bar=family.q_bar(theta),
        q_bar_std=torch.sqrt(torch.diagonal(covariance).clamp_min(0.0)),
        gradient_norm=float(derivatives.gradient.norm()), newton_steps=steps)
