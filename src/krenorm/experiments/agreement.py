"""How far the sampled networks are from the theory, and how that distance scales with N.

Per sampled point (docs/math/theory.md §6 for ε_g):

    δ(N) = ε_g(network, N) − ε_g(theory, N),   SE(δ) = SE of the network estimate,
    z = δ / SE(δ),

and the same against the infinite-width theory, δ_∞-ref = ε_g(network, N) − ε_g(theory, ∞).
The theory is deterministic (solved to a gradient tolerance far below any SE), so the network's
standard error — from the pooled integrated autocorrelation time of its chains — is the error
of δ. It assumes mixed chains; the report puts the sampler's warnings next to the numbers.

Per problem (architecture, data, T, λ0, λ1): the theory is the saddle point of an effective
action proportional to N (docs/math/theory.md §3); fluctuations around it correct a finite
network at order 1/N, so at the fixed P of a run δ(N) should vanish as N grows, as 1/N to
leading order. A weighted least-squares fit

    δ(N) = δ∞ + c / N,   weights 1 / SE(δ)²,

gives δ∞ and c with their standard errors (from the inverse normal matrix: the SEs are taken
as known) and χ² / dof. δ∞ is consistent with zero when |δ∞| < 2 SE(δ∞). With two widths the fit
is exactly determined (no goodness-of-fit test); with one width there is no fit.

Over a wide range of N (say 10 to 800) the next order of the expansion shows: δ(N) bends in
1/N, a straight-line fit fails its χ² test and its intercept moves as small widths are dropped.
With four or more widths the problem therefore also carries the next-order fit

    δ(N) = δ∞ + c / N + d / N²,

same weights, one parameter more (docs/sweeps.md, "Networks against the theory").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from krenorm.experiments.rows import ProblemKey, ResultRow, problem_labels, theory_index
from krenorm.width import INFINITE_WIDTH, width_label

#: A deviation (or δ∞) is consistent with zero when it is within this many standard errors.
AGREEMENT_STANDARD_ERRORS = 2.0


@dataclass(frozen=True)
class PointDeviation:
    """Network minus theory at one sampled point (see the module docstring)."""

    label: str
    architecture: str
    width: float
    spec_hash: str
    network: float
    stderr: float
    theory: float
    infinite: float | None

    @property
    def deviation(self) -> float:
        """δ = ε_g(network) − ε_g(theory at N)."""
        return self.network - self.theory

    @property
    def z(self) -> float:
        """δ / SE."""
        return self.deviation / self.stderr

    @property
    def deviation_infinite(self) -> float | None:
        """ε_g(network) − ε_g(theory at N = ∞)."""
        return None if self.infinite is None else self.network - self.infinite

    @property
    def z_infinite(self) -> float | None:
        deviation = self.deviation_infinite
        return None if deviation is None else deviation / self.stderr

    @property
    def consistent(self) -> bool:
        """|δ| < 2 SE."""
        return abs(self.z) < AGREEMENT_STANDARD_ERRORS

    def to_dict(self) -> dict:
        return {"label": self.label, "architecture": self.architecture,
                "width": self.width, "spec_hash": self.spec_hash, "network": self.network,
                "stderr": self.stderr, "theory": self.theory, "infinite": self.infinite,
                "deviation": self.deviation, "z": self.z,
                "deviation_infinite": self.deviation_infinite, "z_infinite": self.z_infinite,
                "consistent": self.consistent}


@dataclass(frozen=True)
class InverseWidthFit:
    """Weighted least squares δ(N) = δ∞ + c/N (order 1) or δ∞ + c/N + d/N² (order 2) over the
    sampled points of one problem.

    status: 'fit' (more widths than parameters), 'exactly determined' (as many widths as
    parameters, so χ² says nothing), 'one width' / 'too few widths' (no fit; the parameters are
    None). covariance: of (δ∞, c[, d]), (X^T W X)^-1 with W = diag(1/SE²)."""

    widths: tuple[float, ...]
    n_points: int
    status: str
    delta_infinity: float | None = None
    delta_infinity_stderr: float | None = None
    slope: float | None = None
    slope_stderr: float | None = None
    covariance: tuple[tuple[float, ...], ...] | None = None
    chi2: float | None = None
    dof: int = 0
    p_value: float | None = None
    order: int = 1
    curvature: float | None = None
    curvature_stderr: float | None = None

    @property
    def z(self) -> float | None:
        """δ∞ / SE(δ∞)."""
        if self.delta_infinity is None or not self.delta_infinity_stderr:
            return None
        return self.delta_infinity / self.delta_infinity_stderr

    @property
    def consistent_with_zero(self) -> bool | None:
        """|δ∞| < 2 SE(δ∞); None without a fit."""
        z = self.z
        return None if z is None else abs(z) < AGREEMENT_STANDARD_ERRORS

    def _coefficients(self) -> tuple[float, ...]:
        if self.delta_infinity is None or self.slope is None:
            raise ValueError(f"no 1/N fit ({self.status}); check `status` first.")
        if self.order == 2:
            if self.curvature is None:
                raise ValueError(f"no 1/N² coefficient ({self.status}).")
            return (self.delta_infinity, self.slope, self.curvature)
        return (self.delta_infinity, self.slope)

    def value(self, inverse_width: float) -> float:
        """δ∞ + c·(1/N) [+ d·(1/N)²]."""
        return sum(coefficient * inverse_width**power
                   for power, coefficient in enumerate(self._coefficients()))

    def stderr(self, inverse_width: float) -> float:
        """Standard error of the fitted δ at 1/N (from the parameter covariance)."""
        if self.covariance is None:
            raise ValueError(f"no 1/N fit ({self.status}); check `status` first.")
        powers = [inverse_width**power for power in range(len(self.covariance))]
        variance = sum(powers[i] * self.covariance[i][j] * powers[j]
                       for i in range(len(powers)) for j in range(len(powers)))
        return math.sqrt(max(variance, 0.0))

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "n_points": self.n_points, "status": self.status,
                "order": self.order, "delta_infinity": self.delta_infinity,
                "delta_infinity_stderr": self.delta_infinity_stderr, "z": self.z,
                "consistent_with_zero": self.consistent_with_zero, "slope": self.slope,
                "slope_stderr": self.slope_stderr, "curvature": self.curvature,
                "curvature_stderr": self.curvature_stderr,
                "covariance": None if self.covariance is None else [list(row) for row in
                                                                    self.covariance],
                "chi2": self.chi2, "dof": self.dof, "p_value": self.p_value}


#: The smallest number of distinct widths for which a problem also gets the next-order fit
#: (three parameters, so at least one degree of freedom for its χ² test).
NEXT_ORDER_MIN_WIDTHS = 4


def fit_inverse_width(widths: Sequence[float], deviations: Sequence[float],
                      stderrs: Sequence[float], *, order: int = 1) -> InverseWidthFit:
    """Weighted least squares of δ = δ∞ + c/N (order 1) or δ∞ + c/N + d/N² (order 2), weights
    1/SE²: the design matrix in powers of 1/N, whitened by 1/SE and solved by
    `numpy.linalg.lstsq`; parameter covariance (Xᵀ W X)⁻¹ (docs/sweeps.md, "Networks against
    the theory").

    Raises ValueError for non-finite or non-positive widths or standard errors (a zero SE would
    give the point infinite weight) and for an order other than 1 or 2."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (δ∞ + c/N) or 2 (δ∞ + c/N + d/N²), got {order!r}.")
    if not len(widths) == len(deviations) == len(stderrs):
        raise ValueError("widths, deviations and stderrs must have the same length.")
    for width, deviation, stderr in zip(widths, deviations, stderrs, strict=True):
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"widths must be finite and positive, got {width!r}.")
        if not math.isfinite(deviation):
            raise ValueError(f"deviations must be finite, got {deviation!r}.")
        if not (math.isfinite(stderr) and stderr > 0):
            raise ValueError(f"stderrs must be finite and positive, got {stderr!r}; a point "
                             "without a standard error cannot be weighted.")
    distinct = tuple(sorted(set(float(width) for width in widths)))
    n = len(widths)
    n_parameters = order + 1
    if len(distinct) < n_parameters:
        status = ("no points" if not distinct else "one width" if len(distinct) == 1
                  else "too few widths")
        return InverseWidthFit(distinct, n, status, order=order)
    inverse = 1.0 / np.asarray(widths, dtype=float)
    sigma = np.asarray(stderrs, dtype=float)
    design = np.vander(inverse, n_parameters, increasing=True)
    whitened = design / sigma[:, None]
    target = np.asarray(deviations, dtype=float) / sigma
    parameters = np.linalg.lstsq(whitened, target, rcond=None)[0]
    covariance = np.linalg.inv(whitened.T @ whitened)
    chi2 = float(np.sum((target - whitened @ parameters) ** 2))
    dof = n - n_parameters
    status = "exactly determined" if len(distinct) == n_parameters else "fit"
    errors = np.sqrt(np.diag(covariance))
    return InverseWidthFit(
        distinct, n, status, float(parameters[0]), float(errors[0]), float(parameters[1]),
        float(errors[1]), tuple(tuple(float(v) for v in row) for row in covariance), chi2, dof,
        float(stats.chi2.sf(chi2, dof)) if dof > 0 else None, order,
        float(parameters[2]) if order == 2 else None,
        float(errors[2]) if order == 2 else None)


@dataclass(frozen=True)
class ProblemAgreement:
    """The sampled points of one problem (architecture, data, T, λ0, λ1) against the theory,
    and the 1/N fit of their deviations; with at least `NEXT_ORDER_MIN_WIDTHS` widths also the
    fit with a 1/N² term (`next_order_fit`, else None)."""

    label: str
    architecture: str
    points: tuple[PointDeviation, ...]
    fit: InverseWidthFit
    key: ProblemKey = field(compare=False, repr=False)
    next_order_fit: InverseWidthFit | None = None

    def to_dict(self) -> dict:
        return {"label": self.label, "architecture": self.architecture,
                "points": [point.to_dict() for point in self.points],
                "fit": self.fit.to_dict(),
                "next_order_fit": (None if self.next_order_fit is None
                                   else self.next_order_fit.to_dict())}


@dataclass(frozen=True)
class AgreementReport:
    """Every problem with sampled networks, and the network points without a theory partner
    (no theory at their exact width in the rows: listed, never silently dropped)."""

    problems: tuple[ProblemAgreement, ...]
    unmatched: tuple[str, ...] = ()

    @property
    def points(self) -> list[PointDeviation]:
        return [point for problem in self.problems for point in problem.points]

    def to_dict(self) -> dict:
        return {"problems": [problem.to_dict() for problem in self.problems],
                "unmatched": list(self.unmatched)}


def compare_networks(rows: Sequence[ResultRow]) -> AgreementReport:
    """Deviations of every sampled network from the theory at its exact width (and at N = ∞),
    grouped by problem, with the 1/N fit per problem."""
    index = theory_index(rows)
    networks = [row for row in rows if row.network is not None]
    keys = list(dict.fromkeys(row.spec.problem_key() for row in networks))
    labels = problem_labels(keys)
    grouped: dict[ProblemKey, list[PointDeviation]] = {key: [] for key in keys}
    unmatched = []
    for row in rows:
        network = row.network
        if network is None:
            continue
        key = row.spec.problem_key()
        theory = index.get((key, row.width))
        stderr = network.test_loss_stderr
        if theory is None or stderr is None or not stderr > 0:
            reason = ("no theory at this width" if theory is None
                      else "no standard error of the network estimate")
            unmatched.append(f"{labels[key]} N = {width_label(row.width)} ({reason})")
            continue
        infinite = index.get((key, INFINITE_WIDTH))
        grouped[key].append(PointDeviation(
            labels[key], row.architecture, row.width, row.spec_hash, network.test_loss,
            stderr, theory.test_loss, None if infinite is None else infinite.test_loss))
    problems = []
    for key, points in grouped.items():
        points.sort(key=lambda point: point.width)
        columns = ([p.width for p in points], [p.deviation for p in points],
                   [p.stderr for p in points])
        fit = fit_inverse_width(*columns)
        next_order = (fit_inverse_width(*columns, order=2)
                      if len(fit.widths) >= NEXT_ORDER_MIN_WIDTHS else None)
        problems.append(ProblemAgreement(labels[key], key[1].kind, tuple(points), fit, key,
                                         next_order))
    return AgreementReport(tuple(problems), tuple(unmatched))


def _decimals(stderr: float) -> int:
    """Decimals that show a standard error to two significant digits."""
    return max(1, 1 - math.floor(math.log10(stderr))) if stderr > 0 else 4


def value_with_error(value: float, stderr: float) -> str:
    """'+0.00310 ± 0.00042': the value signed, both to the error's second significant digit."""
    decimals = _decimals(stderr)
    return f"{value:+.{decimals}f} ± {stderr:.{decimals}f}"


def describe_point(point: PointDeviation) -> str:
    """'deviation +0.0031 ± 0.0004 (7.8σ)' against the theory at N, and against N = ∞."""
    text = (f"network {point.network:.5f} ± {point.stderr:.5f}, theory {point.theory:.5f}: "
            f"deviation {value_with_error(point.deviation, point.stderr)} ({point.z:+.1f}σ)")
    if point.deviation_infinite is not None and point.z_infinite is not None:
        decimals = _decimals(point.stderr)
        text += (f"; vs N = ∞ theory {point.deviation_infinite:+.{decimals}f} "
                 f"({point.z_infinite:+.1f}σ)")
    return text


def describe_fit(fit: InverseWidthFit) -> str:
    """The verdict on δ(N) = δ∞ + c/N (or δ∞ + c/N + d/N² for a next-order fit) in one
    sentence."""
    widths = ", ".join(width_label(width) for width in fit.widths)
    form = "1/N" if fit.order == 1 else "1/N + 1/N²"
    if fit.delta_infinity is None or fit.slope is None or fit.delta_infinity_stderr is None:
        needed = ("two widths (three for a goodness-of-fit test)" if fit.order == 1
                  else "three widths (four for a goodness-of-fit test)")
        return (f"{form} fit: none ({fit.status}{': N = ' + widths if widths else ''}); "
                f"sample at least {needed}.")
    z = fit.z if fit.z is not None else math.nan
    verdict = ("consistent with zero" if fit.consistent_with_zero else
               "NOT consistent with zero")
    smallest = min(fit.widths)
    text = (f"{form} fit over N = {widths}: δ∞ = "
            f"{value_with_error(fit.delta_infinity, fit.delta_infinity_stderr)} ({z:+.1f}σ), "
            f"{verdict}; c = {fit.slope:+.3g} ± {fit.slope_stderr:.2g}")
    if fit.order == 1:
        text += (f" (c/N = {fit.slope / smallest:+.{_decimals(fit.delta_infinity_stderr)}f} "
                 f"at N = {width_label(smallest)})")
    elif fit.curvature is not None and fit.curvature_stderr is not None:
        text += f", d = {fit.curvature:+.3g} ± {fit.curvature_stderr:.2g}"
    if fit.status == "exactly determined":
        count = {2: "two", 3: "three"}.get(len(fit.widths), str(len(fit.widths)))
        return text + f"; exactly determined by {count} widths (no goodness-of-fit test)."
    text += f"; χ²/dof = {fit.chi2:.2f}/{fit.dof}"
    if fit.p_value is not None:
        text += f" (p = {fit.p_value:.2g})"
        if fit.p_value < 0.05:
            text += (f": the {form} form does not describe these points within their errors "
                     "(higher orders in 1/N, or standard errors too small for unmixed chains), "
                     "so the parameter errors are too small")
    return text + "."
