"""Sweep configs (`krenorm sweep CONFIG`): a grid, or a list of grids, over dataset,
architecture, width N, P, T, λ0, λ1, seeds and sampler settings, expanded into frozen
`ExperimentSpec`s and validated completely before any work starts (docs/architecture.md "Scale";
docs/sweeps.md). Every error is a ConfigError naming the offending field.

A field listed in AXES may hold a list; the sweep is the Cartesian product of all lists and the
[[architectures]]. With [[points]], the sweep is the union over entries of the grid of the base
config overridden by that entry (an entry may hold lists too). Duplicates (same content hash)
are run once.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krenorm.experiments.errors import ConfigError
from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.sweep_data import check_points_data
from krenorm.experiments.validation import (
    SAMPLER_FIELDS,
    THEORY_FIELDS,
    any_architecture,
    check_choice,
    check_non_negative_int,
    check_positive,
    check_string,
    data_spec,
    named,
    sampler_settings,
    table,
    theory_settings,
    theory_width,
)
from krenorm.networks.settings import SamplerSettings

#: Fields that may be lists (one sweep axis each), per section.
AXES: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "n_train", "n_test", "seed"),
    "hyper": ("width", "temperature", "lambda0", "lambda1", "activation"),
    "network": ("sampler", "n_replicas", "n_steps", "burn_in", "thin", "step_size", "seed",
                "dtype"),
    "theory": (),
}
_SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "n_train", "n_test", "seed", "options"),
    "hyper": ("width", "temperature", "lambda0", "lambda1", "activation"),
    "theory": THEORY_FIELDS,
    "network": SAMPLER_FIELDS,
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"seed": 0, "options": {}},
    "hyper": {"temperature": 0.1, "lambda0": 1.0, "lambda1": 1.0, "activation": "erf"},
    "theory": {},
    "network": {},
}
_TOP_LEVEL = ("name", "description", "db", "execution", "data", "hyper", "architectures",
              "theory", "network", "points")
_ARCHITECTURE_FIELDS = ("kind", "mask", "stride", "padding", "depth", "layers")
DEVICES = ("cpu", "cuda", "auto")


#: Default largest sweep (points counted from the grid's axes before expansion).
MAX_POINTS = 100_000
_EXECUTION_FIELDS = ("retries", "device", "threads_per_worker", "point_time_limit_s",
                     "stall_after_s", "max_requeues", "max_points", "memory_limit",
                     "block_scheduler")


@dataclass(frozen=True)
class ExecutionSettings:
    """How a sweep runs (not part of any experiment's hash). retries: further tries of a point
    whose run raised or ran past its time limit, per invocation; device: 'cpu', 'cuda' or
    'auto' (CUDA when available); threads_per_worker: torch threads in each worker process;
    point_time_limit_s: time limit of every point (None: derived from each point's estimate,
    point_limits.py); stall_after_s: a pool worker without heartbeat this long is killed and its
    points re-queued; max_requeues: how often one invocation re-queues a point lost to
    infrastructure (dead or stalled worker) before calling it failed — these do not use
    `retries`; max_points: largest grid accepted (counted before expansion); memory_limit:
    bytes one theory fit may hold (None: $KRENORM_MEMORY_LIMIT, else 60 % of physical memory)
    — CNN/LCN kernel blocks that would not fit are streamed (docs/scale.md §1); block_scheduler:
    a Dask scheduler address on whose workers CNN/LCN kernel blocks are built and kept
    (sharded, docs/scale.md §5)."""

    retries: int = 1
    device: str = "cpu"
    threads_per_worker: int = 1
    point_time_limit_s: float | None = None
    stall_after_s: float = 60.0
    max_requeues: int = 5
    max_points: int = MAX_POINTS
    memory_limit: float | None = None
    block_scheduler: str | None = None

    def __post_init__(self) -> None:
        check_non_negative_int("retries", self.retries)
        check_choice("device", self.device, DEVICES)
        check_positive("threads_per_worker", self.threads_per_worker, integer=True)
        if self.point_time_limit_s is not None:
            check_positive("point_time_limit_s", self.point_time_limit_s)
        check_positive("stall_after_s", self.stall_after_s)
        if self.stall_after_s <= 2.0:
            raise ConfigError(f"stall_after_s must exceed 2 s (two worker heartbeats), got "
                              f"{self.stall_after_s}.")
        check_non_negative_int("max_requeues", self.max_requeues)
        check_positive("max_points", self.max_points, integer=True)
        if self.memory_limit is not None:
            check_positive("memory_limit", self.memory_limit)
        if self.block_scheduler is not None:
            check_string("block_scheduler", self.block_scheduler)

    def to_dict(self) -> dict:
        return {"retries": self.retries, "device": self.device,
                "threads_per_worker": self.threads_per_worker,
                "point_time_limit_s": self.point_time_limit_s,
                "stall_after_s": self.stall_after_s, "max_requeues": self.max_requeues,
                "max_points": self.max_points, "memory_limit": self.memory_limit,
                "block_scheduler": self.block_scheduler}


def execution_settings(raw: Any, where: str = "execution") -> ExecutionSettings:
    """ExecutionSettings from an [execution] table."""
    values = table(raw, where, _EXECUTION_FIELDS)
    try:
        return ExecutionSettings(**values)
    except ValueError as error:
        raise named(where, error, _EXECUTION_FIELDS) from error


#: Where in a config a point's data and architecture came from (field names for errors).
PointOrigin = tuple[str, str]


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: its name, the store path, execution settings and the points in config
    order, each once. origins: per point, the config fields its data and architecture came
    from (for error messages of the data checks; not part of the sweep's identity)."""

    name: str
    db: str
    execution: ExecutionSettings
    points: tuple[ExperimentSpec, ...]
    description: str = ""
    source: str = ""
    origins: tuple[PointOrigin, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        check_string("name", self.name)
        check_string("db", self.db)
        if not self.points:
            raise ConfigError(f"sweep {self.name!r} has no points.")
        for index, point in enumerate(self.points):
            if not isinstance(point, ExperimentSpec):
                raise ConfigError(f"points[{index}] must be an ExperimentSpec, got "
                                  f"{type(point).__name__}.")
        if self.origins and len(self.origins) != len(self.points):
            raise ConfigError("origins must give one (data, architecture) pair per point.")

    def point_origins(self) -> list[tuple[ExperimentSpec, str, str]]:
        """(spec, data field, architecture field) per point."""
        origins = self.origins or tuple(("data", "architectures") for _ in self.points)
        return [(spec, data_where, architecture_where)
                for spec, (data_where, architecture_where) in zip(self.points, origins,
                                                                  strict=True)]

    def check_data(self) -> None:
        """Load each distinct data set once and check every architecture against it
        (`sweep_data.check_points_data`): what the config alone cannot tell."""
        check_points_data(self.point_origins())

    def to_dict(self) -> dict:
        return {"name": self.name, "db": self.db, "description": self.description,
                "source": self.source, "execution": self.execution.to_dict(),
                "points": [point.to_dict() for point in self.points]}


def _axis_values(where: str, value: Any) -> list:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where} is an empty list; give at least one value.")
        return value
    return [value]


def _check_value(section: str, name: str, where: str, value: Any) -> None:
    """Range and type of one scalar entry of a data or hyper axis (so a bad list entry is
    named with its index); network and theory fields are checked by their constructors."""
    key = (section, name)
    if key == ("hyper", "width"):
        theory_width(where, value)
    elif key in (("hyper", "temperature"), ("hyper", "lambda0"), ("hyper", "lambda1")):
        check_positive(where, value)
    elif key in (("data", "n_train"), ("data", "n_test")):
        check_positive(where, value, integer=True)
    elif key == ("data", "seed"):
        check_non_negative_int(where, value)
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


def _architecture_entries(raw: Any, where: str) -> list[tuple[dict, str]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must be a non-empty array of tables ([[architectures]] with "
                          "kind = 'fc' | 'cnn' | 'lcn' | 'cnn-gap').")
    return [(table(entry, f"{where}[{index}]", _ARCHITECTURE_FIELDS), f"{where}[{index}]")
            for index, entry in enumerate(raw)]


def _merged(base: dict, entry: dict, where: str) -> dict:
    """The base config with one [[points]] entry's sections laid over it, field by field."""
    entry = table(entry, where, ("data", "hyper", "theory", "network", "architectures"))
    merged = dict(base)
    for section in ("data", "hyper", "theory", "network"):
        if section in entry:
            override = table(entry[section], f"{where}.{section}", _SECTION_FIELDS[section])
            merged[section] = {**(base.get(section) or {}), **override}
    if "architectures" in entry:
        merged["architectures"] = entry["architectures"]
    return merged


def _origin(entry_where: str | None, section: str, raw_entry: dict | None) -> str:
    """Where a field came from, for error messages: the [[points]] entry if it set it."""
    if entry_where is not None and raw_entry is not None and section in raw_entry:
        return f"{entry_where}.{section}"
    return section


def _expand(raw: dict, entry_where: str | None, raw_entry: dict | None
            ) -> list[tuple[ExperimentSpec, str, str]]:
    """Grid of one (merged) config: (spec, where its data came from, where its architecture
    came from)."""
    def where(section: str) -> str:
        return _origin(entry_where, section, raw_entry)

    sections = {}
    for section in ("data", "hyper", "theory", "network"):
        values = table(raw.get(section), where(section), _SECTION_FIELDS[section])
        sections[section] = {**_DEFAULTS[section], **values}
    for name in ("dataset", "n_train", "n_test"):
        if name not in sections["data"]:
            raise ConfigError(f"{where('data')}.{name} is missing.")
    if "width" not in sections["hyper"]:
        raise ConfigError(f"{where('hyper')}.width is missing (one number or a list).")
    theory = theory_settings(sections["theory"], where("theory"))
    network_grid: list[SamplerSettings | None] = [None]
    if raw.get("network") is not None:
        network_grid = [sampler_settings(values, where("network")) for values in
                        _section_grid("network", sections["network"], where("network"))]
    if not theory.any and network_grid == [None]:
        raise ConfigError(f"{where('theory')}.finite and .infinite are both false and there is "
                          "no [network] section: nothing to compute.")
    options = sections["data"]["options"]
    data_grid = _section_grid("data", {k: v for k, v in sections["data"].items()
                                       if k != "options"}, where("data"))
    hyper_grid = _section_grid("hyper", sections["hyper"], where("hyper"))
    entries = _architecture_entries(raw.get("architectures"),
                                    _origin(entry_where, "architectures", raw_entry))
    out = []
    for data, hyper, (entry, architecture_where), network in itertools.product(
            data_grid, hyper_grid, entries, network_grid):
        data_values = {**data, "options": options}
        try:
            spec = ExperimentSpec(
                data_spec(data_values, where("data")),
                any_architecture(entry, hyper["activation"], architecture_where,
                             f"{where('hyper')}.activation"),
                hyper["width"], hyper["temperature"], hyper["lambda0"], hyper["lambda1"],
                theory if theory.any else None, network)
        except ConfigError as error:
            message = str(error)
            if message.startswith("retuned_priors"):
                raise named(where("theory"), error, ("retuned_priors",)) from error
            if message.startswith(("width", "temperature", "lambda")):
                raise named(where("hyper"), error, ("width", "temperature", "lambda0",
                                                    "lambda1")) from error
            raise
        out.append((spec, where("data"), architecture_where))
    return out


def _grid_size(raw: dict, where: str) -> tuple[int, list[str]]:
    """Points of one (merged) grid counted from its axes, without expanding it, and the factors
    ('hyper.width 100', …) that make the count. Malformed sections count as 1 here; the
    validation of the expansion names them."""
    size, factors = 1, []
    for section, axes in AXES.items():
        values = raw.get(section)
        if not isinstance(values, dict) or (section == "network" and values is None):
            continue
        for name in axes:
            value = values.get(name)
            if isinstance(value, list) and len(value) > 1:
                size *= len(value)
                factors.append(f"{section}.{name} {len(value)}")
    architectures = raw.get("architectures")
    if isinstance(architectures, list) and len(architectures) > 1:
        size *= len(architectures)
        factors.append(f"architectures {len(architectures)}")
    return size, factors


def count_points(raw: dict) -> tuple[int, str]:
    """How many points a sweep config describes (duplicates included), counted from its axes
    before anything is expanded, and a description of the count."""
    entries = raw.get("points")
    if not isinstance(entries, list) or not entries:
        size, factors = _grid_size(raw, "")
        return size, " × ".join(factors) or "one point"
    total, parts = 0, []
    for index, entry in enumerate(entries):
        merged = _merged(raw, entry, f"points[{index}]") if isinstance(entry, dict) else raw
        size, factors = _grid_size(merged, f"points[{index}]")
        total += size
        parts.append(f"points[{index}]: {' × '.join(factors) or '1'}")
    return total, "; ".join(parts)


def parse_sweep_config(raw: dict, source: str = "", *,
                       max_points: int | None = None) -> SweepConfig:
    """Validate a sweep config dictionary (as read from TOML) and expand it into points.
    Does not load data; `SweepConfig.check_data` does (see `load_sweep_config`).

    The grid is counted from its axes first and refused, before any expansion, when it has more
    than max_points points (default: execution.max_points, itself 100 000 by default)."""
    table(raw, "the config", _TOP_LEVEL)
    name = check_string("name", raw.get("name", Path(source).stem or "sweep"))
    db = check_string("db", raw.get("db", f"runs/{name}.sqlite"))
    execution = execution_settings(raw.get("execution"))
    limit = execution.max_points if max_points is None else max_points
    check_positive("max_points", limit, integer=True)
    total, how = count_points(raw)
    if total > limit:
        raise ConfigError(
            f"the sweep has {total:,} points ({how}), more than the limit of {limit:,}; split "
            f"it into smaller sweeps, or raise the limit (execution.max_points in the config, "
            f"or --max-points) if you mean it.")
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
        unique.setdefault(spec.content_hash, (spec, data_where, architecture_where))
    return SweepConfig(name, db, execution, tuple(spec for spec, _, _ in unique.values()),
                       str(raw.get("description", "")), source,
                       tuple((data_where, architecture_where)
                             for _, data_where, architecture_where in unique.values()))


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a dictionary; a missing file or a syntax error is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist.")
    with path.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from error


def load_sweep_config(path: str | Path, check_data: bool = True, *,
                      max_points: int | None = None) -> SweepConfig:
    """Read, validate and expand a TOML sweep config. With check_data, every distinct data set
    is loaded once and every architecture checked against it, so no point fails later for a
    reason the config already determines. max_points: see `parse_sweep_config`."""
    config = parse_sweep_config(read_toml(path, "sweep config"), str(path),
                                max_points=max_points)
    if check_data:
        config.check_data()
    return config
