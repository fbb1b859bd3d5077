"""The LKR study's report layer on a hand-made study (no data set, no solver): the headline gap
is min over the λ1 grid of ε_g(N) minus the infinite-width oracle, and the figures are written."""

from __future__ import annotations

import pytest

from krenorm.experiments.lkr_report import gap_maps, headline, q_bar_maps


def _study():
    settings = {"temperatures": [0.05], "lambda1s": [1.0, 4.0], "alphas": [0.5, 2.0],
                "architectures": ["cnn", "fc"]}
    losses = {"cnn": {(1.0, 0.5): 0.40, (4.0, 0.5): 0.31, (1.0, 2.0): 0.42, (4.0, 2.0): 0.28},
              "fc": {(1.0, 0.5): 0.45, (4.0, 0.5): 0.33, (1.0, 2.0): 0.47, (4.0, 2.0): 0.35}}
    case = {"case": {"name": "toy, gray"}, "shape": [2, 1, 4, 4]}
    for kind in ("cnn", "fc"):
        case[kind] = {
            "infinite": {"0.05": {"oracle_loss": 0.30, "oracle_lambda1": 3.0,
                                  "per_patch_test_loss": 0.32, "grid": {}}},
            "finite": {f"0.05|{lam}|{alpha}": {"test_loss": loss,
                                               "q_bar": [[1.2, -0.1], [-0.1, 0.9]]}
                       for (lam, alpha), loss in losses[kind].items()},
        }
    return {"settings": settings, "cases": [case]}


def test_headline_gap_is_best_finite_minus_oracle(tmp_path):
    path, rows = headline(_study(), tmp_path)
    assert path.exists()
    gaps = {(row["architecture"], row["alpha"]): row["gap"] for row in rows}
    assert gaps[("cnn", 2.0)] == pytest.approx(0.28 - 0.30)
    assert gaps[("cnn", 0.5)] == pytest.approx(0.31 - 0.30)
    assert gaps[("fc", 0.5)] == pytest.approx(0.33 - 0.30)
    assert {row["best_lambda1"] for row in rows} == {4.0}


def test_maps_and_q_bar_figures_are_written(tmp_path):
    paths = gap_maps(_study(), tmp_path)
    assert [p.name for p in paths] == ["gap_map_0.png"] and paths[0].stat().st_size > 0
    assert q_bar_maps(_study(), tmp_path, 0.05, 4.0, 2.0).exists()


def test_network_marks_match_case_point_and_cell(tmp_path):
    import json

    from krenorm.experiments.lkr_report import network_marks

    study = _study()
    study["cases"][0]["case"].update({"dataset": "mnist", "classes": [3, 5], "grayscale": False,
                                      "side": None})
    (tmp_path / "run.toml").write_text(
        'name = "run"\n[data]\ndataset = "mnist"\nclasses = [3, 5]\nn_train = 200\n'
        '[hyper]\ntemperature = 0.05\nlambda1 = 4.0\n', encoding="utf-8")
    (tmp_path / "other.toml").write_text(  # another class pair: no case matches it
        'name = "other"\n[data]\ndataset = "mnist"\nclasses = [0, 1]\nn_train = 200\n'
        '[hyper]\ntemperature = 0.05\nlambda1 = 4.0\n', encoding="utf-8")
    point = {"architecture": "cnn", "width": 100.0, "network": 0.27, "stderr": 0.002,
             "best_infinite": 0.30}
    for name in ("run", "other"):
        (tmp_path / f"networks_{name}.json").write_text(json.dumps({"points": [point]}),
                                                        encoding="utf-8")
    marks = network_marks(study, [tmp_path / "run.toml", tmp_path / "other.toml"], tmp_path)
    assert list(marks) == [(0, "cnn", 0.05, 4.0, 2.0)]
    assert marks[(0, "cnn", 0.05, 4.0, 2.0)] == pytest.approx((-0.03, 0.002, 100.0))
    assert gap_maps(study, tmp_path, marks)[0].exists()


def test_width_slice_gap_is_finite_minus_oracle_per_width(tmp_path):
    from krenorm.experiments.lkr_report import width_slice

    study = _study()
    for kind in ("cnn", "fc"):  # the slice reads T, λ1, N and convergence from each point
        for key, point in study["cases"][0][kind]["finite"].items():
            temperature, lambda1, alpha = (float(v) for v in key.split("|"))
            point.update({"temperature": temperature, "lambda1": lambda1,
                          "width": 2 / alpha, "converged": True})
    path, rows = width_slice(study, tmp_path, "slice")
    assert path.exists() and path.name == "slice.png"
    gaps = {(row["architecture"], row["lambda1"], row["width"]): row["gap"] for row in rows}
    assert gaps[("cnn", 4.0, 1.0)] == pytest.approx(0.28 - 0.30)  # α = 2 → N = P/α = 1
    assert gaps[("fc", 1.0, 4.0)] == pytest.approx(0.45 - 0.30)
    assert len(rows) == 8
