"""Errors of the experiments layer: a config field that is missing, unknown or out of range."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration field is missing, unknown or out of range. The message names the field
    as it is written in the TOML config (e.g. ``networks.burn_in``, ``architectures[1].mask``)
    and says what to change. Raised before any work starts."""
