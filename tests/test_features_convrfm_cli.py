"""`krenorm convrfm` (docs/features.md "krenorm convrfm")."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.features.convrfm_experiment import load_splits, run_convrfm_experiment


def test_cli_deep_convrfm_with_a_row_mask_at_level_two(tmp_path):
    result = CliRunner().invoke(app, [
        "convrfm", "--data", "bars", "--n-train", "40", "--n-val", "20", "--n-test", "40",
        "--depth", "2", "--mask", "3;1x14", "--n-filters", "4", "--out", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fixed kernel" in result.output and "ConvRFM depth 2" in result.output
    data = json.loads((tmp_path / "convrfm.json").read_text())
    assert data["settings"]["n_fit"] == 40 and data["settings"]["n_test"] == 40
    assert len(data["levels"]) == 2
    for level in (1, 2):
        assert (tmp_path / f"metric_level{level}.png").stat().st_size > 0
    refused = CliRunner().invoke(app, ["convrfm", "--data", "svhn", "--out", str(tmp_path)])
    assert refused.exit_code == 2 and "data must be one of" in refused.output


def test_cli_convrfm_with_the_multi_layer_nngp_kernel(tmp_path):
    """--kernel deep-nngp with --deep-layers reaches both the fixed kernel and the ConvRFM."""
    result = CliRunner().invoke(app, [
        "convrfm", "--data", "star", "--n-train", "30", "--n-val", "15", "--n-test", "30",
        "--kernel", "deep-nngp", "--mask", "2", "--deep-layers", "2", "--readout", "flatten",
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "convrfm.json").read_text())["settings"]
    assert settings["kernel"] == "deep-nngp"
    assert settings["deep_layers"] == ["2"] and settings["readout"] == "flatten"


def test_splits_are_disjoint_draws_and_selection_uses_validation_only():
    """Synthetic splits are independent seeded draws; the reported validation accuracy is the
    selected predictor's accuracy on the validation split (so the test split chose nothing)."""
    splits = load_splits("star", 40, 20, 30, seed=3)
    assert not torch.equal(splits.x_fit[:20], splits.x_val)
    experiment = run_convrfm_experiment(splits, depth=1, rounds=1, mask=7, ridges=(1e-2,))
    for run in (experiment.baseline, experiment.learned):
        assert 0 <= run.validation_accuracy <= 1 and 0 <= run.test_accuracy <= 1
        assert run.test_stderr > 0 or run.test_accuracy in (0.0, 1.0)
