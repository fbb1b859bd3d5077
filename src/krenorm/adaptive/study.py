"""The rescaling-versus-adaptation study (docs/math/adaptive.md): for each experiment (task,
activation, P, N, D, κ) and each χ of the config, the theories — NNGP, standard-scaling correction
(scalar rescaling Q K̂), tree-level adaptation, optionally the full adaptive saddle point, and for
linear networks the exact finite-N oracle — against sampled networks (krenorm.networks).

Per point and method: test loss (bias² + variance), relative error of the mean predictor against
the networks' posterior mean, alignment of the hidden kernel with y yᵀ, and the overlap of the top
eigenvector of ⟨VᵀV⟩/N with the teacher direction together with its eigenvalue in units of the
prior variance g_v/D (the spike). Config: TOML, see examples/adaptive_study.toml.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from krenorm.adaptive.correction import (
    scaled_kernel_prediction,
    standard_corrected_kernel,
    standard_corrected_linear,
)
from krenorm.adaptive.linear_oracle import linear_oracle
from krenorm.adaptive.linear_theory import LinearPrediction, predict_at_scale
from krenorm.adaptive.nonlinear import (
    AdaptiveSolution,
    AdaptiveSolverSettings,
    solve_adaptive_saddle_point,
)
from krenorm.adaptive.sampled import sample_network, study_sampler_settings
from krenorm.adaptive.scaling import (
    ScalingRegime,
    chi_for_regime,
    nngp_kernel_hat,
    nngp_kernel_hat_diagonal,
)
from krenorm.adaptive.tasks import TASK_NAMES, make_task, teacher_directions
from krenorm.adaptive.tree_level import tree_level_linear
from krenorm.data import Dataset
from krenorm.kernels.activations import get_activation
from krenorm.networks.settings import SamplerSettings

LINEAR_ACTIVATIONS = ("identity", "linear", "lin")


@dataclass(frozen=True)
class ExperimentConfig:
    """One network/task pair of the study."""

    name: str
    task: str
    activation: str
    n_train: int
    n_test: int
    input_dim: int
    width: int
    kappa: float = 0.05
    g_w: float = 1.0
    g_v: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"experiment {self.name!r}: task must be one of {TASK_NAMES}.")
        get_activation(self.activation)
        for name in ("n_train", "n_test", "input_dim", "width"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"experiment {self.name!r}: {name} must be a positive int.")

    @property
    def is_linear(self) -> bool:
        return self.activation.lower() in LINEAR_ACTIVATIONS

    def regime(self, chi: float) -> ScalingRegime:
        return ScalingRegime(chi, self.width, self.input_dim, self.g_w, self.g_v, self.kappa)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StudyConfig:
    """The whole study: χ values (names 'standard', 'intermediate', 'mean-field' or numbers),
    experiments, solver and sampler settings, torch threads, and whether to add the full
    adaptive saddle point (tree level + fluctuation term)."""

    name: str
    chi: tuple[str | float, ...]
    experiments: tuple[ExperimentConfig, ...]
    solver: AdaptiveSolverSettings = field(default_factory=AdaptiveSolverSettings)
    sampling: SamplerSettings = field(default_factory=study_sampler_settings)
    threads: int = 1
    full_saddle: bool = True

    @classmethod
    def from_toml(cls, path: str | Path) -> StudyConfig:
        """Read [study], [solver], [sampling] and [[experiment]] tables; unknown keys are errors."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no study config at {path}.")
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        _check_keys("top level", raw, {"study", "solver", "sampling", "experiment"})
        study = raw.get("study", {})
        _check_keys("[study]", study, {"name", "chi", "threads", "full_saddle"})
        solver = raw.get("solver", {})
        _check_keys("[solver]", solver, {f.name for f in fields(AdaptiveSolverSettings)})
        sampling = raw.get("sampling", {})
        experiments = raw.get("experiment", [])
        if not experiments:
            raise ValueError(f"{path}: add at least one [[experiment]] table.")
        allowed = {f.name for f in fields(ExperimentConfig)}
        for index, experiment in enumerate(experiments):
            _check_keys(f"[[experiment]] #{index + 1}", experiment, allowed)
        return cls(
            name=study.get("name", path.stem),
            chi=tuple(study.get("chi", ("standard", "intermediate", "mean-field"))),
            experiments=tuple(ExperimentConfig(**experiment) for experiment in experiments),
            solver=AdaptiveSolverSettings(**solver),
            sampling=study_sampler_settings(**sampling),
            threads=int(study.get("threads", 1)),
            full_saddle=bool(study.get("full_saddle", True)),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "chi": list(self.chi),
            "experiments": [experiment.to_dict() for experiment in self.experiments],
            "solver": self.solver.to_dict(),
            "sampling": self.sampling.to_dict(),
            "threads": self.threads,
            "full_saddle": self.full_saddle,
        }


def _check_keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")


@dataclass(frozen=True)
class MethodResult:
    """One method at one point. mean_error: |m − m_net|/|m_net| on the test set (0 for the
    networks themselves); alignment: yᵀĈy/(|Ĉ|_F yᵀy) of the hidden kernel; teacher_overlap:
    |cos| between the top eigenvector of ⟨VᵀV⟩/N and the teacher subspace; spike: its top
    eigenvalue over g_v/D. NaN where a method has no such object (rescaling keeps the first layer
    at its prior). scale: Q (or E[Q|y]) where defined; details: method diagnostics."""

    method: str
    test_loss: float
    bias2: float
    variance: float
    mean_error: float
    alignment: float
    teacher_overlap: float
    spike: float
    scale: float = math.nan
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PointResult:
    """All methods at one (experiment, χ); network_stderr is the test-loss standard error."""

    experiment: str
    chi_label: str
    chi: float
    network_stderr: float
    methods: tuple[MethodResult, ...]
    seconds: float
    warnings: tuple[str, ...] = ()

    def method(self, name: str) -> MethodResult | None:
        return next((m for m in self.methods if m.method == name), None)

    @property
    def network(self) -> MethodResult:
        """The sampled networks' row, which every point has (`run_point` puts it first)."""
        found = self.method("network")
        if found is None:
            raise ValueError(f"point {self.experiment!r} at χ = {self.chi:.4g} has no network "
                             "row; it was not made by run_point.")
        return found

    def to_dict(self) -> dict:
        out = asdict(self)
        out["methods"] = [m.to_dict() for m in self.methods]
        return out


@dataclass(frozen=True)
class StudyResult:
    config: StudyConfig
    points: tuple[PointResult, ...]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "seconds": self.seconds,
        }


def kernel_alignment(kernel: torch.Tensor, y: torch.Tensor) -> float:
    """Uncentred kernel–target alignment yᵀCy / (|C|_F yᵀy) ∈ [−1, 1]."""
    return float(y @ kernel @ y / (kernel.norm() * (y @ y)))


def teacher_overlap(weight_covariance: torch.Tensor, teacher: torch.Tensor | None) -> float:
    """|P_teacher u_top|: length of the top eigenvector's projection on the teacher subspace."""
    if teacher is None:
        return math.nan
    top = torch.linalg.eigh(weight_covariance).eigenvectors[:, -1]
    basis = torch.linalg.qr(teacher.T.to(torch.float64)).Q  # (D, k) orthonormal
    return float((basis.T @ top).norm())


def _spike(weight_covariance: torch.Tensor, regime: ScalingRegime) -> float:
    return float(torch.linalg.eigvalsh(weight_covariance)[-1] / regime.first_layer_prior_variance)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class _Predicts(Protocol):
    """What a method row needs of a theory's output: the test mean and its test loss."""

    @property
    def test_mean(self) -> torch.Tensor: ...

    def test_loss(self, y_test: torch.Tensor) -> dict[str, float]: ...


def _method_result(name: str, prediction: _Predicts, y_test: torch.Tensor,
                   network_mean: torch.Tensor, alignment: float, overlap: float, spike: float,
                   scale: float = math.nan, details: dict[str, Any] | None = None
                   ) -> MethodResult:
    """A MethodResult from anything with test_loss(y) and test_mean (predictions, solutions)."""
    loss = prediction.test_loss(y_test)
    return MethodResult(name, loss["loss"], loss["bias2"], loss["variance"],
                        _relative(prediction.test_mean, network_mean), alignment, overlap, spike,
                        scale, details or {})


def _saddle_result(name: str, solution: AdaptiveSolution, y: torch.Tensor, y_test: torch.Tensor,
                   network_mean: torch.Tensor, teacher: torch.Tensor | None,
                   regime: ScalingRegime) -> MethodResult:
    """A MethodResult of an adaptive saddle-point solution, with its solver details."""
    return _method_result(
        name, solution, y_test, network_mean, kernel_alignment(solution.hidden_kernel, y),
        teacher_overlap(solution.weight_covariance, teacher),
        _spike(solution.weight_covariance, regime), details=_solver_details(solution))


def _linear_methods(experiment: ExperimentConfig, data: Dataset, regime: ScalingRegime,
                    config: StudyConfig, network_mean: torch.Tensor,
                    teacher: torch.Tensor | None) -> list[MethodResult]:
    x, y, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    y_test = y_test.to(torch.float64)
    results = []
    oracle = linear_oracle(x, y, x_test, regime)
    corrected = standard_corrected_linear(x, y, x_test, regime)
    tree = tree_level_linear(x, y, x_test, regime)
    predictions: tuple[tuple[str, LinearPrediction, float, dict[str, float]], ...] = (
        ("nngp", predict_at_scale("nngp", x, y, x_test, regime, 1.0), 1.0, {}),
        ("corrected", corrected.prediction, corrected.solution.total_scale, {}),
        ("tree-level", tree.prediction, tree.solution.total_scale,
         {"spike_teacher_overlap": tree.spike.overlap(teacher[0]) if teacher is not None
          else math.nan}),
        ("oracle", oracle.prediction, oracle.scale_mean, {"scale_std": oracle.scale_std}),
    )  # fmt: skip
    for name, prediction, scale, details in predictions:
        isotropic = name == "nngp"
        results.append(_method_result(
            name, prediction, y_test, network_mean,
            kernel_alignment(prediction.hidden_kernel, y),
            math.nan if isotropic else teacher_overlap(prediction.weight_covariance, teacher),
            _spike(prediction.weight_covariance, regime), scale, details))
    if config.full_saddle:
        solution = solve_adaptive_saddle_point(
            x, y, x_test, regime, experiment.activation, config.solver, fluctuations=True
        )
        results.append(_saddle_result("full-saddle", solution, y, y_test, network_mean, teacher,
                                      regime))
    return results


def _solver_details(solution: AdaptiveSolution) -> dict[str, Any]:
    return {
        "final_ess": solution.final_ess,
        "anneal_steps": len(solution.steps),
        "resample_moves": sum(step.moves for step in solution.steps),
        "converged": solution.converged,
    }


def _nonlinear_methods(experiment: ExperimentConfig, data: Dataset, regime: ScalingRegime,
                       config: StudyConfig, network_mean: torch.Tensor,
                       teacher: torch.Tensor | None) -> list[MethodResult]:
    x, y, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    y_test = y_test.to(torch.float64)
    act, g_w, g_v = experiment.activation, regime.g_w, regime.g_v
    kernel = nngp_kernel_hat(x, None, act, g_w, g_v)
    cross = nngp_kernel_hat(x, x_test, act, g_w, g_v)
    diagonal = nngp_kernel_hat_diagonal(x_test, act, g_w, g_v)
    results = []
    for name, prediction in (
        ("nngp", scaled_kernel_prediction(kernel, cross, diagonal, y, regime, 1.0, "nngp")),
        ("corrected", standard_corrected_kernel(kernel, cross, diagonal, y, regime)),
    ):
        results.append(_method_result(name, prediction, y_test, network_mean,
                                      kernel_alignment(kernel, y), math.nan, 1.0,
                                      prediction.scale))
    variants = (("tree-level", False), ("full-saddle", True))
    for name, fluctuations in variants[: 2 if config.full_saddle else 1]:
        solution = solve_adaptive_saddle_point(
            x, y, x_test, regime, act, config.solver, fluctuations
        )
        results.append(_saddle_result(name, solution, y, y_test, network_mean, teacher, regime))
    return results


#: Above this R̂ (rank-normalised, test loss) the replicas disagree and the sampled networks are
#: not a trustworthy reference (docs/adaptive.md "Warnings and regime of validity").
RHAT_LIMIT = 1.05


class StudyWarning(UserWarning):
    """A study point whose sampled reference or theory cannot be trusted as printed."""


def validity_note(experiment: ExperimentConfig, chi: float) -> str | None:
    """The regime-of-validity statement for a point, or None where the theories are validated.

    For a nonlinear network at standard scaling (χ ≤ 1) the theories are leading order in the
    proportional limit; no next-order correction is derived for them, and on XOR they were
    measured 15–70 % off sampled networks (docs/adaptive.md "Warnings and regime of validity")."""
    if experiment.is_linear or chi > 1:
        return None
    return (
        f"{experiment.name}: nonlinear ({experiment.activation}) network at standard scaling "
        f"χ = {chi:.3g}: the theories are leading order in the proportional limit and are not "
        "validated here (XOR: 15–70 % off sampled networks); trust the sampled networks"
    )


def point_warnings(point: PointResult, experiment: ExperimentConfig) -> tuple[str, ...]:
    """What makes a point untrustworthy: replicas that disagree (R̂ > RHAT_LIMIT or sampler
    warnings), an adaptive solver that did not converge, and the regime-of-validity note."""
    found = []
    network = point.network
    rhat = network.details.get("rhat")
    where = f"{point.experiment} χ = {point.chi:.4g}"
    if isinstance(rhat, float) and math.isnan(rhat):
        found.append(f"{where}: sampler R̂ undefined (too few records or replicas to check "
                     "mixing; run longer or more replicas before comparing)")
    elif isinstance(rhat, float) and rhat > RHAT_LIMIT:
        found.append(f"{where}: sampler R̂ = {rhat:.3g} > {RHAT_LIMIT} (replicas disagree; "
                     "run longer or more replicas before comparing)")
    for message in network.details.get("warnings", ()):
        found.append(f"{where}: sampler: {message}")
    for method in point.methods:
        if method.details.get("converged") is False:
            found.append(f"{where}: {method.method} solver did not converge (final ESS "
                         f"{_format(method.details.get('final_ess', math.nan), 3)}); its "
                         "numbers are not a solution")
    note = validity_note(experiment, point.chi)
    if note is not None:
        found.append(note)
    return tuple(found)


def run_point(
    config: StudyConfig, experiment: ExperimentConfig, chi_label: str | float
) -> PointResult:
    """Networks and theories of one experiment at one χ."""
    started = time.perf_counter()
    chi = chi_for_regime(chi_label, experiment.width)
    regime = experiment.regime(chi)
    data = make_task(
        experiment.task, experiment.n_train, experiment.n_test, experiment.input_dim,
        experiment.seed,
    )  # fmt: skip
    teacher = teacher_directions(data)
    with warnings.catch_warnings():  # the summary keeps them; the report lists them per point
        warnings.simplefilter("ignore", RuntimeWarning)
        network = sample_network(
            data.x_train, data.y_train, data.x_test, data.y_test, regime,
            experiment.activation, config.sampling,
        )  # fmt: skip
    summary = network.summary
    y = data.y_train.to(torch.float64)
    network_result = MethodResult(
        "network", summary.test_loss, summary.bias2, summary.variance, 0.0,
        kernel_alignment(network.hidden_kernel, y),
        teacher_overlap(network.weight_covariance, teacher),
        _spike(network.weight_covariance, regime), network.scale,
        {
            "test_loss_stderr": summary.test_loss_stderr,
            "tau": summary.test_loss_estimate.tau,
            "rhat": summary.test_loss_estimate.rhat,
            "acceptance": summary.acceptance,
            "scale_stderr": network.scale_stderr,
            "warnings": list(summary.warnings),
            "sampler_seconds": summary.wall_time_s,
        },
    )  # fmt: skip
    theory = _linear_methods if experiment.is_linear else _nonlinear_methods
    methods = theory(experiment, data, regime, config, network.test_mean, teacher)
    point = PointResult(
        experiment.name, str(chi_label), chi, summary.test_loss_stderr,
        (network_result, *methods), time.perf_counter() - started,
    )  # fmt: skip
    flagged = point_warnings(point, experiment)
    for message in flagged:
        warnings.warn(message, StudyWarning, stacklevel=2)
    return replace(point, warnings=flagged)


def run_study(config: StudyConfig, log: Callable[[str], None] | None = None) -> StudyResult:
    """Every (experiment, χ) point of the config; `log` receives one line per finished point.
    Sets torch's thread count to config.threads for the run (restored afterwards): the many
    small products of the samplers and the particle solver are fastest single-threaded on a
    busy machine."""
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    points = []
    try:
        for experiment in config.experiments:
            for chi_label in config.chi:
                point = run_point(config, experiment, chi_label)
                points.append(point)
                if log is not None:
                    log(_point_line(point))
    finally:
        torch.set_num_threads(previous_threads)
    return StudyResult(config, tuple(points), time.perf_counter() - started)


def _point_line(point: PointResult) -> str:
    parts = [f"{point.experiment} χ={point.chi:.4g} ({point.chi_label}), {point.seconds:.0f}s:"]
    for m in point.methods:
        parts.append(f"{m.method} loss {m.test_loss:.4f} err {m.mean_error:.3f}")
    return " ".join(parts) + "".join(f"\n  WARNING {message}" for message in point.warnings)


def _format(value: float, digits: int = 4) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}g}")
    )


def study_report(result: StudyResult, figures: dict[str, str]) -> str:
    """Markdown report: settings, one table per experiment, figures, diagnostics."""
    config = result.config
    lines = [
        f"# {config.name}: kernel rescaling versus kernel adaptation across χ",
        "",
        f"Generated by `krenorm adaptive` in {result.seconds / 60:.1f} min "
        f"({config.threads} torch thread(s)). Theory: docs/math/adaptive.md; methods: "
        "docs/adaptive.md.",
        "",
        "Methods: **network** = sampled finite networks (krenorm.networks, "
        f"{config.sampling.sampler} sampler, {config.sampling.n_replicas} replicas × "
        f"{config.sampling.n_steps} steps); **nngp** = infinite width; **corrected** = "
        "standard-scaling correction (scalar rescaling Q K̂); **tree-level** = kernel adaptation "
        "at tree level; **full-saddle** = adaptation with the fluctuation term of M; **oracle** = "
        "exact finite-N posterior of the linear network (Gamma-mixture quadrature).",
        "",
        "Columns: test loss (bias² + variance), relative error of the test mean predictor against "
        "the networks' posterior mean, kernel–target alignment of the hidden kernel, overlap of "
        "the top eigenvector of ⟨VᵀV⟩/N with the teacher, its eigenvalue in units of g_v/D "
        "(spike), and Q. '—': the method has no such object.",
        "",
    ]
    flagged = [message for point in result.points for message in point.warnings]
    if flagged:
        lines += ["## Warnings", "",
                  "Points marked with a red ring in the figures; see docs/adaptive.md "
                  "\"Warnings and regime of validity\".", ""]  # fmt: skip
        lines += [f"- **{message}**" for message in flagged] + [""]
    for experiment in config.experiments:
        lines += [
            f"## {experiment.name}: {experiment.activation} network, task {experiment.task}",
            "",
            f"P = {experiment.n_train}, test points {experiment.n_test}, "
            f"D = {experiment.input_dim}, N = {experiment.width}, κ = {experiment.kappa}, "
            f"g_w = {experiment.g_w}, g_v = {experiment.g_v}, seed {experiment.seed}.",
            "",
            "| χ | method | test loss | mean error | alignment | teacher overlap | spike | Q |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for point in (p for p in result.points if p.experiment == experiment.name):
            for m in point.methods:
                loss = _format(m.test_loss)
                if m.method == "network":
                    loss += f" ± {_format(point.network_stderr, 2)}"
                lines.append(
                    f"| {point.chi:.4g} ({point.chi_label}) | {m.method} | {loss} | "
                    f"{_format(m.mean_error, 3)} | {_format(m.alignment, 3)} | "
                    f"{_format(m.teacher_overlap, 3)} | {_format(m.spike, 3)} | "
                    f"{_format(m.scale, 4)} |"
                )
        lines.append("")
    lines += ["## Figures", ""]
    for title, path in figures.items():
        lines += [f"![{title}]({Path(path).name})", ""]
    lines += ["## Diagnostics", ""]
    for point in result.points:
        network = point.network
        diagnostics = ", ".join(
            f"{key} {_format(value, 3) if isinstance(value, float) else value}"
            for key, value in network.details.items()
            if key != "warnings"
        )
        lines.append(f"- {point.experiment}, χ = {point.chi:.4g}: network {diagnostics}.")
        for m in point.methods:
            if m.method in ("tree-level", "full-saddle"):
                solver = ", ".join(f"{k} {_format(v, 4) if isinstance(v, float) else v}"
                                   for k, v in m.details.items())  # fmt: skip
                lines.append(f"  {m.method}: {solver}.")
        if network.details.get("warnings"):
            lines.append(f"  sampler warnings: {'; '.join(network.details['warnings'])}")
    lines.append("")
    return "\n".join(lines)


def write_study_outputs(result: StudyResult, directory: str | Path) -> dict[str, Path]:
    """results.json, the three figures (PNG) and report.md in `directory`."""
    from krenorm.adaptive.figures import write_study_figures

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    results_path = directory / "results.json"
    results_path.write_text(json.dumps(_without_nan(result.to_dict()), indent=1))
    figures = write_study_figures(result, directory)
    report_path = directory / "report.md"
    report_path.write_text(study_report(result, {k: str(v) for k, v in figures.items()}))
    return {"results": results_path, "report": report_path, **figures}


def _without_nan(value: Any) -> Any:
    """NaN → null, so results.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(item) for item in value]
    return value
