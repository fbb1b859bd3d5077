"""Configuration of the main job (`krenorm compare`): data, hyper-parameters, architectures,
theory widths and sampled-network settings, read from TOML and validated before any work starts.
Every error names the offending field."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from krenorm.architectures import ARCHITECTURE_KINDS, ArchitectureSpec


class ConfigError(ValueError):
    """A configuration field is missing, unknown or out of range."""


@dataclass(frozen=True)
class DataConfig:
    """What `krenorm.data.load_dataset` receives (or a synthetic local teacher)."""

    dataset: str = "mnist"
    classes: tuple = (0, 1)
    n_train: int = 100
    n_test: int = 500
    side: int | None = None
    grayscale: bool = False
    standardize: str | None = "global"
    labels: str = "pm1"
    seed: int = 0


@dataclass(frozen=True)
class HyperParameters:
    temperature: float = 0.1
    lambda0: float = 1.0
    lambda1: float = 1.0
    activation: str = "erf"


@dataclass(frozen=True)
class NetworkSettings:
    """Sampled networks: widths, sampler and chain lengths (see krenorm.networks)."""

    widths: tuple[int, ...] = ()
    sampler: str = "collapsed"
    n_replicas: int = 8
    n_steps: int = 1000
    burn_in: int | None = None
    seed: int = 0
    dtype: str = "float64"


@dataclass(frozen=True)
class CompareConfig:
    name: str
    data: DataConfig
    hyper: HyperParameters
    architectures: tuple[ArchitectureSpec, ...]
    theory_widths: tuple[float, ...]
    networks: NetworkSettings
    output_dir: str = "runs/compare"
    retuned_priors: bool = False
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Per-architecture sampled widths (from `network_widths` in [[architectures]]), overriding
    #: networks.widths — sampling cost grows very differently with N for FC, CNN and LCN.
    network_widths_by_kind: dict = field(default_factory=dict)

    def network_widths(self, kind: str) -> tuple[int, ...]:
        return tuple(self.network_widths_by_kind.get(kind, self.networks.widths))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["architectures"] = [spec.to_dict() for spec in self.architectures]
        return out


def _section(raw: dict, key: str, allowed: set[str]) -> dict:
    section = raw.get(key, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{key}] must be a table.")
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)} in [{key}]; allowed: "
                          f"{sorted(allowed)}.")
    return section


def _positive(where: str, value, integer: bool = False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ConfigError(f"{where} must be a positive {'integer' if integer else 'number'}, "
                          f"got {value!r}.")
    return value


def parse_config(raw: dict, source: str = "") -> CompareConfig:
    """Validate a config dictionary (as read from TOML)."""
    allowed_top = {"name", "output_dir", "data", "hyper", "architectures", "theory", "networks",
                   "retuned_priors", "notes"}
    unknown = set(raw) - allowed_top
    if unknown:
        raise ConfigError(f"unknown top-level field(s) {sorted(unknown)}; allowed: "
                          f"{sorted(allowed_top)}.")
    data = DataConfig(**_section(raw, "data", set(DataConfig.__dataclass_fields__)))
    data = DataConfig(**{**asdict(data), "classes": tuple(data.classes)})
    for name in ("n_train", "n_test"):
        _positive(f"data.{name}", getattr(data, name), integer=True)
    hyper = HyperParameters(**_section(raw, "hyper", set(HyperParameters.__dataclass_fields__)))
    for name in ("temperature", "lambda0", "lambda1"):
        _positive(f"hyper.{name}", getattr(hyper, name))
    raw_architectures = raw.get("architectures")
    if not isinstance(raw_architectures, list) or not raw_architectures:
        raise ConfigError("architectures must be a non-empty array of tables "
                          "([[architectures]] with kind = 'fc' | 'cnn' | 'lcn' | 'cnn-gap').")
    architectures = []
    widths_by_kind = {}
    for index, entry in enumerate(raw_architectures):
        allowed = {"kind", "mask", "stride", "padding", "network_widths"}
        if not isinstance(entry, dict) or set(entry) - allowed or "kind" not in entry:
            raise ConfigError(f"architectures[{index}] needs 'kind' and may set only "
                              f"{sorted(allowed)}, got {entry!r}.")
        if entry["kind"] not in ARCHITECTURE_KINDS:
            raise ConfigError(f"architectures[{index}].kind must be one of {ARCHITECTURE_KINDS}, "
                              f"got {entry['kind']!r}.")
        try:
            architectures.append(ArchitectureSpec(entry["kind"], hyper.activation,
                                                  entry.get("mask", 1), entry.get("stride", 1),
                                                  entry.get("padding", 0)))
        except ValueError as error:
            raise ConfigError(f"architectures[{index}]: {error}") from error
        if "network_widths" in entry:
            chosen = entry["network_widths"]
            if not isinstance(chosen, list):
                raise ConfigError(f"architectures[{index}].network_widths must be a list.")
            for width in chosen:
                _positive(f"architectures[{index}].network_widths[...]", width, integer=True)
            widths_by_kind[entry["kind"]] = tuple(chosen)
    theory = _section(raw, "theory", {"widths"})
    widths = theory.get("widths", [])
    if not isinstance(widths, list) or not widths:
        raise ConfigError("theory.widths must be a non-empty list of positive numbers.")
    for width in widths:
        _positive("theory.widths[...]", width)
    networks_raw = _section(raw, "networks", set(NetworkSettings.__dataclass_fields__))
    networks = NetworkSettings(**{**networks_raw,
                                  "widths": tuple(networks_raw.get("widths", ()))})
    for width in networks.widths:
        _positive("networks.widths[...]", width, integer=True)
    _positive("networks.n_replicas", networks.n_replicas, integer=True)
    _positive("networks.n_steps", networks.n_steps, integer=True)
    if networks.dtype not in ("float32", "float64"):
        raise ConfigError(f"networks.dtype must be 'float32' or 'float64', got {networks.dtype!r}.")
    name = raw.get("name", Path(source).stem or "compare")
    return CompareConfig(
        name=str(name),
        data=data,
        hyper=hyper,
        architectures=tuple(architectures),
        theory_widths=tuple(sorted(float(w) for w in widths)),
        networks=networks,
        output_dir=str(raw.get("output_dir", f"runs/{name}")),
        retuned_priors=bool(raw.get("retuned_priors", False)),
        source=source,
        notes=tuple(raw.get("notes", ())),
        network_widths_by_kind=widths_by_kind,
    )


def check_image_shape(config: CompareConfig, image_shape: tuple[int, ...]) -> None:
    """Refuse, before any work, a mask/stride/padding that does not fit the data's images."""
    for index, spec in enumerate(config.architectures):
        if spec.is_convolutional:
            if len(image_shape) != 3:
                raise ConfigError(f"architectures[{index}] ({spec.kind}) needs images, the data "
                                  f"has inputs of shape {tuple(image_shape)}.")
            try:
                spec.output_grid(tuple(image_shape))
            except ValueError as error:
                raise ConfigError(f"architectures[{index}]: {error}") from error


def load_config(path: str | Path) -> CompareConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    with path.open("rb") as handle:
        try:
            raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from error
    return parse_config(raw, str(path))


def demo_config_path() -> Path:
    """The shipped default config run by `krenorm demo` / `make demo`."""
    return Path(__file__).resolve().parent.parent / "configs" / "demo.toml"
