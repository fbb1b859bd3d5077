"""`krenorm compare`, `krenorm demo` and `krenorm report` from the command line: one pipeline,
the same report from a compare run and from its store, bad configs refused with exit status 2
before any work."""

import pytest
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.experiments import config as config_module

TINY = """
name = "tiny-cli"
[data]
dataset = "local-teacher"
n_train = 16
n_test = 8
image_shape = [1, 6, 6]
mask = 3
stride = 3
[hyper]
temperature = 0.1
[[architectures]]
kind = "fc"
network_widths = [4, 8, 16]
[[architectures]]
kind = "lcn"
mask = 3
stride = 3
network_widths = [4, 8]
[theory]
widths = [4, 32]
[networks]
n_replicas = 2
n_steps = 30
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


# The tiny chains are far too short; the sampler says so in the report's sampler table.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_compare_prints_deviations_and_resumes(tiny, tmp_path):
    output = tmp_path / "run"
    result = CliRunner().invoke(app, ["compare", str(tiny), "--output-dir", str(output),
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "deviation" in result.output and "σ" in result.output
    assert "1/N fit over N = 4, 8, 16" in result.output  # three FC widths: a real fit
    assert "exactly determined by two widths" in result.output  # two LCN widths
    assert "15 points computed now, 0 already in the store" in result.output
    for name in ("report.md", "results.csv", "deviation_vs_inverse_width.png",
                 "results.sqlite"):
        assert (output / name).is_file(), name
    again = CliRunner().invoke(app, ["compare", str(tiny), "--output-dir", str(output),
                                     "--workers", "0", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "0 points computed now, 15 already in the store" in again.output
    # `krenorm report` on the compare store writes the same report.
    report_dir = tmp_path / "from_store"
    report = CliRunner().invoke(app, ["report", str(output / "results.sqlite"), "--out",
                                      str(report_dir)])
    assert report.exit_code == 0, report.output
    assert "1/N fit" in report.output
    assert (report_dir / "report.md").read_text() == (output / "report.md").read_text()


def test_compare_refuses_a_bad_config_before_any_work(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace("n_steps = 30", "n_steps = 30\nburn_in = 40"))
    result = CliRunner().invoke(app, ["compare", str(path), "--output-dir", str(tmp_path / "o"),
                                      "--workers", "0"])
    assert result.exit_code == 2
    assert "networks.burn_in" in result.output
    assert not (tmp_path / "o").exists()
    both = CliRunner().invoke(app, ["compare", str(path.with_name("tiny.toml")), "--workers",
                                    "1", "--scheduler", "tcp://nowhere:8786"])
    assert both.exit_code == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_demo_runs_the_shipped_config_path(tiny, tmp_path, monkeypatch):
    """`krenorm demo` is `krenorm compare` on demo_config_path() (here a tiny stand-in)."""
    monkeypatch.setattr(config_module, "demo_config_path", lambda: tiny)
    result = CliRunner().invoke(app, ["demo", "--output-dir", str(tmp_path / "demo"),
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "report.md").is_file()
