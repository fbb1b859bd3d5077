"""What a solve reports: one `SolverDiagnostics` for every saddle point, and the
`SolverSettings` that control the solve (docs/math/theory.md §3, §6)."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

import torch

from krenorm.theory.order_parameters import OrderParameterStructure

SolverMethod = Literal["auto", "newton", "anderson", "fixed-point", "lbfgs", "newton-krylov"]
SOLVER_METHODS: tuple[str, ...] = get_args(SolverMethod)

#: Fields that only some solves fill (the (Q̄, Q) saddle: its signature; the damped fixed
#: point: its final damping). `to_dict` leaves them out when absent.
_OPTIONAL_FIELDS = ("is_saddle", "final_damping", "block_passes", "n_negative_eigenvalues",
                    "n_positive_eigenvalues")
#: Fields kept on the in-memory object only: the dense (Q̄, Q) Hessian (up to
#: `solvers.DENSE_SADDLE_LIMIT`² entries, megabytes per point in JSON) and its full spectrum.
#: `to_dict`, and so every stored point, carries their summary instead: the signature counts,
#: the smallest and the largest eigenvalue.
_IN_MEMORY_FIELDS = ("hessian", "hessian_eigenvalues")


@dataclass(frozen=True)
class SolverSettings:
    """How the saddle point is searched.

    method: 'auto' (Newton for small or spectral problems, Anderson otherwise; the damped fixed
    point with a hybrid-Newton fallback for a (Q̄, Q) saddle), or one of SOLVER_METHODS.
    tolerance: ‖∇S‖ at which a solve counts as converged. n_starts > 1 adds random starts (seeded
    by seed). hessian_check: report the curvature at the solution."""

    method: SolverMethod = "auto"
    tolerance: float = 1e-9
    max_iterations: int = 500
    n_starts: int = 1
    seed: int = 0
    hessian_check: bool = True

    def __post_init__(self) -> None:
        if self.method not in SOLVER_METHODS:
            raise ValueError(f"unknown solver method {self.method!r}; choose one of "
                             f"{SOLVER_METHODS}.")
        tolerance = self.tolerance
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
                math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance must be a finite positive number, got {tolerance!r}.")
        object.__setattr__(self, "tolerance", float(tolerance))
        for name, minimum in (("max_iterations", 1), ("n_starts", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
        if not isinstance(self.hessian_check, bool):
            raise ValueError(f"hessian_check must be True or False, got {self.hessian_check!r}.")

    def updated(self, **options: Any) -> SolverSettings:
        """A copy with some fields changed (None leaves a field as it is); unknown names are
        refused with the list of known ones."""
        known = {field.name for field in fields(self)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown solver options {sorted(unknown)}; choose from "
                             f"{sorted(known)}.")
        changes = {name: value for name, value in options.items() if value is not None}
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SolverDiagnostics:
    """What a user needs to trust a saddle point.

    Always: method, convergence, iterations, evaluations, ‖∇S‖ and S at the solution, the
    smallest Hessian eigenvalue (None without a Hessian check), the starts and how far apart
    they ended. A (Q̄, Q) saddle adds its full Hessian and its eigenvalues (up to
    `solvers.DENSE_SADDLE_LIMIT` free entries; on this object only, never in `to_dict`) and
    whether their signature is that of the expected saddle (`is_saddle`); a damped fixed
    point its final damping; an action over kernel blocks (CNN, LCN) the passes over the
    blocks the solve took, curvature check included (`block_passes`, docs/scale.md §4). A
    (Q̄, Q) saddle also reports how many Hessian eigenvalues are negative and positive (counted
    from the dense Hessian, or from the inertia test above `solvers.DENSE_SADDLE_LIMIT` free
    entries, where they are None when the expected signature does not hold)."""

    method: str
    converged: bool
    iterations: int
    function_evaluations: int
    gradient_norm: float
    action: float
    min_hessian_eigenvalue: float | None
    n_starts: int
    start_disagreement: float
    message: str
    hessian: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)
    hessian_eigenvalues: tuple[float, ...] | None = field(default=None, repr=False)
    is_saddle: bool | None = None
    final_damping: float | None = None
    block_passes: int | None = None
    n_negative_eigenvalues: int | None = None
    n_positive_eigenvalues: int | None = None

    @property
    def max_hessian_eigenvalue(self) -> float | None:
        """The largest eigenvalue of the dense (Q̄, Q) Hessian (None where none was assembled)."""
        return None if not self.hessian_eigenvalues else max(self.hessian_eigenvalues)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able and small: absent optional fields left out; the dense Hessian and its full
        spectrum are never written (`_IN_MEMORY_FIELDS`): a (Q̄, Q) saddle's entry carries its
        signature (`is_saddle`, `n_negative_eigenvalues`, `n_positive_eigenvalues`) and, where
        the Hessian was assembled, `max_hessian_eigenvalue` beside `min_hessian_eigenvalue`."""
        out = {item.name: getattr(self, item.name) for item in fields(self)
               if item.name not in _IN_MEMORY_FIELDS}
        for name in _OPTIONAL_FIELDS:
            if out[name] is None:
                del out[name]
        largest = self.max_hessian_eigenvalue
        if largest is not None:
            out["max_hessian_eigenvalue"] = largest
        return out

    def __getitem__(self, key: str) -> Any:
        """Deprecated dictionary access (the (Q̄, Q) solve used to report a dict)."""
        warnings.warn(f"diagnostics[{key!r}] is deprecated; use the attribute "
                      f"diagnostics.{key}.", DeprecationWarning, stacklevel=2)
        if key not in {field.name for field in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class SaddlePoint:
    """A solved point of the effective action with its structure and diagnostics."""

    point: torch.Tensor
    diagnostics: SolverDiagnostics
    structure: OrderParameterStructure

    @property
    def q_bar(self) -> torch.Tensor:
        """Q̄ (for a (Q̄, Q) pair its first entry, shape (1,))."""
        return self.structure.q_bar(self.point)

    @property
    def conjugate_q(self) -> float | None:
        """Q of a (Q̄, Q) pair, else None."""
        return self.structure.conjugate(self.point)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"q_bar": self.q_bar.tolist()}
        if self.conjugate_q is not None:
            out["conjugate_q"] = self.conjugate_q
        return {**out, **self.diagnostics.to_dict()}
