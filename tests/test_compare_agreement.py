"""The agreement of sampled networks with the theory: per-point deviations with their z-scores,
the weighted 1/N fit δ(N) = δ∞ + c/N, and the matching of rows by exact width (no 'or 3 %'
rule, no source labels)."""

import math
import warnings

import numpy as np
import pytest

from krenorm.architectures import ArchitectureSpec
from krenorm.experiments.agreement import (
    compare_networks,
    describe_fit,
    describe_point,
    fit_inverse_width,
)
from krenorm.experiments.report import explain_fit
from krenorm.experiments.rows import Estimate, ResultRow
from krenorm.experiments.spec import DataSpec, ExperimentSpec, NetworkSpec, TheorySettings
from krenorm.networks.settings import SamplerSettings

DATA = DataSpec("fc-teacher", 16, 8, 0, (("dimension", 3),))
FC = ArchitectureSpec("fc", "erf")


def test_weighted_fit_recovers_a_known_line():
    widths = [10.0, 20.0, 50.0, 100.0]
    stderrs = [0.002, 0.001, 0.0005, 0.0004]
    deviations = [0.001 - 0.3 / n for n in widths]  # exact line: χ² = 0
    fit = fit_inverse_width(widths, deviations, stderrs)
    assert fit.status == "fit" and fit.dof == 2
    assert fit.delta_infinity == pytest.approx(0.001, abs=1e-12)
    assert fit.slope == pytest.approx(-0.3, abs=1e-10)
    assert fit.chi2 == pytest.approx(0.0, abs=1e-18) and fit.p_value == pytest.approx(1.0)
    # Standard errors from (Xᵀ W X)⁻¹, checked against the explicit inverse.
    weights = [1 / s**2 for s in stderrs]
    s0, s1 = sum(weights), sum(w / n for w, n in zip(weights, widths, strict=True))
    s2 = sum(w / n**2 for w, n in zip(weights, widths, strict=True))
    determinant = s0 * s2 - s1**2
    assert fit.delta_infinity_stderr == pytest.approx(math.sqrt(s2 / determinant))
    assert fit.slope_stderr == pytest.approx(math.sqrt(s0 / determinant))
    assert fit.stderr(0.0) == pytest.approx(fit.delta_infinity_stderr)
    assert fit.consistent_with_zero is (abs(0.001) < 2 * fit.delta_infinity_stderr)


def test_fit_with_two_widths_is_exactly_determined_and_one_width_has_none():
    two = fit_inverse_width([10.0, 40.0], [-0.01, -0.0025], [0.001, 0.0005])
    assert two.status == "exactly determined" and two.dof == 0 and two.p_value is None
    assert two.delta_infinity == pytest.approx(0.0, abs=1e-12)
    assert two.slope == pytest.approx(-0.1)
    assert "exactly determined by two widths" in describe_fit(two)
    one = fit_inverse_width([10.0, 10.0], [0.01, 0.012], [0.001, 0.001])
    assert one.status == "one width" and one.delta_infinity is None
    assert one.consistent_with_zero is None
    assert "1/N fit: none (one width" in describe_fit(one)
    with pytest.raises(ValueError, match="no 1/N fit"):
        one.value(0.1)
    with pytest.raises(ValueError, match="stderrs"):
        fit_inverse_width([10.0, 20.0], [0.0, 0.0], [0.001, 0.0])


def test_a_poor_fit_says_so():
    fit = fit_inverse_width([10.0, 20.0, 50.0], [-0.01, 0.004, -0.002],
                            [0.0005, 0.0005, 0.0005])
    assert fit.p_value is not None and fit.p_value < 0.05
    assert "does not describe these points" in describe_fit(fit)


def _row(width: float, *, theory: float | None = None, network: float | None = None,
         stderr: float | None = None) -> ResultRow:
    spec = ExperimentSpec(DATA, FC, width, 0.1,
                          theory=TheorySettings(infinite=False) if theory is not None else None,
                          network=(SamplerSettings(n_replicas=2, n_steps=10)
                                   if network is not None else None))

    def estimate(loss: float, stderr: float | None) -> Estimate:
        return Estimate(loss, loss / 2, loss / 2, 0.0, 16 / width, stderr)

    return ResultRow(spec.content_hash, spec, 0.0,
                     theory=None if theory is None else estimate(theory, None),
                     network=None if network is None else estimate(network, stderr))


def test_a_two_percent_gap_at_five_sigma_is_a_deviation_not_an_agreement():
    """The old rule ('within 2 SE or within 3 %') called this agreement."""
    rows = [_row(math.inf, theory=0.1000), _row(50.0, theory=0.1000),
            _row(50.0, network=0.1023, stderr=0.00046)]
    report = compare_networks(rows)
    (point,) = report.points
    assert point.deviation == pytest.approx(0.0023)
    assert point.z == pytest.approx(5.0)
    assert not point.consistent
    assert point.infinite == pytest.approx(0.1) and point.z_infinite == pytest.approx(5.0)
    assert "deviation +0.00230 ± 0.00046 (+5.0σ)" in describe_point(point)


def test_rows_are_matched_by_exact_width_and_unmatched_points_are_listed():
    rows = [_row(math.inf, theory=0.2), _row(10.0, theory=0.15), _row(20.0, theory=0.17),
            _row(10.0, network=0.149, stderr=0.001), _row(20.0, network=0.1705, stderr=0.001),
            _row(30.0, network=0.18, stderr=0.001)]
    report = compare_networks(rows)
    (problem,) = report.problems
    assert [point.width for point in problem.points] == [10.0, 20.0]
    assert [point.theory for point in problem.points] == [0.15, 0.17]
    assert problem.fit.status == "exactly determined"
    assert report.unmatched == ("fc N = 30 (no theory at this width)",)


def test_infinite_width_is_math_inf_in_specs_and_json():
    spec = ExperimentSpec(DATA, FC, math.inf, 0.1)
    assert spec.is_infinite_width and spec.to_dict()["width"] == "inf"
    # At N = ∞ the 'infinite' reference is the fit itself: both spellings are one point.
    assert spec.theory == TheorySettings(infinite=False)
    assert spec == ExperimentSpec(DATA, FC, math.inf, 0.1, theory=TheorySettings(infinite=False))
    restored = ExperimentSpec.from_dict(spec.to_dict())
    assert restored == spec and restored.content_hash == spec.content_hash
    with pytest.raises(ValueError, match="whole number"):
        ExperimentSpec(DATA, FC, math.inf, 0.1, theory=None, network=SamplerSettings())
    with pytest.raises(ValueError, match="retuned_priors needs a finite width"):
        ExperimentSpec(DATA, FC, math.inf, 0.1, theory=TheorySettings(retuned_priors=True))


def test_network_settings_are_sampler_settings():
    spec = ExperimentSpec(DATA, FC, 8, 0.1, network=SamplerSettings(n_steps=100, burn_in=20))
    assert ExperimentSpec.from_dict(spec.to_dict()).network == spec.network
    with pytest.warns(DeprecationWarning, match="SamplerSettings"):
        old = NetworkSpec(n_steps=100)
    assert isinstance(old, SamplerSettings) and (old.n_replicas, old.n_steps) == (8, 100)
    with pytest.raises(ValueError, match="sampler must be one of"):
        ExperimentSpec(DATA, FC, 8, 0.1, network=SamplerSettings(sampler="gibbs"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new type warns about nothing
        SamplerSettings(n_steps=100)


def test_next_order_fit_recovers_a_known_parabola_in_inverse_width():
    widths = [10.0, 25.0, 50.0, 100.0, 400.0]
    stderrs = [0.0014, 0.0013, 0.0009, 0.0005, 0.0002]
    deviations = [0.0002 + 0.05 / n - 0.9 / n**2 for n in widths]  # exact: χ² = 0
    fit = fit_inverse_width(widths, deviations, stderrs, order=2)
    assert fit.status == "fit" and fit.dof == 2 and fit.order == 2
    assert fit.delta_infinity == pytest.approx(0.0002, abs=1e-12)
    assert fit.slope == pytest.approx(0.05, abs=1e-9)
    assert fit.curvature == pytest.approx(-0.9, abs=1e-7)
    assert fit.chi2 == pytest.approx(0.0, abs=1e-16)
    # Parameter errors from the explicit 3×3 inverse of Xᵀ W X.
    design = np.array([[1.0, 1 / n, 1 / n**2] for n in widths])
    weights = np.diag([1 / s**2 for s in stderrs])
    covariance = np.linalg.inv(design.T @ weights @ design)
    assert fit.delta_infinity_stderr == pytest.approx(math.sqrt(covariance[0, 0]))
    assert fit.curvature_stderr == pytest.approx(math.sqrt(covariance[2, 2]))
    assert fit.stderr(0.0) == pytest.approx(fit.delta_infinity_stderr)
    assert fit.value(0.1) == pytest.approx(deviations[0])
    assert "1/N + 1/N² fit over N = 10, 25, 50, 100, 400" in describe_fit(fit)
    assert "d = -0.9 ±" in describe_fit(fit)


def test_straight_line_fails_where_the_next_order_passes():
    """Curvature in 1/N: the straight line fails its χ² test and puts δ∞ many σ from the true
    zero; the next-order fit recovers zero. The order-1 fit through the same code path is
    unchanged (the normal-equation values of the first test)."""
    widths = [10.0, 25.0, 50.0, 100.0, 400.0]
    stderrs = [0.0004] * 5
    deviations = [0.08 / n - 2.0 / n**2 for n in widths]
    line = fit_inverse_width(widths, deviations, stderrs)
    parabola = fit_inverse_width(widths, deviations, stderrs, order=2)
    assert line.p_value is not None and line.p_value < 1e-6
    assert not line.consistent_with_zero
    assert parabola.delta_infinity == pytest.approx(0.0, abs=1e-12)
    assert parabola.consistent_with_zero


def test_next_order_needs_three_widths_and_a_known_order():
    two = fit_inverse_width([10.0, 20.0], [0.01, 0.005], [0.001, 0.001], order=2)
    assert two.status == "too few widths" and two.delta_infinity is None
    assert "sample at least three widths" in describe_fit(two)
    three = fit_inverse_width([10.0, 20.0, 40.0], [0.01, 0.005, 0.002], [0.001] * 3, order=2)
    assert three.status == "exactly determined" and three.dof == 0
    assert "exactly determined by three widths" in describe_fit(three)
    with pytest.raises(ValueError, match="order must be 1"):
        fit_inverse_width([10.0, 20.0, 40.0], [0.0] * 3, [0.001] * 3, order=3)


def test_a_problem_gets_the_next_order_fit_from_four_widths():
    def rows(widths: list[float]) -> list[ResultRow]:
        out = [_row(math.inf, theory=0.2)]
        for n in widths:
            out += [_row(n, theory=0.2), _row(n, network=0.2 + 0.1 / n - 0.5 / n**2,
                                             stderr=0.001)]
        return out
    (three,) = compare_networks(rows([10.0, 20.0, 40.0])).problems
    assert three.next_order_fit is None and three.to_dict()["next_order_fit"] is None
    (four,) = compare_networks(rows([10.0, 20.0, 40.0, 80.0])).problems
    assert four.next_order_fit is not None and four.next_order_fit.order == 2
    assert four.next_order_fit.curvature == pytest.approx(-0.5, abs=1e-6)
    assert four.to_dict()["next_order_fit"]["curvature"] == pytest.approx(-0.5, abs=1e-6)


def test_a_failed_straight_line_gives_no_verdict_on_the_limit():
    """explain_fit must not call a δ∞ 'agreement' (or 'a deviation that survives') when the
    straight line itself fails its χ² test."""
    fit = fit_inverse_width([10.0, 25.0, 50.0, 100.0, 400.0],
                            [0.08 / n - 2.0 / n**2 for n in (10, 25, 50, 100, 400)],
                            [0.0004] * 5)
    assert fit.p_value is not None and fit.p_value < 0.05
    assert "no verdict on the limit" in explain_fit(fit)
    good = fit_inverse_width([10.0, 20.0, 50.0], [-0.01, -0.005, -0.002], [0.001] * 3)
    assert "agrees with the theory" in explain_fit(good)
