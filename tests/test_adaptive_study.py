"""`krenorm adaptive` end to end on a tiny config, and config validation."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from krenorm.adaptive.study import StudyConfig, kernel_alignment, teacher_overlap
from krenorm.cli import app

TINY = """
[study]
name = "tiny"
chi = ["standard", "mean-field"]
[solver]
n_particles = 1024
[sampling]
n_replicas = 2
n_steps = 120
thin = 2
[[experiment]]
name = "lin"
task = "teacher"
activation = "identity"
n_train = 10
n_test = 8
input_dim = 5
width = 6
kappa = 0.1
[[experiment]]
name = "erf"
task = "hermite"
activation = "erf"
n_train = 10
n_test = 8
input_dim = 5
width = 6
kappa = 0.1
"""


def test_cli_runs_tiny_study_and_writes_report(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    output = tmp_path / "out"
    threads = torch.get_num_threads()
    result = CliRunner().invoke(app, ["adaptive", str(config), "--output", str(output)])
    assert result.exit_code == 0, result.output
    for name in ("report.md", "results.json", "error_vs_chi.png", "alignment_vs_chi.png",
                 "teacher_vs_chi.png"):  # fmt: skip
        assert (output / name).stat().st_size > 0
    results = json.loads((output / "results.json").read_text())
    assert len(results["points"]) == 4
    methods = {m["method"] for m in results["points"][0]["methods"]}
    assert methods == {"network", "nngp", "corrected", "tree-level", "full-saddle", "oracle"}
    erf_methods = {m["method"] for m in results["points"][2]["methods"]}
    assert erf_methods == {"network", "nngp", "corrected", "tree-level", "full-saddle"}
    report = (output / "report.md").read_text()
    assert "| 6 (mean-field) | tree-level |" in report
    assert torch.get_num_threads() == threads  # the study's thread setting is restored


def test_config_errors_name_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(TINY.replace("kappa = 0.1\n[[experiment]]", "kapa = 0.1\n[[experiment]]"))
    with pytest.raises(ValueError, match="kapa"):
        StudyConfig.from_toml(config)
    result = CliRunner().invoke(app, ["adaptive", str(config)])
    assert result.exit_code == 2
    with pytest.raises(ValueError, match="no study config"):
        StudyConfig.from_toml(tmp_path / "missing.toml")


def test_alignment_and_overlap_metrics():
    y = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    assert kernel_alignment(torch.outer(y, y), y) == pytest.approx(1.0)
    assert kernel_alignment(torch.eye(3, dtype=torch.float64), y) == pytest.approx(
        float(y @ y) / (3**0.5 * float(y @ y))
    )
    covariance = torch.diag(torch.tensor([1.0, 5.0, 1.0], dtype=torch.float64))
    teacher = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    assert teacher_overlap(covariance, teacher) == pytest.approx(1.0)
    assert teacher_overlap(covariance, torch.tensor([[1.0, 0.0, 0.0]])) == pytest.approx(0.0)
    assert teacher_overlap(covariance, None) != teacher_overlap(covariance, None)  # NaN
