"""The main job: config validation (field named before any work) and a tiny end-to-end run."""

import json
import math
from pathlib import Path

import pytest

from krenorm.experiments import figures
from krenorm.experiments.compare import run_compare
from krenorm.experiments.config import (
    ConfigError,
    check_image_shape,
    demo_config_path,
    load_config,
    parse_config,
)


def _raw(**overrides):
    raw = {
        "name": "tiny",
        "data": {"dataset": "local-teacher", "n_train": 24, "n_test": 16, "seed": 1},
        "hyper": {"temperature": 0.1},
        "architectures": [{"kind": "fc"}, {"kind": "cnn", "mask": 7, "stride": 7},
                          {"kind": "lcn", "mask": 7, "stride": 7}],
        "theory": {"widths": [8, 32]},
        "networks": {"widths": [16], "n_replicas": 2, "n_steps": 30},
        "retuned_priors": True,
    }
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"hyper": {"temperature": -1}}, "hyper.temperature"),
        ({"hyper": {"temprature": 0.1}}, "temprature"),
        ({"architectures": [{"kind": "rnn"}]}, "architectures[0].kind"),
        ({"theory": {"widths": []}}, "theory.widths"),
        ({"networks": {"widths": [10.5]}}, "networks.widths"),
        ({"data": {"n_train": 0}}, "data.n_train"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_configs_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_config(_raw(**override))


def test_mask_larger_than_the_images_is_refused_before_work():
    config = parse_config(_raw(architectures=[{"kind": "cnn", "mask": 40}]))
    with pytest.raises(ConfigError, match=r"architectures\[0\].*larger than"):
        check_image_shape(config, (1, 28, 28))


def test_shipped_configs_are_valid():
    demo = load_config(demo_config_path())
    assert {spec.kind for spec in demo.architectures} == {"fc", "cnn", "lcn"}
    # At least three sampled widths per architecture, so the 1/N fit of the deviations has a
    # degree of freedom left for its χ².
    assert all(len(demo.network_widths(spec.kind)) >= 3 for spec in demo.architectures)
    cifar = load_config(Path(__file__).parents[1] / "examples" / "lkr_cifar.toml")
    assert cifar.data.dataset == "cifar10" and cifar.retuned_priors


def test_tiny_compare_run_writes_tables_figures_and_report(tmp_path):
    result = run_compare(parse_config(_raw()), tmp_path, progress=False, workers=0)
    assert result.sweep.failed == 0
    sources = {(row.architecture, name, row.width) for row in result.rows
               for name in ("theory", "retuned", "network") if getattr(row, name) is not None}
    for kind in ("fc", "cnn", "lcn"):
        # N = ∞ is a width like any other: the theory point at math.inf is the NNGP limit.
        assert {(kind, "theory", math.inf), (kind, "theory", 8.0), (kind, "network", 16.0),
                (kind, "retuned", 32.0)} <= sources
        assert result.find(kind, "theory", math.inf).alpha == 0.0
    # Theory at the sampled width is always computed, so every network point has a partner.
    agreements = result.agreements()
    assert len(agreements) == 3
    for agreement in agreements:
        assert agreement.stderr > 0 and agreement.theory > 0
        assert agreement.z == pytest.approx(agreement.deviation / agreement.stderr)
    # One sampled width per architecture: no 1/N fit, and the report says so.
    assert {problem.fit.status for problem in result.agreement.problems} == {"one width"}
    # Retuned priors reproduce the finite-width FC and LCN theory exactly (docs/math/theory.md §3).
    for kind in ("fc", "lcn"):
        assert result.find(kind, "retuned", 32.0).test_loss == pytest.approx(
            result.find(kind, "theory", 32.0).test_loss, rel=1e-9)
    for name in ("results.csv", "results.json", "order_parameters.json", "report.md",
                 "test_loss_vs_alpha.png", "loss_vs_width.png", "deviation_vs_inverse_width.png",
                 "order_parameters_cnn.png", "order_parameters_lcn.png", "results.sqlite"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text()
    # One row in the agreement table and one in the sampler table, which carries the sampler's
    # own warnings (kept out of the terminal).
    assert report.count("| cnn | 16 |") == 2 and "deviation" in report.lower()
    assert "1/N fit: none (one width" in report
    assert "3 %" not in report and "agrees" not in report
    assert "## Sampler diagnostics" in report
    notes = [note for row in result.rows if row.network is not None
             for note in row.network.diagnostics["warnings"]]
    assert notes and all(note in report for note in notes)  # the tiny chains are short
    payload = json.loads((tmp_path / "results.json").read_text())
    assert len(payload["agreements"]) == 3
    assert len(json.loads((tmp_path / "order_parameters.json").read_text())["cnn"]["theory"]) == 3
    # Rerunning finds every point in the store: nothing is computed twice, same report.
    again = run_compare(parse_config(_raw()), tmp_path, progress=False, workers=0)
    assert again.sweep.completed == 0 and again.sweep.skipped == len(result.rows)
    assert (tmp_path / "report.md").read_text() == report


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"retuned_priors": "no"}, "retuned_priors must be true or false"),
        ({"data": {"dataset": "mnist", "n_train": 10, "n_test": 5, "classes": 5}},
         "data.classes must be a list"),
        ({"data": {"dataset": "local-teacher", "n_train": 10, "n_test": 5, "classes": [0, 1]}},
         "data.classes is not an option of dataset 'local-teacher'"),
        ({"networks": {"widths": [16], "sampler": "gibbs"}}, "networks.sampler"),
        ({"networks": {"widths": [16], "n_steps": 100, "burn_in": 100}}, "networks.burn_in"),
        ({"networks": {"widths": [16], "seed": -1}}, "networks.seed"),
        ({"networks": {"widths": [16], "thin": 500, "n_steps": 100}}, "networks.thin"),
        ({"networks": {"widths": [16], "n_chains": 4}}, "n_chains"),
        ({"theory": {"widths": [8], "solver": "magic"}}, "theory.solver"),
        ({"theory": {"widths": [8, -1]}}, r"theory.widths[1]"),
        ({"architectures": [{"kind": "cnn", "network_widths": 5}]},
         "architectures[0].network_widths"),
        ({"execution": {"device": "tpu"}}, "execution.device"),
    ],
)
def test_compare_configs_are_validated_like_sweeps(override, message):
    """The same constructors (SamplerSettings, TheorySettings, DataSpec, ArchitectureSpec)
    check compare and sweep configs; the message names the TOML field."""
    with pytest.raises(ConfigError) as error:
        parse_config(_raw(**override))
    assert message in str(error.value)


def test_bad_data_option_is_refused_before_any_work(tmp_path):
    """An option only the loader can check (grayscale must be a bool) fails when the driver
    loads the data, before the store exists or any point runs."""
    config = parse_config(_raw(data={"dataset": "local-teacher", "n_train": 24, "n_test": 16,
                                     "noise": -1.0}))
    with pytest.raises(ConfigError, match=r"data\.noise"):
        run_compare(config, tmp_path, progress=False, workers=0)
    assert not (tmp_path / "results.sqlite").exists()


def test_compare_expands_to_sweep_points():
    """A compare config is a fixed sweep: networks at their widths, the theory (with retuned
    priors) on theory.widths ∪ sampled widths, and N = ∞ as a width of its own."""
    config = parse_config(_raw())
    sweep = config.to_sweep("runs/x")
    assert sweep.db == "runs/x/results.sqlite" and sweep.name == "tiny"
    points = sweep.points
    networks = [p for p in points if p.network is not None]
    assert {(p.architecture.kind, p.width) for p in networks} == {
        ("fc", 16.0), ("cnn", 16.0), ("lcn", 16.0)}
    assert all(p.theory is None and p.network.n_steps == 30 for p in networks)
    theory = [p for p in points if p.theory is not None]
    assert sorted({p.width for p in theory}) == [8.0, 16.0, 32.0, math.inf]
    for point in theory:
        assert point.theory.retuned_priors == (not math.isinf(point.width))
        assert not point.theory.infinite  # N = ∞ is its own point, not a per-point extra
    assert len({p.content_hash for p in points}) == len(points) == 3 * (1 + 4)


# warnings.catch_warnings is not thread-safe: Dask worker threads may let the sampler's notes on
# the deliberately short chains through (they are in the report either way).
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_compare_runs_on_a_dask_cluster(tmp_path):
    """`run_compare(..., scheduler=...)` sends the same points to Dask; the numbers match an
    in-process run (theory to rounding, sampled networks exactly: same seeds)."""
    distributed = pytest.importorskip("distributed")
    raw = _raw(architectures=[{"kind": "fc"}, {"kind": "lcn", "mask": 7, "stride": 7}])
    inline = run_compare(parse_config(raw), tmp_path / "inline", progress=False, workers=0)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        dask = run_compare(parse_config(raw), tmp_path / "dask", progress=False,
                           scheduler=cluster.scheduler_address)
    assert "Dask" in dask.sweep.executor and dask.sweep.completed == len(inline.rows)
    for left, right in zip(inline.rows, dask.rows, strict=True):
        assert left.spec_hash == right.spec_hash
        for source in ("theory", "retuned", "network"):
            a, b = getattr(left, source), getattr(right, source)
            assert (a is None) == (b is None)
            if a is not None:
                assert b.test_loss == pytest.approx(a.test_loss, rel=1e-9)


def test_figures_separate_two_masks_of_one_architecture(tmp_path, monkeypatch):
    """Two CNN masks in one config: the order-parameter figure has one block of rows per mask,
    each titled with its mask, and the kernel-alignment figure one curve per mask (a figure
    that showed only the first mask, unnamed, was a defect)."""
    raw = _raw(architectures=[{"kind": "cnn", "mask": 7, "stride": 7},
                              {"kind": "cnn", "mask": 10, "stride": 6}],
               theory={"widths": [8]}, retuned_priors=False)
    result = run_compare(parse_config(raw), tmp_path, progress=False, workers=0)
    saved: list = []
    monkeypatch.setattr(figures, "_save", lambda figure, path, **_: saved.append(figure) or path)
    figures.plot_order_parameters(result.rows, "cnn", tmp_path / "q.png")
    titles = [axis.get_title() for axis in saved[-1].axes if axis.get_visible()]
    for mask in ("mask 7, stride 7", "mask 10, stride 6"):
        assert sum(mask in title for title in titles) == 2, titles  # theory and network
    assert figures.plot_kernel_alignment(result.rows, tmp_path / "k.png") is not None
    labels = saved[-1].axes[0].get_legend_handles_labels()[1]
    for mask in ("mask 7, stride 7", "mask 10, stride 6"):
        assert any(mask in label and "posterior" in label for label in labels), labels
