"""`krenorm spectra` with NTK, architectures on the command line and the finite-size error of
eigenlearning (docs/spectra.md "Finite-size error"; docs/math/spectra.md §2, §5)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.spectra.comparison import architecture_from_spec, standard_targets
from krenorm.spectra.learning_curves import compare_learning_curve


def test_architecture_specs():
    assert architecture_from_spec("mlp:3", 8).name == "mlp-3"
    tree = architecture_from_spec("cnn:2,2,2", 8)
    assert tree.is_tree and len(tree.leaves) == 4
    overlapping = architecture_from_spec("cnn:3,2/1,2", 8)
    assert not overlapping.is_tree  # stride 1 < filter 3: patches share coordinates (a DAG)
    assert len(architecture_from_spec("cnn:3/1:cyclic", 8).leaves) == 8
    for bad in ("rnn:2", "cnn:3", "cnn:9", "cnn:x", "cnn:2/1,1", "cnn:2:wrap", "mlp"):
        with pytest.raises(ValueError, match="architecture"):
            architecture_from_spec(bad, 8)


def test_finite_size_deviation_is_the_seed_z_score():
    tree = architecture_from_spec("mlp:2", 6)
    _, values = next(iter(standard_targets(6).values()))
    curve = compare_learning_curve(tree, values, [8, 32], [0, 1, 2, 3], 1e-2)
    for (relative, z), n, mean, error in zip(
        curve.finite_size_deviation(), curve.experiment_sample_sizes, curve.measured_mean(),
        curve.measured_standard_error(), strict=True,
    ):  # fmt: skip
        theory = curve.theory_test_mse(n)
        assert relative == pytest.approx((mean - theory) / theory)
        assert z == pytest.approx((mean - theory) / error)
    one_seed = compare_learning_curve(tree, values, [8], [0], 1e-2)
    assert math.isnan(one_seed.finite_size_deviation()[0][1])


def test_cli_ntk_custom_architectures_and_z(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, [
        "spectra", "--out", str(tmp_path), "--dimension", "6", "--curve-dimension", "6",
        "--sample-sizes", "8,16", "--seeds", "3", "--kind", "ntk",
        "--architecture", "mlp:1", "--architecture", "cnn:2,3",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "NTK kernels" in result.output and "finite-size error" in result.output
    data = json.loads((tmp_path / "spectra.json").read_text())
    assert {c["architecture"] for c in data["curves"]} == {"mlp-1", "cnn:2,3"}
    assert all("finite_size_deviation" in c for c in data["curves"])
    refused = runner.invoke(app, ["spectra", "--out", str(tmp_path), "--dimension", "6",
                                  "--architecture", "cnn:4"])  # fmt: skip
    assert refused.exit_code == 2 and "cnn:4" in refused.output
    wrong_kind = runner.invoke(app, ["spectra", "--out", str(tmp_path), "--kind", "cntk"])
    assert wrong_kind.exit_code == 2


def test_spectra_cli_pooling_is_the_pooled_cyclic_spectrum(tmp_path):
    import torch

    from krenorm.spectra.hypercube import hypercube_spectrum, pooled_cyclic_spectrum

    result = CliRunner().invoke(app, ["spectra", "--out", str(tmp_path), "--dimension", "8",
                                      "--pooling", "3", "--architecture", "cnn:3/1:cyclic",
                                      "--kind", "ntk", "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "spectra.json").read_text())
    assert written["mode"] == "pooling"
    entry = written["spectra"]["cnn:3/1:cyclic"]
    tree = architecture_from_spec("cnn:3/1:cyclic", 8)
    expected = pooled_cyclic_spectrum(hypercube_spectrum(tree, "ntk"), 3).eigenvalues
    assert torch.allclose(torch.tensor(entry["eigenvalues"], dtype=torch.float64), expected,
                          rtol=0, atol=1e-14)
    assert entry["largest"] == pytest.approx(float(expected.max()))
    # Pooling with ω = 3 multiplies the ∅ eigenvalue by F(0) = ω.
    unpooled = hypercube_spectrum(tree, "ntk").eigenvalues
    assert entry["eigenvalues"][0] == pytest.approx(3 * float(unpooled[0]))


def test_spectra_cli_sphere_mode_is_the_sphere_product_spectrum(tmp_path):
    from krenorm.spectra.sphere import sphere_product_spectrum

    result = CliRunner().invoke(app, ["spectra", "--out", str(tmp_path), "--dimension", "8",
                                      "--geometry", "sphere", "--architecture", "cnn:4",
                                      "--max-degree", "2", "--quadrature-nodes", "12"])
    assert result.exit_code == 0, result.output
    assert "products of spheres" in result.output
    entry = json.loads((tmp_path / "spectra.json").read_text())["spectra"]["cnn:4"]
    expected = sphere_product_spectrum(architecture_from_spec("cnn:4", 8), 2, "nngp", 12)
    assert entry["eigenvalues"] == pytest.approx(list(expected.eigenvalues), rel=1e-12)
    assert entry["top"][0]["degrees"] == [0, 0]


@pytest.mark.parametrize(("arguments", "message"), [
    (["--pooling", "2"], "needs --architecture"),
    (["--pooling", "2", "--architecture", "cnn:4"], "cyclic stride-1"),
    (["--pooling", "2", "--architecture", "cnn:4:cyclic"], "cyclic stride-1"),
    (["--pooling", "2", "--architecture", "mlp:2"], "cyclic stride-1"),
    (["--pooling", "9", "--architecture", "cnn:3/1:cyclic"], "between 1 and d"),
    (["--pooling", "2", "--geometry", "sphere"], "hypercube only"),
    (["--geometry", "ball"], "hypercube or sphere"),
    (["--geometry", "sphere", "--architecture", "cnn:3,2/1,2"], "disjoint"),
])
def test_spectra_cli_refuses_pooling_and_sphere_misuse(tmp_path, arguments, message):
    result = CliRunner().invoke(app, ["spectra", "--out", str(tmp_path), "--dimension", "8",
                                      *arguments])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
