"""Configuration of the main job (`krenorm compare`, `krenorm demo`): data, hyper-parameters,
architectures, theory widths and sampler settings. A compare config is a fixed sweep: it
expands to the same `ExperimentSpec`s a sweep runs (docs/architecture.md "One pipeline"), through
the same validated constructors, so a bad field is refused before any work with a message
naming it as written in the TOML.

Per architecture the sweep holds: the theory at N = ∞ (the NNGP limit); the theory at every
width of ``theory.widths`` and every sampled width (with the retuned-prior Gaussian process
when ``retuned_priors``); and a sampled network at each of its ``network_widths``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from krenorm.architectures import ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.spec import DataSpec, ExperimentSpec, TheorySettings
from krenorm.experiments.sweep_config import (
    ExecutionSettings,
    SweepConfig,
    execution_settings,
    read_toml,
)
from krenorm.experiments.validation import (
    SAMPLER_FIELDS,
    any_architecture,
    check_bool,
    check_positive,
    check_string,
    data_spec,
    named,
    network_width,
    sampler_settings,
    table,
    theory_settings,
    theory_width,
)
from krenorm.networks.settings import SamplerSettings
from krenorm.width import INFINITE_WIDTH, check_width, is_infinite

__all__ = ["CompareConfig", "ConfigError", "DataConfig", "HyperParameters", "NetworkSettings",
           "check_image_shape", "demo_config_path", "load_config", "parse_config"]

#: The solver options a compare config may set under [theory] (besides widths).
_SOLVER_FIELDS = ("solver", "tolerance", "max_iterations", "n_starts", "seed")
_TOP_LEVEL = ("name", "output_dir", "db", "description", "data", "hyper", "architectures",
              "theory", "networks", "retuned_priors", "notes", "execution")
_DATA_FIELDS = ("dataset", "n_train", "n_test", "seed")


@dataclass(frozen=True)
class HyperParameters:
    """Temperature T, prior precisions λ0, λ1 and the activation (docs/math/theory.md §1) of
    every architecture entry that does not name its own `activation`."""

    temperature: float = 0.1
    lambda0: float = 1.0
    lambda1: float = 1.0
    activation: str = "erf"

    def __post_init__(self) -> None:
        for name in ("temperature", "lambda0", "lambda1"):
            check_positive(name, getattr(self, name))
            object.__setattr__(self, name, float(getattr(self, name)))
        check_string("activation", self.activation)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "lambda0": self.lambda0,
                "lambda1": self.lambda1, "activation": self.activation}


@dataclass(frozen=True)
class CompareConfig:
    """A validated compare run.

    sampled_widths: per architecture (same order), the widths of its sampled networks.
    theory: solver options of every theory point (its finite/infinite/retuned flags are set
    per point by `points`). db: the results store (default: results.sqlite in the output
    directory)."""

    name: str
    data: DataSpec
    hyper: HyperParameters
    architectures: tuple[ArchitectureSpec | DeepArchitectureSpec, ...]
    theory_widths: tuple[float, ...]
    networks: SamplerSettings
    sampled_widths: tuple[tuple[int, ...], ...] = ()
    output_dir: str = "runs/compare"
    retuned_priors: bool = False
    theory: TheorySettings = field(default_factory=TheorySettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    db: str | None = None
    description: str = ""
    source: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_string("name", self.name)
        for name, kind in (("data", DataSpec), ("hyper", HyperParameters),
                           ("networks", SamplerSettings), ("theory", TheorySettings),
                           ("execution", ExecutionSettings)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got "
                                  f"{type(getattr(self, name)).__name__}.")
        if not self.architectures:
            raise ConfigError("architectures must hold at least one ArchitectureSpec.")
        for index, spec in enumerate(self.architectures):
            # Each architecture carries its activation (hyper.activation is only the default
            # of entries that do not name their own), so one run may compare erf and ReLU.
            if not isinstance(spec, ArchitectureSpec | DeepArchitectureSpec):
                raise ConfigError(f"architectures[{index}] must be an ArchitectureSpec or a "
                                  "DeepArchitectureSpec.")
        if not self.theory_widths:
            raise ConfigError("theory_widths must hold at least one width.")
        widths = tuple(check_width(width, name=f"theory_widths[{index}]")
                       for index, width in enumerate(self.theory_widths))
        object.__setattr__(self, "theory_widths", tuple(sorted(set(widths))))
        sampled = self.sampled_widths or tuple(() for _ in self.architectures)
        if len(sampled) != len(self.architectures):
            raise ConfigError(f"sampled_widths must give one tuple of widths per architecture "
                              f"({len(self.architectures)}), got {len(sampled)}.")
        object.__setattr__(self, "sampled_widths", tuple(
            tuple(network_width(f"sampled_widths[{index}][{position}]", width)
                  for position, width in enumerate(widths))
            for index, widths in enumerate(sampled)))
        check_bool("retuned_priors", self.retuned_priors)
        if self.db is not None:
            check_string("db", self.db)
        check_string("output_dir", self.output_dir)
        object.__setattr__(self, "notes", tuple(self.notes))

    def network_widths(self, kind: str) -> tuple[int, ...]:
        """Sampled widths of the first architecture of this kind (() when none)."""
        for spec, widths in zip(self.architectures, self.sampled_widths, strict=True):
            if spec.kind == kind:
                return widths
        return ()

    @property
    def theory_grid(self) -> tuple[float, ...]:
        """Widths of the theory for every architecture: theory.widths ∪ every sampled width
        (so each network point has a partner), ascending, then N = ∞."""
        finite = {width for width in self.theory_widths if not is_infinite(width)}
        finite |= {float(width) for widths in self.sampled_widths for width in widths}
        return (*sorted(finite), INFINITE_WIDTH)

    def point_origins(self) -> list[tuple[ExperimentSpec, str, str]]:
        """The experiments of this run (spec, its data field, its architecture field): the
        sampled networks first (largest width first: the longest points start earliest), then
        every theory point."""
        hyper = self.hyper
        out = []
        for index, (spec, widths) in enumerate(zip(self.architectures, self.sampled_widths,
                                                   strict=True)):
            for width in sorted(widths, reverse=True):
                out.append((ExperimentSpec(self.data, spec, width, hyper.temperature,
                                           hyper.lambda0, hyper.lambda1, None, self.networks),
                            "data", f"architectures[{index}]"))
        finite = replace(self.theory, finite=True, infinite=False,
                         retuned_priors=self.retuned_priors)
        infinite = replace(self.theory, finite=True, infinite=False, retuned_priors=False)
        for index, spec in enumerate(self.architectures):
            # The retuned-prior process is a one-hidden-layer construction (docs/deep.md).
            deep = isinstance(spec, DeepArchitectureSpec)
            for theory_width_ in self.theory_grid:
                settings = infinite if is_infinite(theory_width_) or deep else finite
                out.append((ExperimentSpec(self.data, spec, theory_width_, hyper.temperature,
                                           hyper.lambda0, hyper.lambda1, settings, None),
                            "data", f"architectures[{index}]"))
        return out

    @property
    def points(self) -> tuple[ExperimentSpec, ...]:
        return tuple(spec for spec, _, _ in self.point_origins())

    def to_sweep(self, output_dir: str | Path | None = None) -> SweepConfig:
        """The fixed sweep this run is. Its store: `db`, else results.sqlite in `output_dir`
        (default: the config's)."""
        origins = self.point_origins()
        db = self.db if self.db is not None else str(
            Path(output_dir or self.output_dir) / "results.sqlite")
        return SweepConfig(self.name, db, self.execution,
                           tuple(spec for spec, _, _ in origins), self.description,
                           self.source, tuple((data, arch) for _, data, arch in origins))

    def to_dict(self) -> dict:
        return {"name": self.name, "data": self.data.to_dict(), "hyper": self.hyper.to_dict(),
                "architectures": [spec.to_dict() for spec in self.architectures],
                "theory_widths": [w if not is_infinite(w) else "inf"
                                  for w in self.theory_widths],
                "sampled_widths": [list(widths) for widths in self.sampled_widths],
                "networks": self.networks.to_dict(), "theory": self.theory.to_dict(),
                "execution": self.execution.to_dict(), "output_dir": self.output_dir,
                "db": self.db, "retuned_priors": self.retuned_priors,
                "description": self.description, "source": self.source,
                "notes": list(self.notes)}


def _data(raw: Any) -> DataSpec:
    """[data]: dataset, n_train, n_test, seed and the dataset's own options written flat
    (classes, side, grayscale, standardize, labels for images; dimension, noise, … for the
    synthetic teachers)."""
    values = table(raw, "data", tuple(raw) if isinstance(raw, dict) else ())
    options = {key: value for key, value in values.items() if key not in _DATA_FIELDS}
    if "options" in options:
        raise ConfigError("data.options: write the dataset's options directly in [data] "
                          "(e.g. classes = [0, 1]).")
    for name in ("n_train", "n_test"):
        if name in values:
            check_positive(f"data.{name}", values[name], integer=True)
    try:
        return data_spec({**{key: values[key] for key in _DATA_FIELDS if key in values},
                          "options": options}, "data")
    except ConfigError as error:
        # The options are written flat in a compare config: data.classes, not data.options.…
        raise ConfigError(str(error).replace("data.options.", "data.")) from error


def _sampled_widths(entry: dict, index: int, default: tuple[int, ...]) -> tuple[int, ...]:
    if "network_widths" not in entry:
        return default
    widths = entry["network_widths"]
    where = f"architectures[{index}].network_widths"
    if not isinstance(widths, list):
        raise ConfigError(f"{where} must be a list of positive integers, got {widths!r}.")
    return tuple(network_width(f"{where}[{position}]", width)
                 for position, width in enumerate(widths))


def parse_config(raw: dict, source: str = "") -> CompareConfig:
    """Validate a compare config dictionary (as read from TOML); every error names its field."""
    table(raw, "the config", _TOP_LEVEL)
    name = check_string("name", raw.get("name", Path(source).stem or "compare"))
    data = _data(raw.get("data"))
    hyper_raw = table(raw.get("hyper"), "hyper", ("temperature", "lambda0", "lambda1",
                                                  "activation"))
    for key in ("temperature", "lambda0", "lambda1"):
        if key in hyper_raw:
            check_positive(f"hyper.{key}", hyper_raw[key])
    try:
        hyper = HyperParameters(**hyper_raw)
    except ConfigError as error:
        raise named("hyper", error, ("activation",)) from error
    networks_raw = dict(table(raw.get("networks"), "networks", (*SAMPLER_FIELDS, "widths")))
    default_widths = networks_raw.pop("widths", [])
    if not isinstance(default_widths, list):
        raise ConfigError(f"networks.widths must be a list of positive integers, got "
                          f"{default_widths!r}.")
    default = tuple(network_width(f"networks.widths[{index}]", width)
                    for index, width in enumerate(default_widths))
    networks = sampler_settings(networks_raw, "networks")
    entries = raw.get("architectures")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("architectures must be a non-empty array of tables "
                          "([[architectures]] with kind = 'fc' | 'cnn' | 'lcn' | 'cnn-gap').")
    architectures, sampled = [], []
    for index, entry in enumerate(entries):
        where = f"architectures[{index}]"
        entry = table(entry, where, ("kind", "mask", "stride", "padding", "depth", "layers",
                                     "activation", "network_widths"))
        # An entry's own activation overrides hyper.activation (e.g. erf and relu in one study).
        activation_where = f"{where}.activation" if "activation" in entry else "hyper.activation"
        architectures.append(any_architecture(entry, entry.get("activation", hyper.activation),
                                              where, activation_where))
        sampled.append(_sampled_widths(entry, index, default))
    theory_raw = dict(table(raw.get("theory"), "theory", ("widths", *_SOLVER_FIELDS)))
    widths = theory_raw.pop("widths", None)
    if not isinstance(widths, list) or not widths:
        raise ConfigError("theory.widths must be a non-empty list of positive numbers (inf "
                          "allowed; N = ∞ is always computed).")
    theory_widths = tuple(theory_width(f"theory.widths[{index}]", width)
                          for index, width in enumerate(widths))
    theory = theory_settings(theory_raw, "theory")
    retuned = check_bool("retuned_priors", raw.get("retuned_priors", False))
    notes = raw.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise ConfigError(f"notes must be a list of strings, got {notes!r}.")
    output_dir = check_string("output_dir", raw.get("output_dir", f"runs/{name}"))
    db = raw.get("db")
    if db is not None:
        check_string("db", db)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"description must be a string, got {description!r}.")
    return CompareConfig(
        name=name, data=data, hyper=hyper, architectures=tuple(architectures),
        theory_widths=theory_widths, networks=networks, sampled_widths=tuple(sampled),
        output_dir=output_dir, retuned_priors=retuned, theory=theory,
        execution=execution_settings(raw.get("execution")), db=db, description=description,
        source=source, notes=tuple(notes))


def check_image_shape(config: CompareConfig, image_shape: tuple[int, ...]) -> None:
    """Refuse a mask/stride/padding that does not fit the data's images (c, H, W)."""
    for index, spec in enumerate(config.architectures):
        if spec.is_convolutional:
            if len(image_shape) != 3:
                raise ConfigError(f"architectures[{index}] ({spec.kind}) needs images, the data "
                                  f"has inputs of shape {tuple(image_shape)}.")
            try:
                spec.output_grid((image_shape[0], image_shape[1], image_shape[2]))
            except ValueError as error:
                raise ConfigError(f"architectures[{index}]: {error}") from error


def load_config(path: str | Path) -> CompareConfig:
    """Read and validate a TOML compare config."""
    return parse_config(read_toml(path, "config"), str(path))


def demo_config_path() -> Path:
    """The shipped default config run by `krenorm demo` / `make demo`."""
    return Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def DataConfig(dataset: str = "mnist", classes: tuple = (0, 1), n_train: int = 100,
               n_test: int = 500, side: int | None = None, grayscale: bool = False,
               standardize: str | None = "global", labels: str = "pm1", seed: int = 0
               ) -> DataSpec:
    """Deprecated: use `krenorm.experiments.spec.DataSpec` (options as (name, value) pairs)."""
    warnings.warn("krenorm.experiments.config.DataConfig is deprecated; use "
                  "krenorm.experiments.spec.DataSpec.", DeprecationWarning, stacklevel=2)
    options: dict[str, Any] = {"classes": list(classes), "grayscale": grayscale,
                               "standardize": standardize, "labels": labels}
    if side is not None:
        options["side"] = side
    return DataSpec(dataset, n_train, n_test, seed, tuple(options.items()))


def NetworkSettings(widths: tuple[int, ...] = (), sampler: str = "collapsed",
                    n_replicas: int = 8, n_steps: int = 1000, burn_in: int | None = None,
                    seed: int = 0, dtype: str = "float64") -> SamplerSettings:
    """Deprecated: use `krenorm.networks.settings.SamplerSettings`; the sampled widths are
    `CompareConfig.sampled_widths`. Keeps the old defaults (8 replicas × 1000 steps)."""
    warnings.warn("krenorm.experiments.config.NetworkSettings is deprecated; use "
                  "krenorm.networks.settings.SamplerSettings (widths go to "
                  "CompareConfig.sampled_widths).", DeprecationWarning, stacklevel=2)
    if widths:
        raise ValueError("NetworkSettings(widths=…) is gone: give the widths as "
                         "CompareConfig(sampled_widths=…), one tuple per architecture.")
    return SamplerSettings(sampler=sampler, n_replicas=n_replicas, n_steps=n_steps,
                           burn_in=burn_in, seed=seed, dtype=dtype)

