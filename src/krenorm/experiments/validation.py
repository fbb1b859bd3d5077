"""Reading config tables into the validated objects the API uses (docs/architecture.md "One
pipeline"): `compare` and `sweep` configs, from TOML or from Python, go through the same
constructors — `DataSpec`, `ArchitectureSpec`, `SamplerSettings`, `TheorySettings`,
`ExperimentSpec`, `krenorm.width.check_width` — and a failure becomes a `ConfigError` naming the
TOML field (``networks.burn_in``, ``architectures[2].mask``, ``data.options.classes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from krenorm.architectures import ARCHITECTURE_KINDS, ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.errors import ConfigError
from krenorm.experiments.spec import DataSpec, TheorySettings
from krenorm.kernels.activations import get_activation
from krenorm.kernels.patches import PatchGeometry
from krenorm.networks import SAMPLERS
from krenorm.networks.settings import SamplerSettings
from krenorm.width import check_width

#: The first word of a constructor's message, when it is a field name (``burn_in must …``,
#: ``options.classes must …``, ``thin = 3 leaves …``).
_LEADING_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)")


def named(where: str, error: Exception, names: Iterable[str]) -> ConfigError:
    """A ConfigError for `error` raised while building the object of table `where`: the message
    gets the table prefixed to the field it starts with (``where.field …``) when that is one of
    `names`, else ``where: message``."""
    message = str(error)
    match = _LEADING_NAME.match(message)
    if match and match.group(1) in set(names):
        return ConfigError(f"{where}.{message}")
    return ConfigError(f"{where}: {message}")


def table(raw: Any, where: str, allowed: Iterable[str]) -> dict:
    """A TOML table with only `allowed` keys (None reads as an empty table)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {raw!r}.")
    allowed = tuple(allowed)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} in {where}; allowed: {sorted(allowed)}.")
    return raw


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive(where: str, value: Any, integer: bool = False) -> None:
    """A finite positive number (or integer)."""
    number = is_int(value) if integer else (is_int(value) or isinstance(value, float))
    if not number or not value > 0 or value != value or value == float("inf"):
        kind = "integer" if integer else "number"
        raise ConfigError(f"{where} must be a finite positive {kind}, got {value!r}.")


def check_non_negative_int(where: str, value: Any) -> None:
    if not is_int(value) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}.")


def check_choice(where: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{where} must be one of {sorted(choices)}, got {value!r}.")


def check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    return value


def check_string(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}.")
    return value


def theory_width(where: str, value: Any) -> float:
    """A width N of the theory: a positive number, or inf (TOML `inf`) for infinite width."""
    try:
        return check_width(value, name=where)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def network_width(where: str, value: Any) -> int:
    """A width N of a sampled network: a positive integer."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{where} must be a positive integer (units or channels of a sampled "
                          f"network), got {value!r}.")
    return value


def data_spec(values: dict, where: str) -> DataSpec:
    """A DataSpec from (dataset, n_train, n_test, seed, options) of table `where`."""
    for name in ("dataset", "n_train", "n_test"):
        if name not in values:
            raise ConfigError(f"{where}.{name} is missing.")
    options = values.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options must be a table, got {options!r}.")
    try:
        return DataSpec(values["dataset"], values["n_train"], values["n_test"],
                        values.get("seed", 0), tuple(options.items()))
    except ValueError as error:
        raise named(where, error, ("dataset", "n_train", "n_test", "seed", "options")) from error


#: Keys of one entry of `layers` (a deep convolutional architecture, one per hidden layer).
LAYER_FIELDS: tuple[str, ...] = ("mask", "stride", "padding")


def _deep_architecture(entry: dict, activation: str, where: str, activation_where: str
                       ) -> ArchitectureSpec | DeepArchitectureSpec:
    """`depth` (and for the convolutional kinds `layers`, one {mask, stride, padding} table per
    hidden layer) of an [[architectures]] entry: depth 1 is the one-layer ArchitectureSpec
    itself (same spec, same hash), depth ≥ 2 a DeepArchitectureSpec (docs/deep.md)."""
    depth = entry.get("depth", 1)
    if not is_int(depth) or depth < 1:
        raise ConfigError(f"{where}.depth must be a positive integer (hidden layers), got "
                          f"{depth!r}.")
    layers = entry.get("layers")
    kind = entry["kind"]
    if kind == "fc":
        if layers is not None:
            raise ConfigError(f"{where}.layers: an 'fc' architecture has no patch geometry; "
                              "give depth only.")
        return ArchitectureSpec("fc", activation) if depth == 1 else DeepArchitectureSpec(
            "fc", activation, depth)
    if layers is None:
        raise ConfigError(f"{where}.layers is missing: a {kind} of depth {depth} needs one "
                          "{mask, stride, padding} table per hidden layer.")
    if any(name in entry for name in LAYER_FIELDS):
        raise ConfigError(f"{where}: give the geometry in layers only, not mask/stride/padding "
                          "next to it.")
    if not isinstance(layers, list) or len(layers) != depth:
        raise ConfigError(f"{where}.layers must be a list of {depth} tables (one per hidden "
                          f"layer), got {layers!r}.")
    geometries = []
    for index, layer in enumerate(layers):
        layer_where = f"{where}.layers[{index}]"
        layer = table(layer, layer_where, LAYER_FIELDS)
        try:
            geometries.append(PatchGeometry(layer.get("mask", 1), layer.get("stride", 1),
                                            layer.get("padding", 0)))
        except ValueError as error:
            raise ConfigError(f"{layer_where}.{error}") from error
    if depth == 1:
        return ArchitectureSpec(kind, activation, geometry=geometries[0])
    try:
        return DeepArchitectureSpec(kind, activation, depth, geometries)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def any_architecture(entry: dict, activation: Any, where: str, activation_where: str
                     ) -> ArchitectureSpec | DeepArchitectureSpec:
    """`architecture`, or with `depth` (and `layers`) in the entry a deep architecture
    (`_deep_architecture`): what [[architectures]] entries of compare and sweep configs take."""
    if "depth" not in entry and "layers" not in entry:
        return architecture(entry, activation, where, activation_where)
    if "kind" not in entry:
        raise ConfigError(f"{where}.kind is missing; choose one of {ARCHITECTURE_KINDS}.")
    check_choice(f"{where}.kind", entry["kind"], ARCHITECTURE_KINDS)
    if not isinstance(activation, str):
        raise ConfigError(f"{activation_where} must be a string, got {activation!r}.")
    try:
        get_activation(activation)
    except ValueError as error:
        raise ConfigError(f"{where} with {activation_where} = {activation!r}: {error}"
                          ) from error
    return _deep_architecture(entry, activation, where, activation_where)


def architecture(entry: dict, activation: Any, where: str, activation_where: str
                 ) -> ArchitectureSpec:
    """An ArchitectureSpec from one [[architectures]] entry (kind, mask, stride, padding) and
    the activation set elsewhere (`activation_where`), or the entry's own `activation` where
    it has one (a compare config may mix activations: one problem per architecture entry)."""
    if "kind" not in entry:
        raise ConfigError(f"{where}.kind is missing; choose one of {ARCHITECTURE_KINDS}.")
    check_choice(f"{where}.kind", entry["kind"], ARCHITECTURE_KINDS)
    if "activation" in entry:
        activation, activation_where = entry["activation"], f"{where}.activation"
    if not isinstance(activation, str):
        raise ConfigError(f"{activation_where} must be a string, got {activation!r}.")
    try:
        return ArchitectureSpec(entry["kind"], activation, entry.get("mask", 1),
                                entry.get("stride", 1), entry.get("padding", 0))
    except ValueError as error:
        message = str(error)
        if message.startswith(("mask", "stride", "padding")):
            raise ConfigError(f"{where}.{message}") from error
        raise ConfigError(f"{where} with {activation_where} = {activation!r}: {message}"
                          ) from error


SAMPLER_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(SamplerSettings))
THEORY_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(TheorySettings))


def sampler_settings(values: dict, where: str) -> SamplerSettings:
    """SamplerSettings from a [network] / [networks] table (unknown keys refused; a sampler
    name the settings know but this version's samplers do not is refused too)."""
    table(values, where, SAMPLER_FIELDS)
    try:
        settings = SamplerSettings(**values)
    except ValueError as error:
        raise named(where, error, SAMPLER_FIELDS) from error
    if settings.sampler not in SAMPLERS:
        raise ConfigError(f"{where}.sampler = {settings.sampler!r} is not available; choose one "
                          f"of {sorted(SAMPLERS)}.")
    return settings


def theory_settings(values: dict, where: str) -> TheorySettings:
    """TheorySettings from a [theory] table (unknown keys refused)."""
    table(values, where, THEORY_FIELDS)
    try:
        return TheorySettings(**values)
    except ValueError as error:
        raise named(where, error, THEORY_FIELDS) from error
