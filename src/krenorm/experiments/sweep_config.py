"""Sweep configs (`krenorm sweep CONFIG`): a grid, or a list of grids, over dataset,
architecture, width N, P, T, λ0, λ1, seeds and sampler settings, expanded into frozen
`ExperimentSpec`s and validated completely before any work starts (ARCHITECTURE.md "Scale";
docs/sweeps.md). Every error is a ConfigError naming the offending field.

A field listed in AXES may hold a list; the sweep is the Cartesian product of all lists and the
[[architectures]]. With [[points]], the sweep is the union over entries of the grid of the base
config overridden by that entry (an entry may hold lists too). Duplicates (same content hash)
are run once.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krenorm.architectures import ARCHITECTURE_KINDS, ArchitectureSpec
from krenorm.experiments.config import ConfigError
from krenorm.experiments.spec import DataSpec, ExperimentSpec, NetworkSpec, TheorySettings

#: Fields that may be lists (one sweep axis each), per section.
AXES: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "n_train", "n_test", "seed"),
    "hyper": ("width", "temperature", "lambda0", "lambda1", "activation"),
    "network": ("sampler", "n_replicas", "n_steps", "burn_in", "seed", "dtype"),
    "theory": (),
}
_SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "n_train", "n_test", "seed", "options"),
    "hyper": ("width", "temperature", "lambda0", "lambda1", "activation"),
    "theory": ("finite", "infinite", "solver", "tolerance", "max_iterations", "n_starts", "seed"),
    "network": ("sampler", "n_replicas", "n_steps", "burn_in", "seed", "dtype"),
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"seed": 0, "options": {}},
    "hyper": {"temperature": 0.1, "lambda0": 1.0, "lambda1": 1.0, "activation": "erf"},
    "theory": {},
    "network": {},
}
_TOP_LEVEL = ("name", "description", "db", "execution", "data", "hyper", "architectures",
              "theory", "network", "points")
_ARCHITECTURE_FIELDS = ("kind", "mask", "stride", "padding")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class ExecutionSettings:
    """How a sweep runs (not part of any experiment's hash). retries: further tries of a point
    whose run raised, per invocation; device: 'cpu', 'cuda' or 'auto' (CUDA when available);
    threads_per_worker: torch threads in each worker process."""

    retries: int = 1
    device: str = "cpu"
    threads_per_worker: int = 1

    def to_dict(self) -> dict:
        return {"retries": self.retries, "device": self.device,
                "threads_per_worker": self.threads_per_worker}


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: its name, the store path, execution settings and the points in config
    order, each once."""

    name: str
    db: str
    execution: ExecutionSettings
    points: tuple[ExperimentSpec, ...]
    description: str = ""
    source: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "db": self.db, "description": self.description,
                "source": self.source, "execution": self.execution.to_dict(),
                "points": [point.to_dict() for point in self.points]}


def _table(raw: Any, where: str, allowed: tuple[str, ...]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {raw!r}.")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} in {where}; allowed: {sorted(allowed)}.")
    return raw


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(where: str, value: Any, integer: bool = False) -> None:
    number = _is_int(value) if integer else (_is_int(value) or isinstance(value, float))
    if not number or not value > 0 or value != value or value == float("inf"):
        kind = "integer" if integer else "number"
        raise ConfigError(f"{where} must be a finite positive {kind}, got {value!r}.")


def _check_non_negative_int(where: str, value: Any) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}.")


def _check_choice(where: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {sorted(choices)}, got {value!r}.")


def _check_bool(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}.")


def _axis_values(where: str, value: Any) -> list:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where} is an empty list; give at least one value.")
        return value
    return [value]


def _check_value(section: str, name: str, where: str, value: Any) -> None:
    """Range and type of one scalar field (an axis entry or a plain value)."""
    from krenorm.networks import SAMPLERS
    from krenorm.theory.solvers import SOLVER_METHODS

    positive_numbers = {("hyper", "width"), ("hyper", "temperature"), ("hyper", "lambda0"),
                        ("hyper", "lambda1"), ("theory", "tolerance")}
    positive_integers = {("data", "n_train"), ("data", "n_test"), ("network", "n_replicas"),
                         ("network", "n_steps"), ("theory", "max_iterations"),
                         ("theory", "n_starts")}
    non_negative = {("data", "seed"), ("network", "seed"), ("network", "burn_in"),
                    ("theory", "seed")}
    key = (section, name)
    if key in positive_numbers:
        _check_positive(where, value)
    elif key in positive_integers:
        _check_positive(where, value, integer=True)
    elif key in non_negative:
        _check_non_negative_int(where, value)
    elif key == ("network", "sampler"):
        _check_choice(where, value, tuple(SAMPLERS))
    elif key == ("network", "dtype"):
        _check_choice(where, value, ("float32", "float64"))
    elif key == ("theory", "solver"):
        _check_choice(where, value, tuple(SOLVER_METHODS))
    elif key in (("theory", "finite"), ("theory", "infinite")):
        _check_bool(where, value)
    elif key in (("data", "dataset"), ("hyper", "activation")) and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}.")


def _section_grid(section: str, raw: dict, where: str) -> list[dict]:
    """All combinations of one section's axes, each a dict of scalar values."""
    names, choices = [], []
    for name, value in raw.items():
        field_where = f"{where}.{name}"
        if name in AXES[section]:
            values = _axis_values(field_where, value)
            for index, item in enumerate(values):
                item_where = f"{field_where}[{index}]" if isinstance(value, list) else field_where
                _check_value(section, name, item_where, item)
        else:
            if isinstance(value, list) and name != "options":
                raise ConfigError(f"{field_where} cannot be a list (not a sweep axis); axes of "
                                  f"[{section}] are {list(AXES[section])}.")
            _check_value(section, name, field_where, value)
            values = [value]
        names.append(name)
        choices.append(values)
    return [dict(zip(names, combination, strict=True))
            for combination in itertools.product(*choices)]


def _architectures(raw: Any, where: str) -> list[tuple[dict, str]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must be a non-empty array of tables ([[architectures]] with "
                          f"kind = {' | '.join(repr(kind) for kind in ARCHITECTURE_KINDS)}).")
    out = []
    for index, entry in enumerate(raw):
        entry_where = f"{where}[{index}]"
        entry = _table(entry, entry_where, _ARCHITECTURE_FIELDS)
        if "kind" not in entry:
            raise ConfigError(f"{entry_where}.kind is missing; choose one of "
                              f"{ARCHITECTURE_KINDS}.")
        _check_choice(f"{entry_where}.kind", entry["kind"], ARCHITECTURE_KINDS)
        out.append((entry, entry_where))
    return out


def _merged(base: dict, entry: dict, where: str) -> dict:
    """The base config with one [[points]] entry's sections laid over it, field by field."""
    entry = _table(entry, where, ("data", "hyper", "theory", "network", "architectures"))
    merged = dict(base)
    for section in ("data", "hyper", "theory", "network"):
        if section in entry:
            override = _table(entry[section], f"{where}.{section}", _SECTION_FIELDS[section])
            merged[section] = {**(base.get(section) or {}), **override}
    if "architectures" in entry:
        merged["architectures"] = entry["architectures"]
    return merged


def _origin(base_where: str, entry_where: str | None, section: str, raw_entry: dict | None
            ) -> str:
    """Where a field came from, for error messages: the [[points]] entry if it set it."""
    if entry_where is not None and raw_entry is not None and section in raw_entry:
        return f"{entry_where}.{section}"
    return section if not base_where else f"{base_where}.{section}"


def _expand(raw: dict, entry_where: str | None, raw_entry: dict | None
            ) -> list[tuple[ExperimentSpec, str, str]]:
    """Grid of one (merged) config: (spec, where its data came from, where its architecture
    came from)."""
    def where(section: str) -> str:
        return _origin("", entry_where, section, raw_entry)

    sections = {}
    for section in ("data", "hyper", "theory", "network"):
        table = _table(raw.get(section), where(section), _SECTION_FIELDS[section])
        sections[section] = {**_DEFAULTS[section], **table}
    for name in ("dataset", "n_train", "n_test"):
        if name not in sections["data"]:
            raise ConfigError(f"{where('data')}.{name} is missing.")
    if "width" not in sections["hyper"]:
        raise ConfigError(f"{where('hyper')}.width is missing (one number or a list).")
    options = sections["data"]["options"]
    if not isinstance(options, dict):
        raise ConfigError(f"{where('data')}.options must be a table, got {options!r}.")
    theory_table = sections["theory"]
    theory = TheorySettings(**theory_table)
    _check_value("theory", "finite", f"{where('theory')}.finite", theory.finite)
    _check_value("theory", "infinite", f"{where('theory')}.infinite", theory.infinite)
    for name in ("solver", "tolerance", "max_iterations", "n_starts", "seed"):
        _check_value("theory", name, f"{where('theory')}.{name}", getattr(theory, name))
    use_theory = theory.finite or theory.infinite
    network_grid = ([None] if raw.get("network") is None
                    else _section_grid("network", sections["network"], where("network")))
    if not use_theory and network_grid == [None]:
        raise ConfigError(f"{where('theory')}.finite and .infinite are both false and there is "
                          "no [network] section: nothing to compute.")
    data_grid = _section_grid("data", {k: v for k, v in sections["data"].items()
                                       if k != "options"}, where("data"))
    hyper_grid = _section_grid("hyper", sections["hyper"], where("hyper"))
    architectures = _architectures(raw.get("architectures"),
                                   _origin("", entry_where, "architectures", raw_entry))
    out = []
    for data, hyper, (architecture, architecture_where), network in itertools.product(
            data_grid, hyper_grid, architectures, network_grid):
        try:
            spec_architecture = ArchitectureSpec(
                architecture["kind"], hyper["activation"], architecture.get("mask", 1),
                architecture.get("stride", 1), architecture.get("padding", 0))
        except ValueError as error:
            raise ConfigError(f"{architecture_where} with hyper.activation = "
                              f"{hyper['activation']!r}: {error}") from error
        if network is not None and float(hyper["width"]) != int(hyper["width"]):
            raise ConfigError(f"{where('hyper')}.width = {hyper['width']!r} must be an integer "
                              "when a [network] is sampled.")
        spec = ExperimentSpec(
            DataSpec(data["dataset"], data["n_train"], data["n_test"], data["seed"],
                     tuple(options.items())),
            spec_architecture, hyper["width"], hyper["temperature"], hyper["lambda0"],
            hyper["lambda1"], theory if use_theory else None,
            None if network is None else NetworkSpec(**network),
        )
        out.append((spec, where("data"), architecture_where))
    return out


def parse_sweep_config(raw: dict, source: str = "") -> SweepConfig:
    """Validate a sweep config dictionary (as read from TOML) and expand it into points.
    Does not load data; `check_sweep_data` does (see `load_sweep_config`)."""
    return _parse(raw, source)[0]


def _parse(raw: dict, source: str) -> tuple[SweepConfig, list[tuple[ExperimentSpec, str, str]]]:
    from krenorm.experiments.sweep_data import check_data_spec

    _table(raw, "the config", _TOP_LEVEL)
    name = raw.get("name", Path(source).stem or "sweep")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}.")
    db = raw.get("db", f"runs/{name}.sqlite")
    if not isinstance(db, str) or not db:
        raise ConfigError(f"db must be a path string, got {db!r}.")
    execution_raw = _table(raw.get("execution"), "execution", ("retries", "device",
                                                               "threads_per_worker"))
    execution = ExecutionSettings(**execution_raw)
    _check_non_negative_int("execution.retries", execution.retries)
    _check_choice("execution.device", execution.device, DEVICES)
    _check_positive("execution.threads_per_worker", execution.threads_per_worker, integer=True)
    entries = raw.get("points")
    if entries is None:
        expanded = _expand(raw, None, None)
    else:
        if not isinstance(entries, list) or not entries:
            raise ConfigError("points must be a non-empty array of tables ([[points]]).")
        expanded = []
        for index, entry in enumerate(entries):
            entry_where = f"points[{index}]"
            expanded.extend(_expand(_merged(raw, entry, entry_where), entry_where, entry))
    unique: dict[str, tuple[ExperimentSpec, str, str]] = {}
    for spec, data_where, architecture_where in expanded:
        check_data_spec(spec.data, data_where)
        unique.setdefault(spec.content_hash, (spec, data_where, architecture_where))
    config = SweepConfig(name, db, execution, tuple(spec for spec, _, _ in unique.values()),
                         str(raw.get("description", "")), source)
    return config, list(unique.values())


def check_sweep_data(origins: list[tuple[ExperimentSpec, str, str]]) -> None:
    """Load each distinct data spec once and check every architecture fits its inputs (images
    for convolutional kinds, mask within the padded image), naming the fields at fault."""
    from krenorm.experiments.sweep_data import load_point_data

    shapes: dict[DataSpec, tuple[int, ...]] = {}
    for spec, data_where, architecture_where in origins:
        if spec.data not in shapes:
            try:
                dataset = load_point_data(spec.data)
            except ConfigError as error:
                raise ConfigError(f"{data_where}: {error}") from error
            except Exception as error:  # missing files, checksum mismatch: say which data
                raise ConfigError(f"{data_where}.dataset = {spec.data.dataset!r} cannot be "
                                  f"loaded: {error}") from error
            shapes[spec.data] = tuple(dataset.x_train.shape[1:])
        shape = shapes[spec.data]
        architecture = spec.architecture
        if architecture.is_convolutional:
            if len(shape) != 3:
                raise ConfigError(f"{architecture_where}.kind = {architecture.kind!r} needs "
                                  f"images (c, H, W) but {data_where}.dataset = "
                                  f"{spec.data.dataset!r} gives inputs of shape {shape}.")
            try:
                architecture.output_grid(shape)
            except ValueError as error:
                raise ConfigError(f"{architecture_where}.mask on {data_where}.dataset = "
                                  f"{spec.data.dataset!r} images {shape}: {error}") from error


def load_sweep_config(path: str | Path, check_data: bool = True) -> SweepConfig:
    """Read, validate and expand a TOML sweep config. With check_data, every distinct data set
    is loaded once and every architecture checked against it, so no point fails later for a
    reason the config already determines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep config file {path} does not exist.")
    with path.open("rb") as handle:
        try:
            raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from error
    config, origins = _parse(raw, str(path))
    if check_data:
        check_sweep_data(origins)
    return config
