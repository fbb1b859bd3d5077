"""Depth in compare (and sweep) configs: validated by the shared validator, depth 1 unchanged,
deep points run through the one pipeline and reported with the depth section."""

from __future__ import annotations

import math

import pytest

from krenorm.architectures import ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.compare import run_compare
from krenorm.experiments.config import ConfigError, parse_config
from krenorm.experiments.spec import DataSpec, ExperimentSpec, TheorySettings
from krenorm.networks.settings import SamplerSettings


def _raw(architectures, **overrides):
    raw = {
        "name": "deep-tiny",
        "data": {"dataset": "local-teacher", "n_train": 24, "n_test": 16, "seed": 1},
        "hyper": {"temperature": 0.1, "lambda1": 2.0},
        "architectures": architectures,
        "theory": {"widths": [8]},
        "networks": {"widths": [8, 16], "n_replicas": 4, "n_steps": 40, "burn_in": 10,
                     "sampler": "collapsed-hmc", "leapfrog_steps": 3},
    }
    raw.update(overrides)
    return raw


def test_depth_one_is_the_one_layer_spec_with_the_same_hashes():
    plain = parse_config(_raw([{"kind": "fc"}, {"kind": "cnn", "mask": 7, "stride": 7}]))
    explicit = parse_config(_raw([{"kind": "fc", "depth": 1},
                                  {"kind": "cnn", "depth": 1,
                                   "layers": [{"mask": 7, "stride": 7}]}]))
    assert all(isinstance(spec, ArchitectureSpec) for spec in explicit.architectures)
    assert [p.content_hash for p in plain.points] == [p.content_hash for p in explicit.points]


def test_deep_entries_give_deep_specs_that_round_trip():
    config = parse_config(_raw([{"kind": "fc", "depth": 3},
                                {"kind": "cnn", "depth": 2,
                                 "layers": [{"mask": 3, "stride": 2}, {"mask": 2}]}]))
    fc, cnn = config.architectures
    assert isinstance(fc, DeepArchitectureSpec) and fc.depth == 3
    assert isinstance(cnn, DeepArchitectureSpec) and [g.mask for g in cnn.geometries] == [
        (3, 3), (2, 2)]
    for point in config.points:
        again = ExperimentSpec.from_dict(point.to_dict())
        assert again == point and again.content_hash == point.content_hash
    one_layer = parse_config(_raw([{"kind": "fc"}]))
    assert not {p.content_hash for p in one_layer.points} & {p.content_hash
                                                           for p in config.points}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "cnn", "depth": 2}, "architectures[0].layers is missing"),
        ({"kind": "cnn", "depth": 2, "layers": [{"mask": 3}]},
         "architectures[0].layers must be a list of 2"),
        ({"kind": "cnn", "depth": 2, "mask": 3, "layers": [{"mask": 3}, {"mask": 2}]},
         "in layers only"),
        ({"kind": "cnn", "depth": 2, "layers": [{"mask": 3, "colour": 1}, {"mask": 2}]},
         "architectures[0].layers[0]"),
        ({"kind": "fc", "depth": 0}, "architectures[0].depth"),
        ({"kind": "fc", "depth": 2, "layers": [{}, {}]}, "architectures[0].layers"),
    ],
)
def test_bad_depth_entries_name_the_field(entry, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(_raw([entry]))


def test_deep_points_refuse_what_they_cannot_compute():
    data = DataSpec("local-teacher", 24, 16, 1)
    spec = DeepArchitectureSpec("fc", "erf", 2)
    with pytest.raises(ConfigError, match="retuned_priors"):
        ExperimentSpec(data, spec, 8.0, 0.1, theory=TheorySettings(retuned_priors=True))
    with pytest.raises(ConfigError, match="n_replicas"):
        ExperimentSpec(data, spec, 8.0, 0.1, theory=None,
                       network=SamplerSettings(n_replicas=2, n_steps=10))
    # retuned_priors of a compare config applies to its one-layer architectures only
    config = parse_config(_raw([{"kind": "fc"}, {"kind": "fc", "depth": 2}],
                               retuned_priors=True))
    assert any(p.theory is not None and p.theory.retuned_priors for p in config.points)


@pytest.mark.slow
def test_a_compare_run_with_depth_reports_deviation_per_depth(tmp_path):
    config = parse_config(_raw([{"kind": "fc"}, {"kind": "fc", "depth": 2},
                                {"kind": "cnn", "depth": 2,
                                 "layers": [{"mask": 7, "stride": 7}, {"mask": 2}]}]))
    result = run_compare(config, tmp_path, progress=False, workers=0)
    assert result.sweep.failed == 0
    deep = [row for row in result.rows if isinstance(row.spec.architecture,
                                                     DeepArchitectureSpec)]
    assert {row.spec.architecture.kind for row in deep} == {"fc", "cnn"}
    for row in deep:
        if row.network is not None:
            assert row.network.test_loss_stderr > 0
            assert row.network.diagnostics["starts"]["threshold"] == 3.0
            assert row.network.diagnostics["train_loss"] > 0
        if row.theory is not None and math.isinf(row.width):
            assert row.theory.alpha == 0.0
    # every sampled point (one-layer and deep) has its theory partner and a 1/N fit per depth
    assert len(result.agreements()) == 6 and not result.agreement.unmatched
    report = (tmp_path / "report.md").read_text()
    assert "## Depth: theory vs sampled deep networks" in report
    assert "| 2 | 1/N fit over N = 8, 16" in report
    assert (tmp_path / "deviation_vs_depth.png").is_file()


def test_an_entry_may_set_its_own_activation():
    config = parse_config(_raw([{"kind": "fc"}, {"kind": "fc", "activation": "relu",
                                                 "depth": 2}]))
    assert [spec.activation for spec in config.architectures] == ["erf", "relu"]
    with pytest.raises(ConfigError, match=r"architectures\[1\].activation"):
        parse_config(_raw([{"kind": "fc"}, {"kind": "fc", "activation": "swishy"}]))
    with pytest.raises(ConfigError, match=r"architectures\[0\].activation"):
        parse_config(_raw([{"kind": "fc", "activation": "swishy", "depth": 2}]))
