"""A compare config that mixes activations: an [[architectures]] entry may name its own
`activation` (hyper.activation is the default of the others), validated by the shared
architecture validator; the erf rows of a mixed run equal those of an erf-only run bit for bit."""

import pytest

from krenorm.experiments.compare import run_compare
from krenorm.experiments.config import ConfigError, load_config, parse_config


def _raw(architectures):
    return {
        "name": "mixed",
        "data": {"dataset": "local-teacher", "n_train": 24, "n_test": 16, "seed": 1},
        "hyper": {"temperature": 0.1, "activation": "erf"},
        "architectures": architectures,
        "theory": {"widths": [8]},
        "networks": {"widths": [16], "n_replicas": 2, "n_steps": 30},
    }


ERF_CNN = {"kind": "cnn", "mask": 7, "stride": 7}
RELU_CNN = {"kind": "cnn", "mask": 7, "stride": 7, "activation": "relu"}


def test_an_architecture_entry_may_name_its_own_activation():
    config = parse_config(_raw([ERF_CNN, RELU_CNN, {"kind": "lcn", "mask": 7, "stride": 7,
                                                    "activation": "relu"}]))
    assert [spec.activation for spec in config.architectures] == ["erf", "relu", "relu"]
    activations = {spec.architecture.activation for spec in config.points}
    assert activations == {"erf", "relu"}


@pytest.mark.parametrize(("value", "message"), [
    ("swishy", r"architectures\[1\]\.activation = 'swishy'"),
    (3, r"architectures\[1\]\.activation must be a string"),
])
def test_a_bad_entry_activation_names_its_field(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw([ERF_CNN, {**RELU_CNN, "activation": value}]))


@pytest.mark.slow
def test_erf_rows_are_unchanged_by_a_relu_row(tmp_path):
    alone = run_compare(parse_config(_raw([ERF_CNN])), tmp_path / "erf", progress=False,
                        workers=0)
    mixed = run_compare(parse_config(_raw([ERF_CNN, RELU_CNN])), tmp_path / "mixed",
                        progress=False, workers=0)
    assert alone.sweep.failed == 0 and mixed.sweep.failed == 0

    def erf_rows(result):
        # Every column but the wall time of the point.
        return {row.spec_hash: {name: value for name, value in row.to_dict().items()
                                if name != "seconds"}
                for row in result.rows if row.activation == "erf"}

    assert erf_rows(alone) == erf_rows(mixed)  # same points, same numbers, bit for bit
    assert len(erf_rows(alone)) == 4  # the network at N = 16, the theory at N = 8, 16 and ∞
    relu = [row for row in mixed.rows if row.activation == "relu"]
    assert relu and all(row.theory is None or row.theory.converged is not False for row in relu)
    report = (tmp_path / "mixed" / "report.md").read_text()
    assert "activations erf, relu (per problem)" in report
    assert "stride 7×7, erf |" in report and "stride 7×7, relu |" in report


def test_shipped_demo_has_relu_cnn_and_lcn_rows_beside_erf():
    # The demo mixes both activations in one config; the CIFAR-10 ReLU CNN/LCN rows live in
    # examples/relu_study/cifar.toml (examples/lkr_cifar.toml keeps its committed report's rows).
    from krenorm.experiments.config import demo_config_path

    config = load_config(demo_config_path())
    relu = {spec.kind for spec in config.architectures if spec.activation == "relu"}
    assert relu == {"cnn", "lcn"}
    assert config.hyper.activation == "erf"
