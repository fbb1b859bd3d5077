"""One sweep point (theory and sampled network), retries with the error stored, device
selection, and `krenorm report` from the store (docs/sweeps.md)."""

import pytest
import torch
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.experiments import sweep as sweep_module
from krenorm.experiments.config import ConfigError
from krenorm.experiments.runner import resolve_device, run_experiment
from krenorm.experiments.store import ResultsStore
from krenorm.experiments.sweep import run_sweep
from krenorm.experiments.sweep_config import parse_sweep_config

RAW = {
    "name": "runner",
    "execution": {"retries": 1},
    "data": {"dataset": "fc-teacher", "n_train": 8, "n_test": 6, "seed": 0,
             "options": {"dimension": 3, "noise": 0.1}},
    "hyper": {"width": [4, 16], "temperature": 0.1},
    "architectures": [{"kind": "fc"}],
}


# The chain is deliberately far too short to converge (speed); the sampler says so.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_theory_and_network_point_metrics_and_provenance():
    raw = {**RAW, "network": {"sampler": "collapsed", "n_replicas": 2, "n_steps": 30,
                              "seed": 1}}
    spec = parse_sweep_config(raw).points[0]
    outcome = run_experiment(spec, device="cpu")
    metrics = outcome.metrics
    for prefix in ("theory", "theory_infinite", "network"):
        loss = metrics[f"{prefix}.test_loss"]
        assert loss > 0
        assert loss == pytest.approx(metrics[f"{prefix}.bias2"] + metrics[f"{prefix}.variance"])
    assert metrics["theory.converged"] is True
    assert metrics["theory.alpha"] == pytest.approx(8 / 4)
    assert metrics["network.test_loss_stderr"] > 0
    provenance = outcome.provenance
    assert provenance["spec_hash"] == spec.content_hash
    assert provenance["device"] == "cpu" and provenance["theory_device"] == "cpu"
    assert len(provenance["data_sha256"]) == 64
    assert provenance["data"]["dataset"] == "synthetic-fc"
    # Pure in the spec: the same point gives the same metrics.
    assert run_experiment(spec).metrics == metrics


def test_device_selection(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")
        config = parse_sweep_config({**RAW, "execution": {"device": "cuda"}})
        with pytest.raises(ConfigError, match=r"execution\.device"):
            run_sweep(config, db=tmp_path / "never.sqlite", workers=0, progress=False)
        assert not (tmp_path / "never.sqlite").exists()


def test_failed_point_is_retried_and_its_error_kept(tmp_path, monkeypatch):
    """The first run of the first point raises: with retries = 1 it is run again in the same
    invocation and recorded; with retries = 0 it stays failed (error stored) until a resume."""
    config = parse_sweep_config(RAW)
    flaky = config.points[0].content_hash
    calls = []

    def sometimes_failing(spec, device):
        calls.append(spec.content_hash)
        if spec.content_hash == flaky and calls.count(flaky) == 1:
            raise RuntimeError("transient failure for the test")
        return run_experiment(spec, device)

    monkeypatch.setattr(sweep_module, "run_experiment", sometimes_failing)
    db = tmp_path / "retry.sqlite"
    result = run_sweep(config, db=db, workers=0, progress=False)
    assert (result.completed, result.failed, result.retries) == (2, 0, 1)
    with ResultsStore(db) as store:
        attempts = store.attempts(flaky)
        assert [a.outcome for a in attempts] == ["failed", "done"]
        assert "transient failure for the test" in attempts[0].error
        attempts_per_point = {r.spec_hash: r.attempts for r in store.records("runner")}
        assert attempts_per_point[flaky] == 2
        assert sorted(attempts_per_point.values()) == [1, 2]

    calls.clear()
    no_retry = parse_sweep_config({**RAW, "name": "no-retry", "execution": {"retries": 0}})
    db = tmp_path / "no_retry.sqlite"
    result = run_sweep(no_retry, db=db, workers=0, progress=False)
    assert (result.completed, result.failed) == (1, 1)
    with ResultsStore(db) as store:
        failed = store.records(status="failed")
        assert [r.spec_hash for r in failed] == [flaky]
        assert "RuntimeError: transient failure for the test" in failed[0].error
    resumed = run_sweep(no_retry, db=db, workers=0, progress=False)
    assert (resumed.skipped, resumed.completed, resumed.failed) == (1, 1, 0)


def test_report_command_prints_tables_and_writes_figure(tmp_path):
    db = tmp_path / "report.sqlite"
    run_sweep(parse_sweep_config(RAW), db=db, workers=0, progress=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "finished points" in result.output and "done" in result.output
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 and lines[0].startswith("spec_hash,dataset")
    assert (out / "loss_vs_width.png").stat().st_size > 0
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "absent.sqlite")])
    assert missing.exit_code == 2
