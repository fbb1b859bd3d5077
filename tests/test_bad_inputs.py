"""A newcomer's mistakes, as a table: every bad input — to the Python API, to the command line
and in a TOML config — is answered by one line that names the argument and says what to do.

API and TOML rows: the call raises ValueError / TypeError / MemoryError (ConfigError and
DatasetUnavailableError are ValueError / FileNotFoundError subclasses) whose message is one
line, contains the argument's name and an instruction (`ADVICE`). CLI rows: exit status 2, no
traceback, an `error:` line (or click's usage error) naming the option.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse
import torch
from typer.testing import CliRunner

from krenorm.architectures import ArchitectureSpec
from krenorm.cli import app
from krenorm.data import load_dataset, local_teacher
from krenorm.experiments.config import ConfigError, parse_config
from krenorm.experiments.sweep_config import parse_sweep_config
from krenorm.features import ConvRFMClassifier, RFMClassifier, RFMRegressor
from krenorm.kernels.grams import compute_local_blocks, fc_kernel, local_gram_blocks
from krenorm.kernels.patches import PatchGeometry
from krenorm.networks import SamplerSettings
from krenorm.networks.modules import build_network
from krenorm.theory import RenormalizedKernelRegressor, fit_theory
from krenorm.width import check_width

#: Words of an instruction: what the value must be, what to choose, what to do instead.
ADVICE = re.compile(r"must|choose|one of|use |pass |give |try |expect|allowed|should|"
                    r"raise |lower |reshape|requires|required|is missing|needs|not supported|"
                    r"at least|at most|write |put |run |install|valid|call |>=|≥", re.IGNORECASE)

GENERATOR = torch.Generator().manual_seed(0)
X_FC = torch.randn(12, 5, generator=GENERATOR, dtype=torch.float64)
Y_FC = torch.randn(12, generator=GENERATOR, dtype=torch.float64)
X_IMAGES = torch.randn(12, 1, 8, 8, generator=GENERATOR, dtype=torch.float64)
FC = ArchitectureSpec("fc", "erf")
CNN = ArchitectureSpec("cnn", "erf", mask=4, stride=4)


def _nan_images() -> torch.Tensor:
    x = X_IMAGES.clone()
    x[0, 0, 0, 0] = math.nan
    return x


def _fitted_rfm() -> RFMRegressor:
    x = np.random.default_rng(0).normal(size=(20, 3))
    return RFMRegressor(n_rounds=0).fit(x, x[:, 0])


def _rfm_predict(values: np.ndarray) -> Callable[[], object]:
    return lambda: _fitted_rfm().predict(values)


_X2 = np.random.default_rng(1).normal(size=(20, 3))
_Y2 = np.where(_X2[:, 0] > 0, 1, 0)
_NAN2 = _X2.copy()
_NAN2[2, 1] = np.nan

# (id, call, argument the message must name)
API_CASES: list[tuple[str, Callable[[], object], str]] = [
    # the effective theory
    ("theory-temperature-negative", lambda: fit_theory(X_FC, Y_FC, FC, 10, -1.0), "temperature"),
    ("theory-temperature-zero", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.0), "temperature"),
    ("theory-temperature-nan", lambda: fit_theory(X_FC, Y_FC, FC, 10, math.nan), "temperature"),
    ("theory-lambda0", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, lambda0=-1), "lambda0"),
    ("theory-lambda1", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, lambda1=0), "lambda1"),
    ("theory-width-zero", lambda: fit_theory(X_FC, Y_FC, FC, 0, 0.1), "width"),
    ("theory-width-negative", lambda: fit_theory(X_FC, Y_FC, FC, -5, 0.1), "width"),
    ("theory-width-string", lambda: fit_theory(X_FC, Y_FC, FC, "wide", 0.1), "width"),
    ("theory-solver", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, solver="magic"), "solver"),
    ("theory-tolerance", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, tolerance=-1.0),
     "tolerance"),
    ("theory-max-iterations", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, max_iterations=0),
     "max_iterations"),
    ("theory-x-nan", lambda: fit_theory(_nan_images(), Y_FC, CNN, 10, 0.1), "x"),
    ("theory-y-length", lambda: fit_theory(X_FC, Y_FC[:5], FC, 10, 0.1), "y"),
    ("theory-cnn-on-vectors", lambda: fit_theory(X_FC, Y_FC, CNN, 10, 0.1), "images"),
    ("theory-mask-too-large", lambda: fit_theory(
        X_IMAGES, Y_FC, ArchitectureSpec("cnn", "erf", mask=9), 10, 0.1), "mask"),
    ("theory-memory-limit", lambda: fit_theory(X_FC, Y_FC, FC, 10, 0.1, memory_limit=100),
     "memory_limit"),
    # architectures
    ("spec-kind", lambda: ArchitectureSpec("rnn"), "architecture"),
    ("spec-activation", lambda: ArchitectureSpec("fc", "swishy"), "activation"),
    ("spec-mask-zero", lambda: ArchitectureSpec("cnn", "erf", mask=0), "mask"),
    ("spec-mask-true", lambda: ArchitectureSpec("cnn", "erf", mask=True), "mask"),
    ("spec-mask-float", lambda: ArchitectureSpec("cnn", "erf", mask=2.5), "mask"),
    ("spec-mask-triple", lambda: ArchitectureSpec("cnn", "erf", mask=(3, 3, 3)), "mask"),
    ("spec-mask-string", lambda: ArchitectureSpec("cnn", "erf", mask="3"), "mask"),
    ("spec-stride-zero", lambda: ArchitectureSpec("cnn", "erf", mask=3, stride=0), "stride"),
    ("spec-stride-bool", lambda: ArchitectureSpec("cnn", "erf", mask=3, stride=False), "stride"),
    ("spec-padding-negative", lambda: ArchitectureSpec("cnn", "erf", mask=3, padding=-1),
     "padding"),
    ("geometry-padding-mode", lambda: PatchGeometry(3, 1, 0, "mirror"), "padding_mode"),
    ("width-zero", lambda: check_width(0), "width"),
    ("width-nan", lambda: check_width(math.nan), "width"),
    ("width-bool", lambda: check_width(True), "width"),
    # scikit-learn estimator of the theory
    ("estimator-complex", lambda: RenormalizedKernelRegressor().fit(
        np.ones((5, 2)) + 1j, np.ones(5)), "complex"),
    ("estimator-sparse", lambda: RenormalizedKernelRegressor().fit(
        scipy.sparse.csr_matrix(np.eye(5)), np.ones(5)), "sparse"),
    ("estimator-no-features", lambda: RenormalizedKernelRegressor().fit(
        np.ones((5, 0)), np.ones(5)), "feature"),
    ("estimator-no-samples", lambda: RenormalizedKernelRegressor().fit(
        np.ones((0, 3)), np.ones(0)), "sample"),
    ("estimator-y-none", lambda: RenormalizedKernelRegressor().fit(np.ones((5, 2)), None), "y"),
    ("estimator-nan", lambda: RenormalizedKernelRegressor().fit(_NAN2, _X2[:, 0]), "NaN"),
    ("estimator-y-length", lambda: RenormalizedKernelRegressor().fit(_X2, _X2[:5, 0]),
     "samples"),
    ("estimator-n-outputs", lambda: RenormalizedKernelRegressor(n_outputs=2).fit(
        _X2, _X2[:, 0]), "n_outputs"),
    ("estimator-mask-true", lambda: RenormalizedKernelRegressor("cnn", mask=True).fit(
        X_IMAGES.numpy(), Y_FC.numpy()), "mask"),
    ("estimator-predict-unfitted", lambda: RenormalizedKernelRegressor().predict(_X2), "fit"),
    ("estimator-predict-features", lambda: RenormalizedKernelRegressor().fit(
        _X2, _X2[:, 0]).predict(np.ones((3, 4))), "features"),
    # feature machines
    ("rfm-kernel", lambda: RFMClassifier(kernel="ntk").fit(_X2, _Y2), "kernel"),
    ("rfm-dtype", lambda: RFMClassifier(dtype="float16").fit(_X2, _Y2), "dtype"),
    ("rfm-validation-fraction", lambda: RFMClassifier(validation_fraction=1.5).fit(_X2, _Y2),
     "validation_fraction"),
    ("rfm-one-class", lambda: RFMClassifier().fit(_X2, np.zeros(20)), "class"),
    ("rfm-continuous-labels", lambda: RFMClassifier().fit(_X2, _X2[:, 0]), "label"),
    ("rfm-x-val-alone", lambda: RFMClassifier().fit(_X2, _Y2, X_val=_X2), "y_val"),
    ("rfm-predict-nan", _rfm_predict(_NAN2), "NaN"),
    ("rfm-predict-inf", _rfm_predict(np.full((2, 3), np.inf)), "infinity"),
    ("rfm-predict-features", _rfm_predict(np.ones((2, 5))), "features"),
    ("rfm-predict-unfitted", lambda: RFMRegressor().predict(_X2), "fit"),
    ("rfm-sparse", lambda: RFMRegressor().fit(scipy.sparse.csr_matrix(_X2), _X2[:, 0]),
     "sparse"),
    ("convrfm-vectors", lambda: ConvRFMClassifier().fit(_X2, _Y2), "images"),
    ("convrfm-predict-vectors", lambda: ConvRFMClassifier(mask=3, n_rounds=0).fit(
        X_IMAGES.numpy(), np.arange(12) % 2).predict(_X2), "images"),
    # sampler settings and networks
    ("sampler-name", lambda: SamplerSettings(sampler="gibbs"), "sampler"),
    ("sampler-replicas", lambda: SamplerSettings(n_replicas=0), "n_replicas"),
    ("sampler-steps", lambda: SamplerSettings(n_steps=0), "n_steps"),
    ("sampler-burn-in-negative", lambda: SamplerSettings(burn_in=-1), "burn_in"),
    ("sampler-burn-in-too-long", lambda: SamplerSettings(n_steps=100, burn_in=100), "burn_in"),
    ("sampler-seed", lambda: SamplerSettings(seed=-1), "seed"),
    ("sampler-dtype", lambda: SamplerSettings(dtype="float16"), "dtype"),
    ("sampler-step-size", lambda: SamplerSettings(step_size=-0.1), "step_size"),
    ("network-width-zero", lambda: build_network(FC, 0, (1, 8, 8), seed=0), "width"),
    ("network-width-float", lambda: build_network(FC, 2.5, (1, 8, 8), seed=0), "width"),
    ("network-width-huge", lambda: build_network(FC, 10**9, (1, 8, 8), seed=0), "width"),
    ("network-seed-and-generator", lambda: build_network(FC, 4, (1, 8, 8)), "seed"),
    # memory guards
    ("fc-kernel-memory", lambda: fc_kernel(X_FC, memory_limit=100), "memory_limit"),
    ("local-blocks-memory", lambda: compute_local_blocks(X_IMAGES, 2, 2, memory_limit=100),
     "memory_limit"),
    ("local-full-stack-memory", lambda: local_gram_blocks(X_IMAGES, 2, 2, memory_limit=100),
     "memory_limit"),
    # data
    ("data-name", lambda: load_dataset("imagenet", n_train=10, n_test=10), "dataset"),
    ("teacher-n-train", lambda: local_teacher(n_train=0, n_test=5), "n_train"),
    ("teacher-noise", lambda: local_teacher(n_train=5, n_test=5, noise=-1.0), "noise"),
    ("teacher-seed", lambda: local_teacher(n_train=5, n_test=5, seed=-1), "seed"),
    ("teacher-image-shape", lambda: local_teacher(n_train=5, n_test=5, image_shape=(28, 28)),
     "image_shape"),
]


@pytest.mark.parametrize(("call", "argument"), [case[1:] for case in API_CASES],
                         ids=[case[0] for case in API_CASES])
def test_api_bad_input(call, argument):
    with pytest.raises((ValueError, TypeError, MemoryError)) as error:
        call()
    _check_message(str(error.value), argument)


def _check_message(message: str, argument: str) -> None:
    assert "\n" not in message.strip(), f"more than one line: {message!r}"
    assert argument.lower() in message.lower(), f"{argument!r} not named in {message!r}"
    assert ADVICE.search(message), f"no instruction in {message!r}"


# --- TOML configs -----------------------------------------------------------------------------

COMPARE = {
    "name": "tiny",
    "data": {"dataset": "local-teacher", "n_train": 24, "n_test": 16, "seed": 1},
    "hyper": {"temperature": 0.1},
    "architectures": [{"kind": "fc"}, {"kind": "cnn", "mask": 7, "stride": 7}],
    "theory": {"widths": [8, 32]},
    "networks": {"widths": [16], "n_replicas": 2, "n_steps": 30},
}

SWEEP = {
    "name": "tiny",
    "db": "runs/tiny.sqlite",
    "data": {"dataset": "local-teacher", "n_train": 16, "n_test": 8,
             "options": {"image_shape": [1, 8, 8], "mask": 4, "stride": 4}},
    "hyper": {"width": [4, 16], "temperature": 0.1},
    "architectures": [{"kind": "fc"}],
}


def _set(base: dict, path: str, value: object) -> dict:
    raw = copy.deepcopy(base)
    *tables, key = path.split(".")
    target = raw
    for table in tables:
        target = target.setdefault(table, {})
    if value is _DELETE:
        target.pop(key)
    else:
        target[key] = value
    return raw


_DELETE = object()

# (id, config kind, dotted path, value, field the message must name)
TOML_CASES = [
    ("retuned-no", "compare", "retuned_priors", "no", "retuned_priors"),
    ("classes-5", "compare", "data.classes", 5, "data.classes"),
    ("classes-on-teacher", "compare", "data.classes", [0, 1], "data.classes"),
    ("sampler-name", "compare", "networks.sampler", "gibbs", "networks.sampler"),
    ("burn-in-negative", "compare", "networks.burn_in", -3, "networks.burn_in"),
    ("burn-in-too-long", "compare", "networks.burn_in", 30, "networks.burn_in"),
    ("seed-string", "compare", "networks.seed", "x", "networks.seed"),
    ("seed-negative", "compare", "networks.seed", -1, "networks.seed"),
    ("replicas-zero", "compare", "networks.n_replicas", 0, "networks.n_replicas"),
    ("steps-float", "compare", "networks.n_steps", 10.5, "networks.n_steps"),
    ("dtype", "compare", "networks.dtype", "float16", "networks.dtype"),
    ("network-width-float", "compare", "networks.widths", [10.5], "networks.widths"),
    ("network-widths-scalar", "compare", "networks.widths", 16, "networks.widths"),
    ("unknown-network-field", "compare", "networks.n_chains", 4, "n_chains"),
    ("temperature-negative", "compare", "hyper.temperature", -1, "hyper.temperature"),
    ("temperature-string", "compare", "hyper.temperature", "hot", "hyper.temperature"),
    ("lambda0-zero", "compare", "hyper.lambda0", 0, "hyper.lambda0"),
    ("activation", "compare", "hyper.activation", "swishy", "activation"),
    ("typo-hyper", "compare", "hyper.temprature", 0.1, "temprature"),
    ("theory-widths-empty", "compare", "theory.widths", [], "theory.widths"),
    ("theory-width-negative", "compare", "theory.widths", [8, -1], "theory.widths[1]"),
    ("theory-solver", "compare", "theory.solver", "magic", "theory.solver"),
    ("n-train-zero", "compare", "data.n_train", 0, "data.n_train"),
    ("n-test-string", "compare", "data.n_test", "many", "data.n_test"),
    ("data-seed-negative", "compare", "data.seed", -1, "data.seed"),
    ("dataset-unknown", "compare", "data.dataset", "imagenet", "data.dataset"),
    ("data-missing", "compare", "data.n_train", _DELETE, "data.n_train"),
    ("unknown-top-level", "compare", "colour", "blue", "colour"),
    ("execution-device", "compare", "execution.device", "tpu", "execution.device"),
    ("notes-not-list", "compare", "notes", "a note", "notes"),
    ("sweep-width-zero", "sweep", "hyper.width", [0, 4], "hyper.width"),
    ("sweep-temperature", "sweep", "hyper.temperature", -0.1, "hyper.temperature"),
    ("sweep-dataset", "sweep", "data.dataset", "imagenet", "data.dataset"),
    ("sweep-n-train", "sweep", "data.n_train", 0, "data.n_train"),
    ("sweep-network-sampler", "sweep", "network.sampler", "gibbs", "network.sampler"),
    ("sweep-network-burn-in", "sweep", "network.burn_in", -1, "network.burn_in"),
    ("sweep-unknown-section", "sweep", "netwrok.sampler", "hmc", "netwrok"),
    ("sweep-activation", "sweep", "hyper.activation", "swishy", "activation"),
]


def _architectures_case(raw_base: dict, entry: dict) -> dict:
    raw = copy.deepcopy(raw_base)
    raw["architectures"] = [entry]
    return raw


TOML_ARCHITECTURE_CASES = [
    ("arch-kind", {"kind": "rnn"}, "architectures[0].kind"),
    ("arch-kind-missing", {"mask": 3}, "architectures[0].kind"),
    ("arch-mask-zero", {"kind": "cnn", "mask": 0}, "architectures[0].mask"),
    ("arch-mask-bool", {"kind": "cnn", "mask": True}, "architectures[0].mask"),
    ("arch-stride-float", {"kind": "cnn", "mask": 3, "stride": 1.5}, "architectures[0].stride"),
    ("arch-unknown-field", {"kind": "cnn", "kernel": 3}, "kernel"),
    ("arch-network-widths", {"kind": "cnn", "network_widths": 5},
     "architectures[0].network_widths"),
]


@pytest.mark.parametrize(("kind", "path", "value", "field"),
                         [case[1:] for case in TOML_CASES], ids=[case[0] for case in TOML_CASES])
def test_toml_bad_field(kind, path, value, field):
    if kind == "compare":
        call: Callable[[], object] = lambda: parse_config(_set(COMPARE, path, value))  # noqa: E731
    else:
        call = lambda: parse_sweep_config(_set(SWEEP, path, value))  # noqa: E731
    with pytest.raises(ConfigError) as error:
        call()
    _check_message(str(error.value), field)


@pytest.mark.parametrize(("entry", "field"), [case[1:] for case in TOML_ARCHITECTURE_CASES],
                         ids=[case[0] for case in TOML_ARCHITECTURE_CASES])
def test_toml_bad_architecture(entry, field):
    with pytest.raises(ConfigError) as error:
        parse_config(_architectures_case(COMPARE, entry))
    _check_message(str(error.value), field)


# --- the command line -------------------------------------------------------------------------

# (id, arguments, option the message must name). Every command fails before any heavy work.
CLI_CASES = [
    ("theory-temperature", ["theory", "--temperature", "-1"], "--temperature"),
    ("theory-temperature-zero", ["theory", "--temperature", "0"], "--temperature"),
    ("theory-lambda0", ["theory", "--lambda0", "0"], "--lambda0"),
    ("theory-lambda1", ["theory", "--lambda1", "-2"], "--lambda1"),
    ("theory-width", ["theory", "--width", "0"], "--width"),
    ("theory-width-text", ["theory", "--width", "wide"], "--width"),
    ("theory-arch", ["theory", "--arch", "rnn"], "--arch"),
    ("theory-activation", ["theory", "--activation", "swishy"], "--activation"),
    ("theory-mask", ["theory", "--mask", "0"], "--mask"),
    ("theory-stride", ["theory", "--stride", "0"], "--stride"),
    ("theory-padding", ["theory", "--padding", "-1"], "--padding"),
    ("theory-classes-one", ["theory", "--classes", "0"], "--classes"),
    ("theory-classes-three", ["theory", "--classes", "0,1,2"], "--classes"),
    ("theory-n-train", ["theory", "--n-train", "1"], "--n-train"),
    ("theory-n-train-text", ["theory", "--n-train", "many"], "--n-train"),
    ("theory-n-test", ["theory", "--n-test", "0"], "--n-test"),
    ("theory-dataset", ["theory", "--dataset", "imagenet"], "dataset"),
    ("theory-unknown-option", ["theory", "--temprature", "0.1"], "--temprature"),
    ("spectra-dimension", ["spectra", "--dimension", "10"], "--dimension"),
    ("spectra-dimension-small", ["spectra", "--dimension", "2"], "--dimension"),
    ("spectra-curve-dimension", ["spectra", "--curve-dimension", "6"], "--curve-dimension"),
    ("spectra-sample-sizes", ["spectra", "--sample-sizes", "16,many"], "--sample-sizes"),
    ("spectra-sample-sizes-empty", ["spectra", "--sample-sizes", ","], "--sample-sizes"),
    ("spectra-seeds", ["spectra", "--seeds", "0"], "--seeds"),
    ("cnfa-widths", ["cnfa", "--widths", "8,x"], "--widths"),
    ("cnfa-alphas", ["cnfa", "--alphas", "half"], "--alphas"),
    ("compare-missing-file", ["compare", "no_such_config.toml"], "no_such_config.toml"),
    ("sweep-missing-file", ["sweep", "no_such_sweep.toml"], "no_such_sweep.toml"),
    ("report-missing-store", ["report", "no_such.sqlite"], "no_such.sqlite"),
    ("adaptive-missing-file", ["adaptive", "no_such_study.toml"], "no_such_study.toml"),
    ("demo-workers", ["demo", "--workers", "-1"], "workers"),
    ("no-such-command", ["thoery"], "thoery"),
]


@pytest.mark.parametrize(("arguments", "option"), [case[1:] for case in CLI_CASES],
                         ids=[case[0] for case in CLI_CASES])
def test_cli_bad_input(arguments, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, arguments)
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert option.lower() in output.lower(), output
    errors = [line for line in output.splitlines() if re.search(r"\berror\b", line, re.I)]
    assert errors, output


def test_cli_bad_toml_in_a_file_names_the_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text('name = "bad"\nretuned_priors = "no"\n[data]\ndataset = "local-teacher"\n'
                      'n_train = 8\nn_test = 4\n[[architectures]]\nkind = "fc"\n[theory]\n'
                      'widths = [4]\n')
    result = CliRunner().invoke(app, ["compare", str(config)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: retuned_priors must be true or false, got 'no'."]


def test_cli_store_that_is_not_a_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.sqlite").write_text("not a database")
    result = CliRunner().invoke(app, ["report", "notes.sqlite"])
    assert result.exit_code == 2
    assert result.output.startswith("error: the results store cannot be read")
    assert len(result.output.strip().splitlines()) == 1


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quiet = CliRunner().invoke(app, ["theory", "--temperature", "-1"])
    assert quiet.output.strip() == (
        "error: --temperature must be a finite positive number, got -1.0.")
    loud = CliRunner().invoke(app, ["--debug", "theory", "--temperature", "-1"])
    assert loud.exit_code == 2 and "Traceback" in loud.output


def test_the_table_is_large_enough():
    total = len(API_CASES) + len(TOML_CASES) + len(TOML_ARCHITECTURE_CASES) + len(CLI_CASES)
    assert total >= 120, total


def test_cnfa_table_fits_80_columns():
    """The widest terminal table (CNFA, nine numbers per layer) stays within 80 columns, so no
    header is truncated ('Pears…') on a default terminal."""
    from types import SimpleNamespace

    from rich.console import Console

    from krenorm.features.cnfa_experiment import cnfa_table

    def measures():
        return SimpleNamespace(pearson=0.8123, cosine=0.9345, pearson_interval=(0.7912, 0.8311))

    layer = SimpleNamespace(layer="conv1", alpha=0.5, trained=measures(),
                            initialization=measures(), initial_filters=measures(),
                            isotropic_initialization=measures())
    report = SimpleNamespace(n_images=256, estimator="patch", layers=[layer, layer])
    console = Console(width=80, record=True)
    console.print(cnfa_table(report))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_memory_limit_from_the_environment_reaches_fc_kernels_and_networks(monkeypatch):
    """$KRENORM_MEMORY_LIMIT applies to every guarded allocation, FC kernels and sampled
    networks included (before: FC kernels ignored it and torch failed inside the allocator)."""
    monkeypatch.setenv("KRENORM_MEMORY_LIMIT", "1000")
    with pytest.raises(MemoryError, match="KRENORM_MEMORY_LIMIT"):
        fc_kernel(X_FC)
    with pytest.raises(MemoryError, match="smaller width"):
        build_network(FC, 64, (1, 8, 8), seed=0)
    monkeypatch.setenv("KRENORM_MEMORY_LIMIT", str(2**30))
    assert fc_kernel(X_FC).shape == (12, 12)
