"""Non-convergence, R̂ and the regime of validity surface in the console, report and figures
(docs/adaptive.md "Warnings and regime of validity")."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from krenorm.adaptive.figures import mark_flagged_points, plot_error_vs_chi
from krenorm.adaptive.study import (
    ExperimentConfig,
    MethodResult,
    PointResult,
    StudyConfig,
    StudyResult,
    _point_line,
    point_warnings,
    study_report,
    validity_note,
)


def _method(name: str, **details) -> MethodResult:
    return MethodResult(name, 1.0, 0.5, 0.5, 0.1, 0.3, math.nan, math.nan, details=details)


XOR = ExperimentConfig(name="xor", task="xor", activation="relu", n_train=10, n_test=8,
                       input_dim=5, width=6)  # fmt: skip
LINEAR = ExperimentConfig(name="lin", task="teacher", activation="identity", n_train=10,
                          n_test=8, input_dim=5, width=6)  # fmt: skip


def _xor_point(rhat: float, converged: bool, chi: float) -> PointResult:
    methods = (_method("network", rhat=rhat, warnings=[]),
               _method("tree-level", converged=converged, final_ess=12.0))  # fmt: skip
    return PointResult("xor", "mean-field", chi, 0.01, methods, 1.0)


def test_rhat_and_non_convergence_are_flagged():
    """The issue's XOR run: χ = N, tree-level not converged, R̂ = 1.23."""
    found = point_warnings(_xor_point(1.23, False, 6.0), XOR)
    assert len(found) == 2
    assert "R̂ = 1.23" in found[0]
    assert "tree-level solver did not converge" in found[1]
    assert point_warnings(_xor_point(1.01, True, 6.0), XOR) == ()


def test_validity_note_only_for_nonlinear_networks_at_standard_scaling():
    assert validity_note(LINEAR, 1.0) is None
    assert validity_note(XOR, 6.0) is None
    note = validity_note(XOR, 1.0)
    assert note is not None and "standard scaling" in note and "not validated" in note
    assert note in point_warnings(_xor_point(1.0, True, 1.0), XOR)


def test_warnings_reach_console_report_and_figure(tmp_path):
    point = _xor_point(1.23, False, 6.0)
    flagged = point_warnings(point, XOR)
    point = PointResult(*(getattr(point, f) for f in
                          ("experiment", "chi_label", "chi", "network_stderr", "methods",
                           "seconds")), warnings=flagged)  # fmt: skip
    clean = _xor_point(1.0, True, 2.0)
    result = StudyResult(StudyConfig("s", ("mean-field",), (XOR,)), (clean, point), 1.0)
    line = _point_line(point)
    assert line.count("WARNING") == 2 and "R̂ = 1.23" in line
    assert "WARNING" not in _point_line(clean)
    report = study_report(result, {})
    assert "## Warnings" in report and "did not converge" in report
    figure, axis = plt.subplots()
    assert mark_flagged_points(axis, result, "xor") == 1  # only the flagged χ
    plt.close(figure)
    path = plot_error_vs_chi(result, tmp_path / "error.png")
    assert path.stat().st_size > 0


@pytest.mark.parametrize("rhat", [float("nan")])
def test_undefined_rhat_is_flagged(rhat):
    assert any("R̂" in message for message in point_warnings(_xor_point(rhat, True, 6.0), XOR))
