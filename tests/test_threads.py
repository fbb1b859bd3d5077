"""Thread-count rules (docs/scale.md §2)."""

from __future__ import annotations

import pytest
import torch

from krenorm.threads import apply_threads, configured_threads, thread_limit


def test_explicit_then_krenorm_then_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KRENORM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert configured_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert configured_threads() == 3
    monkeypatch.setenv("KRENORM_THREADS", "2")
    assert configured_threads() == 2
    assert configured_threads(1) == 1


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRENORM_THREADS", "many")
    with pytest.raises(ValueError, match="KRENORM_THREADS"):
        configured_threads()
    with pytest.raises(ValueError, match="threads"):
        configured_threads(0)


def test_thread_limit_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KRENORM_THREADS", raising=False)
    previous = torch.get_num_threads()
    target = 1 if previous != 1 else 2
    with thread_limit(target) as used:
        assert used == target == torch.get_num_threads()
    assert torch.get_num_threads() == previous
    monkeypatch.setenv("KRENORM_THREADS", str(target))
    try:
        assert apply_threads() == target
    finally:
        torch.set_num_threads(previous)


def test_cli_applies_krenorm_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from krenorm.cli import app

    previous = torch.get_num_threads()
    runner = typer_testing.CliRunner()
    try:
        result = runner.invoke(app, ["data", "--json"], env={"KRENORM_THREADS": "1"})
        assert result.exit_code == 0 and torch.get_num_threads() == 1
        bad = runner.invoke(app, ["data", "--json"], env={"KRENORM_THREADS": "zero"})
        assert bad.exit_code == 2 and "KRENORM_THREADS" in bad.output
    finally:
        torch.set_num_threads(previous)
