"""`krenorm compare` chooses how the theory holds CNN kernel blocks by itself and shows how far
a long solve is (docs/scale.md §1, §4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krenorm.experiments import executors
from krenorm.experiments.compare import run_compare
from krenorm.experiments.config import parse_config
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.point_status import reporting_to, solver_reporter
from krenorm.experiments.runner import TheoryEngine, run_experiment
from krenorm.theory.solvers import SolverProgress


def _raw(**execution: object) -> dict:
    # 28×28 images, mask = stride = 7: 16 patches, 136 pair blocks of 24×24.
    return {
        "name": "engine",
        "data": {"dataset": "local-teacher", "n_train": 24, "n_test": 8, "seed": 1},
        "hyper": {"temperature": 0.1},
        "architectures": [{"kind": "cnn", "mask": 7, "stride": 7}],
        "theory": {"widths": [8]},
        "networks": {"widths": [16], "n_replicas": 2, "n_steps": 20},
        "execution": dict(execution),
    }


def _theory(result):  # type: ignore[no-untyped-def]
    estimate = result.find("cnn", "theory", 8.0)
    assert estimate is not None
    return estimate


@pytest.mark.slow
def test_compare_streams_where_stored_blocks_would_not_fit(tmp_path: Path) -> None:
    """136 blocks of 24×24 float64 take 627 kB: a 300 kB budget makes the fit stream them (and
    say so); the numbers are those of stored blocks."""
    stored = _theory(run_compare(parse_config(_raw()), tmp_path / "stored", progress=False,
                                 workers=0))
    streamed = _theory(run_compare(parse_config(_raw(memory_limit=300_000)),
                                   tmp_path / "streamed", progress=False, workers=0))
    assert stored.diagnostics["solver"]["blocks"]["mode"] == "stored"
    blocks = streamed.diagnostics["solver"]["blocks"]
    assert blocks["mode"] == "streamed" and "would not fit" in blocks["reason"]
    assert streamed.test_loss == pytest.approx(stored.test_loss, rel=0, abs=1e-10)
    assert streamed.diagnostics["solver"]["block_passes"] > 0


def test_memory_budget_from_the_environment_reaches_the_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without [execution] memory_limit the budget is $KRENORM_MEMORY_LIMIT (as for
    fit_theory): the pipeline picks streaming by itself."""
    monkeypatch.setenv("KRENORM_MEMORY_LIMIT", "300000")
    result = run_compare(parse_config(_raw()), tmp_path, progress=False, workers=0)
    assert _theory(result).diagnostics["solver"]["blocks"]["mode"] == "streamed"


def test_execution_settings_refuse_bad_engine_values() -> None:
    with pytest.raises(ConfigError, match="memory_limit"):
        parse_config(_raw(memory_limit=-1))
    with pytest.raises(ConfigError, match="block_scheduler"):
        parse_config(_raw(block_scheduler=3))
    config = parse_config(_raw(memory_limit=1e9, block_scheduler="tcp://head:8786"))
    assert config.execution.to_dict()["block_scheduler"] == "tcp://head:8786"
    options = TheoryEngine(memory_limit=10**9, scheduler="tcp://head:8786").fit_options()
    assert options["memory_limit"] == 10**9
    assert options["blocks"].scheduler == "tcp://head:8786"


def test_a_running_theory_point_reports_passes_and_gradient_norm() -> None:
    config = parse_config(_raw())
    spec = next(point for point in config.to_sweep().points if point.theory is not None
                and point.width == 8.0)
    lines: list[str] = []
    assert solver_reporter("x") is None  # no sink: reporting costs nothing
    with reporting_to(lines.append):
        run_experiment(spec, "cpu", TheoryEngine(memory_limit=300_000))
    assert lines and all(line.startswith("theory cnn N = ") for line in lines)
    assert "passes" in lines[0] and "‖∇S‖" in lines[0]


def test_pool_workers_report_through_a_status_file(tmp_path: Path) -> None:
    """What a pool worker's point reports lands in <beacon>/<pid>.status, which the driver reads
    (`point_statuses`), and is removed when the point ends."""
    status = tmp_path / f"{os.getpid()}.status"

    def point() -> str:
        report = solver_reporter("theory cnn N = 8")
        assert report is not None
        report(SolverProgress(evaluations=3, gradient_norm=1e-3, action=1.0, block_passes=6))
        return status.read_text()

    seen = executors._run_watched(str(tmp_path), "token", point)
    assert seen == "theory cnn N = 8: 3 evaluations, 6 passes, ‖∇S‖ = 1.00e-03, 0 s"
    assert not status.exists()
    pool = executors.ProcessPoolSweepExecutor.__new__(executors.ProcessPoolSweepExecutor)
    pool._beacon_dir = str(tmp_path)
    status.write_text("a line")
    assert pool.point_statuses() == ["a line"]
