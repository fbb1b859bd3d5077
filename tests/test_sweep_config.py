"""Sweep configs: grid and list expansion, stable content hashes, and bad configs refused before
any work starts with a message naming the field (docs/architecture.md "Scale"; docs/sweeps.md)."""

import copy

import pytest
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.experiments.config import ConfigError
from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.sweep import run_sweep
from krenorm.experiments.sweep_config import load_sweep_config, parse_sweep_config

BASE = {
    "name": "grid",
    "data": {"dataset": "fc-teacher", "n_train": [10, 20], "n_test": 8, "seed": [0, 1],
             "options": {"dimension": 4, "noise": 0.1}},
    "hyper": {"width": [5, 10, 20], "temperature": 0.1},
    "architectures": [{"kind": "fc"}],
}


# spec_version 3 (leapfrog_steps in the sampler settings); under spec_version 2 this point hashed
# to 36bc9a06…b37265e, under spec_version 1 to 342fc49e…4243409.
PINNED_HASH = "6b8f71c927ff94dd9d28200b41a7d6db214eef7a0b38dc43f41708bff8432d15"


def _with(path: str, value):
    """BASE with one dotted field replaced (or removed when value is ...)."""
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    table = raw
    for key in parents:
        table = table.setdefault(key, {})
    if value is ...:
        del table[last]
    else:
        table[last] = value
    return raw


def test_grid_is_the_product_of_axes_and_architectures():
    config = parse_sweep_config(_with("architectures", [{"kind": "fc"}, {"kind": "fc"}]))
    # 2 P × 2 seeds × 3 widths; the repeated architecture adds nothing (same hashes).
    assert len(config.points) == 12
    assert len({point.content_hash for point in config.points}) == 12
    assert {(p.data.n_train, p.data.seed, p.width) for p in config.points} == {
        (n, s, w) for n in (10, 20) for s in (0, 1) for w in (5.0, 10.0, 20.0)}


def test_points_list_overrides_the_base_and_may_hold_axes():
    raw = copy.deepcopy(BASE)
    raw["data"]["n_train"] = 10
    raw["points"] = [{"hyper": {"width": [5, 10]}},
                     {"hyper": {"width": 50, "temperature": 0.5}, "data": {"seed": 3}}]
    config = parse_sweep_config(raw)
    widths = [(p.width, p.temperature, p.data.seed) for p in config.points]
    # Config order: data axes outermost, then hyper, architectures, network (last fastest).
    assert widths == [(5.0, 0.1, 0), (10.0, 0.1, 0), (5.0, 0.1, 1), (10.0, 0.1, 1),
                      (50.0, 0.5, 3)]


def test_content_hash_is_stable_and_round_trips():
    config = parse_sweep_config(BASE)
    point = config.points[0]
    # Same numbers written differently (int vs float width) give the same experiment.
    again = parse_sweep_config(_with("hyper.width", [5.0, 10.0, 20.0])).points[0]
    assert again == point and again.content_hash == point.content_hash
    assert hash(point) == hash(again)
    restored = ExperimentSpec.from_dict(point.to_dict())
    assert restored == point and restored.content_hash == point.content_hash
    # Pinned: SHA-256 of canonical JSON does not depend on the process, the machine or
    # PYTHONHASHSEED; if this changes, stored results no longer match their configs (bump
    # SPEC_VERSION when a spec field changes meaning).
    assert point.content_hash == PINNED_HASH
    # Changing any hyper-parameter changes the hash.
    assert parse_sweep_config(_with("hyper.temperature", 0.2)).points[0].content_hash != (
        point.content_hash)


@pytest.mark.parametrize(("path", "value", "field"), [
    ("hyper.width", [5, -1], "hyper.width[1]"),
    ("hyper.width", ..., "hyper.width"),
    ("hyper.temperature", 0, "hyper.temperature"),
    ("hyper.lambda0", "one", "hyper.lambda0"),
    ("data.n_train", [10, 2.5], "data.n_train[1]"),
    ("data.dataset", "imagenet", "data.dataset"),
    ("data.options", {"dimenson": 4}, "data.options.dimenson"),
    ("data.colour", True, "colour"),
    ("architectures", [{"kind": "transformer"}], "architectures[0].kind"),
    ("architectures", [{"kind": "cnn", "mask": 0}], "architectures[0]"),
    ("architectures", [], "architectures"),
    ("theory.solver", "magic", "theory.solver"),
    ("theory.tolerance", [1e-9, 1e-6], "theory.tolerance"),
    ("network.sampler", "gibbs", "network.sampler"),
    ("network.n_steps", 0, "network.n_steps"),
    ("execution.retries", -1, "execution.retries"),
    ("execution.device", "tpu", "execution.device"),
    ("hyper.activation", "softsign", "hyper.activation"),
])
def test_bad_field_is_named(path, value, field):
    with pytest.raises(ConfigError) as error:
        parse_sweep_config(_with(path, value))
    assert field in str(error.value)


def test_network_widths_must_be_integers():
    raw = _with("hyper.width", [5, 7.5])
    raw["network"] = {"n_steps": 10}
    with pytest.raises(ConfigError, match=r"hyper\.width = 7\.5"):
        parse_sweep_config(raw)


def test_bad_points_entry_is_named():
    raw = copy.deepcopy(BASE)
    raw["points"] = [{"hyper": {"width": 5}}, {"hyper": {"temperature": -1}}]
    with pytest.raises(ConfigError, match=r"points\[1\]\.hyper\.temperature"):
        parse_sweep_config(raw)


CONV_ON_VECTORS = """
name = "conv-on-vectors"
[data]
dataset = "fc-teacher"
n_train = 10
n_test = 5
options = { dimension = 4 }
[hyper]
width = 5
[[architectures]]
kind = "fc"
[[architectures]]
kind = "cnn"
mask = 2
"""

MASK_TOO_LARGE = """
name = "mask-too-large"
[data]
dataset = "local-teacher"
n_train = 10
n_test = 5
options = { image_shape = [1, 4, 4], mask = 2, stride = 2 }
[hyper]
width = 5
[[architectures]]
kind = "lcn"
mask = 5
"""


@pytest.mark.parametrize(("text", "fields"), [
    (CONV_ON_VECTORS, ("architectures[1].kind", "data.dataset")),
    (MASK_TOO_LARGE, ("architectures[0].mask", "data.dataset")),
    ("name = 'x'\n[data]\ndataset = 'fc-teacher'\nn_train = 4\nn_test = 2\n[hyper]\nwidth = 3"
     "\n[[architectures]]\nkind = 'fc'\nkernel = 3\n", ("architectures[0]", "kernel")),
    ("name = 'x'\n[data\n", ("line",)),
])
def test_bad_config_fails_before_any_work(tmp_path, text, fields):
    """Data-dependent problems are found by loading each data set once in the driver; nothing
    is written (the store does not even exist) and no worker starts."""
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    db = tmp_path / "store.sqlite"
    with pytest.raises(ConfigError) as error:
        run_sweep(path, db=db, workers=2, progress=False)
    for field in fields:
        assert field in str(error.value)
    assert not db.exists()


def test_cli_reports_the_field_and_exits_2(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(CONV_ON_VECTORS)
    result = CliRunner().invoke(app, ["sweep", str(path), "--db", str(tmp_path / "s.db"),
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 2
    assert "architectures[1].kind" in result.output
    assert not (tmp_path / "s.db").exists()


def test_example_config_is_valid():
    config = load_sweep_config("examples/sweep_theory.toml", check_data=False)
    assert len(config.points) >= 10
    assert {point.architecture.kind for point in config.points} >= {"fc", "cnn", "lcn"}
