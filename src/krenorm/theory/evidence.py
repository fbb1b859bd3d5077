"""Hyper-parameters chosen by the theory: maximise its log evidence over (T, λ0, λ1)
(docs/selection.md §1; the evidence itself is docs/math/theory.md §3).

For an architecture at width N the theory gives ln Z(T, λ0, λ1) at its saddle point
(`FittedTheory.log_evidence`; at N = ∞ it is the Gaussian-process marginal likelihood
−½ yᵀ(K/λ1 + T)⁻¹y − ½ ln det(K/λ1 + T) − (P/2) ln 2π). `EvidenceMaximizer` maximises it over the
logarithms θ = ln(T, λ0, λ1) of the parameters it is asked to optimise, in scikit-learn's
GaussianProcessRegressor convention:

- ``optimizer``: "fmin_l_bfgs_b" (scipy's L-BFGS-B on −ln Z with central finite-difference
  gradients, within ``bounds``), a callable ``optimizer(obj_func, initial_theta, bounds) ->
  (theta_opt, func_min)`` where ``obj_func(theta, eval_gradient=True)`` returns (−ln Z, −∇ln Z),
  or None (keep the initial values and only evaluate);
- ``n_restarts_optimizer``: further starts drawn log-uniformly within ``bounds``
  (``random_state`` seeds them); the best optimum wins;
- fitted: ``temperature_``, ``lambda0_``, ``lambda1_``, ``log_marginal_likelihood_value_``,
  ``log_marginal_likelihood(theta)``, and the Laplace posterior spreads: the Hessian H of ln Z in θ
  at the optimum (central finite differences), ``theta_covariance_ = (−H)⁻¹`` and per parameter
  ``spreads_[name] = value · √(theta_covariance_)_ii`` (the delta method: a flat prior in ln θ,
  valid while the spread in ln θ is small).

The spread is that of a posterior over hyper-parameters given one data set; a hyper-parameter of
the data's generator (a synthetic teacher's noise variance and readout precision) is recovered
within it when the model family contains the generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import optimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from krenorm.architectures import ArchitectureSpec
from krenorm.theory.estimator import RenormalizedKernelRegressor
from krenorm.theory.fit import FittedTheory, TheoryConfig

__all__ = ["HYPER_PARAMETERS", "EvidenceMaximizer"]

#: The hyper-parameters the evidence can be maximised over, in θ order.
HYPER_PARAMETERS = ("temperature", "lambda0", "lambda1")

#: Step in ln θ of the finite differences (gradient and Hessian): the evidence is smooth on this
#: scale (its curvature scale in ln θ is O(1)), and the solver tolerance (1e-9) keeps the
#: rounding error of a difference quotient ≈ 1e-9/1e-3² ≈ 1e-3 of an O(1) Hessian entry.
_FD_STEP = 1e-3

Optimizer = Callable[[Callable[..., Any], np.ndarray, np.ndarray], tuple[np.ndarray, float]]


def _as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor)
                           else x, dtype=torch.float64)


class EvidenceMaximizer(BaseEstimator):
    """Maximise the theory's log evidence ln Z over (T, λ0, λ1) at one architecture and width.

    Parameters: the architecture ('fc' | 'cnn' | 'lcn' | 'cnn-gap'), width N (``math.inf`` for
    the NNGP limit), activation, mask, stride, padding as in `RenormalizedKernelRegressor`;
    temperature, lambda0, lambda1: the starting values (and the fixed values of the parameters
    not optimised); optimize: which of ('temperature', 'lambda0', 'lambda1') to optimise;
    bounds: (low, high) per optimised parameter, in the parameter's own units; optimizer,
    n_restarts_optimizer, random_state: as in scikit-learn's GaussianProcessRegressor (module
    docstring); solver, tolerance: the saddle-point solver's.

    Fitted attributes: temperature_, lambda0_, lambda1_, log_marginal_likelihood_value_,
    theta_ (ln of the optimised parameters), theta_covariance_, spreads_ (dict name → Laplace
    standard deviation), regressor_ (a `RenormalizedKernelRegressor` fitted at the optimum),
    n_evaluations_.
    """

    def __init__(self, architecture: str = "fc", width: float = math.inf,
                 temperature: float = 0.1, lambda0: float = 1.0, lambda1: float = 1.0,
                 activation: str = "erf", mask: int | tuple[int, int] = 1,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 optimize: Sequence[str] = ("temperature", "lambda1"),
                 bounds: Sequence[tuple[float, float]] | None = None,
                 optimizer: str | Optimizer | None = "fmin_l_bfgs_b",
                 n_restarts_optimizer: int = 0, random_state: int | None = None,
                 solver: str = "auto", tolerance: float = 1e-9):
        self.architecture = architecture
        self.width = width
        self.temperature = temperature
        self.lambda0 = lambda0
        self.lambda1 = lambda1
        self.activation = activation
        self.mask = mask
        self.stride = stride
        self.padding = padding
        self.optimize = optimize
        self.bounds = bounds
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state
        self.solver = solver
        self.tolerance = tolerance

    # -- set-up ---------------------------------------------------------------------------------

    def _names(self) -> tuple[str, ...]:
        names = tuple(self.optimize)
        unknown = [name for name in names if name not in HYPER_PARAMETERS]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"optimize must name distinct parameters among {HYPER_PARAMETERS}, "
                             f"got {names!r}.")
        return names

    def _log_bounds(self, names: tuple[str, ...]) -> np.ndarray:
        if self.bounds is None:
            return np.log(np.array([(1e-4, 1e2)] * len(names), dtype=np.float64))
        bounds = np.asarray(self.bounds, dtype=np.float64)
        if bounds.shape != (len(names), 2) or not np.all(bounds > 0) \
                or not np.all(bounds[:, 0] < bounds[:, 1]):
            raise ValueError(f"bounds must be one (low, high) pair with 0 < low < high per "
                             f"optimised parameter {names}, got {self.bounds!r}.")
        return np.log(bounds)

    def _values(self, theta: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
        values = {"temperature": float(self.temperature), "lambda0": float(self.lambda0),
                  "lambda1": float(self.lambda1)}
        for name, log_value in zip(names, theta, strict=True):
            values[name] = float(math.exp(log_value))
        return values

    def _spec(self) -> ArchitectureSpec:
        return ArchitectureSpec(self.architecture, self.activation, self.mask, self.stride,
                                self.padding)

    # -- the objective --------------------------------------------------------------------------

    def log_marginal_likelihood(self, theta: Sequence[float] | None = None) -> float:
        """ln Z at θ = ln of the optimised parameters (the fitted θ when None)."""
        check_is_fitted(self, "theta_")
        names = self._names()
        theta_array = self.theta_ if theta is None else np.asarray(theta, dtype=np.float64)
        return self._log_evidence(theta_array, names)

    def _log_evidence(self, theta: np.ndarray, names: tuple[str, ...]) -> float:
        key = tuple(np.round(theta, 12))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        values = self._values(theta, names)
        config = TheoryConfig(self._spec(), self.width, values["temperature"],
                              values["lambda0"], values["lambda1"], solver=self.solver,
                              tolerance=self.tolerance)
        value = float(FittedTheory(config, self._x, self._y).log_evidence)
        self._cache[key] = value
        self.n_evaluations_ += 1
        return value

    def _gradient(self, theta: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        gradient = np.empty_like(theta)
        for i in range(theta.size):
            step = np.zeros_like(theta)
            step[i] = _FD_STEP
            gradient[i] = (self._log_evidence(theta + step, names)
                           - self._log_evidence(theta - step, names)) / (2 * _FD_STEP)
        return gradient

    def _hessian(self, theta: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """Central second differences of ln Z in θ (step 10·_FD_STEP: the Hessian divides by the
        square of the step, so a larger one keeps the solver's rounding small)."""
        h = 10 * _FD_STEP
        size = theta.size
        hessian = np.empty((size, size))
        centre = self._log_evidence(theta, names)
        for i in range(size):
            ei = np.zeros(size)
            ei[i] = h
            hessian[i, i] = (self._log_evidence(theta + ei, names) - 2 * centre
                             + self._log_evidence(theta - ei, names)) / h**2
            for j in range(i):
                ej = np.zeros(size)
                ej[j] = h
                hessian[i, j] = hessian[j, i] = (
                    self._log_evidence(theta + ei + ej, names)
                    - self._log_evidence(theta + ei - ej, names)
                    - self._log_evidence(theta - ei + ej, names)
                    + self._log_evidence(theta - ei - ej, names)) / (4 * h * h)
        return hessian

    # -- fitting --------------------------------------------------------------------------------

    def _run_optimizer(self, objective: Callable[..., Any], theta0: np.ndarray,
                       bounds: np.ndarray) -> tuple[np.ndarray, float]:
        if self.optimizer == "fmin_l_bfgs_b":
            result = optimize.minimize(objective, theta0, method="L-BFGS-B", jac=True,
                                       bounds=bounds)
            if not result.success:
                warnings.warn(f"L-BFGS-B stopped without converging: {result.message}",
                              RuntimeWarning, stacklevel=3)
            return np.asarray(result.x, dtype=np.float64), float(result.fun)
        if callable(self.optimizer):
            theta, value = self.optimizer(objective, theta0, bounds)
            return np.asarray(theta, dtype=np.float64), float(value)
        raise ValueError(f"optimizer must be 'fmin_l_bfgs_b', a callable or None, got "
                         f"{self.optimizer!r}.")

    def fit(self, X: Any, y: Any) -> EvidenceMaximizer:
        """Maximise ln Z on (X, y); see the class docstring for what is fitted."""
        names = self._names()
        if not names:
            raise ValueError("optimize is empty: name at least one of "
                             f"{HYPER_PARAMETERS}.")
        if isinstance(self.n_restarts_optimizer, bool) or not isinstance(
                self.n_restarts_optimizer, int) or self.n_restarts_optimizer < 0:
            raise ValueError(f"n_restarts_optimizer must be an int ≥ 0, got "
                             f"{self.n_restarts_optimizer!r}.")
        log_bounds = self._log_bounds(names)
        self._x, self._y = _as_tensor(X), _as_tensor(y)
        self._cache: dict[tuple[float, ...], float] = {}
        self.n_evaluations_ = 0
        start = np.array([math.log(getattr(self, name)) for name in names])
        if np.any(start < log_bounds[:, 0]) or np.any(start > log_bounds[:, 1]):
            raise ValueError(f"the starting values of {names} lie outside bounds "
                             f"{np.exp(log_bounds).tolist()}; move them inside.")

        def objective(theta: np.ndarray, eval_gradient: bool = True) -> Any:
            value = -self._log_evidence(np.asarray(theta, dtype=np.float64), names)
            if not eval_gradient:
                return value
            return value, -self._gradient(np.asarray(theta, dtype=np.float64), names)

        if self.optimizer is None:
            best_theta, best_value = start, objective(start, eval_gradient=False)
        else:
            best_theta, best_value = self._run_optimizer(objective, start, log_bounds)
            generator = np.random.default_rng(self.random_state)
            for _ in range(self.n_restarts_optimizer):
                theta0 = generator.uniform(log_bounds[:, 0], log_bounds[:, 1])
                theta, value = self._run_optimizer(objective, theta0, log_bounds)
                if value < best_value:
                    best_theta, best_value = theta, value
        self.theta_ = best_theta
        self.log_marginal_likelihood_value_ = -float(best_value)
        values = self._values(best_theta, names)
        self.temperature_ = values["temperature"]
        self.lambda0_ = values["lambda0"]
        self.lambda1_ = values["lambda1"]
        self._laplace(names, log_bounds)
        self.regressor_ = RenormalizedKernelRegressor(
            self.architecture, self.width, self.temperature_, self.lambda0_, self.lambda1_,
            self.activation, self.mask, self.stride, self.padding, solver=self.solver,
            tolerance=self.tolerance).fit(self._x, self._y)
        return self

    def _laplace(self, names: tuple[str, ...], log_bounds: np.ndarray) -> None:
        """Laplace spreads from the Hessian of ln Z at the optimum (NaN where the optimum sits
        on a bound or the Hessian is not negative definite: no Gaussian approximation there)."""
        margin = 20 * _FD_STEP
        on_bound = (np.any(self.theta_ - margin < log_bounds[:, 0])
                    or np.any(self.theta_ + margin > log_bounds[:, 1]))
        self.hessian_ = (np.full((len(names), len(names)), np.nan) if on_bound
                         else self._hessian(self.theta_, names))
        nan = np.full((len(names), len(names)), np.nan)
        if on_bound or np.any(np.linalg.eigvalsh(-self.hessian_) <= 0):
            warnings.warn("the log evidence has no negative-definite Hessian at its optimum "
                          f"(θ = {np.exp(self.theta_).tolist()}, on a bound: {on_bound}); the "
                          "Laplace spreads are NaN.", RuntimeWarning, stacklevel=3)
            self.theta_covariance_ = nan
        else:
            self.theta_covariance_ = np.linalg.inv(-self.hessian_)
        self.spreads_ = {name: float(math.exp(theta) * math.sqrt(self.theta_covariance_[i, i]))
                         if np.isfinite(self.theta_covariance_[i, i]) else math.nan
                         for i, (name, theta) in enumerate(zip(names, self.theta_, strict=True))}

    # -- use ------------------------------------------------------------------------------------

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """The posterior mean at the selected hyper-parameters (`RenormalizedKernelRegressor`)."""
        check_is_fitted(self, "regressor_")
        return self.regressor_.predict(X, return_std=return_std)

    def selected(self) -> dict[str, float]:
        """{'temperature', 'lambda0', 'lambda1', 'log_evidence'} at the optimum."""
        check_is_fitted(self, "theta_")
        return {"temperature": self.temperature_, "lambda0": self.lambda0_,
                "lambda1": self.lambda1_, "log_evidence": self.log_marginal_likelihood_value_}
