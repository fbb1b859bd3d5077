"""Errors of the data layer; each message says what to change (docs/architecture.md, "Data without a
network")."""

from __future__ import annotations


class DatasetUnavailableError(FileNotFoundError):
    """No local source holds the data set; the message lists where it was looked for and how to
    get it."""


class ChecksumMismatchError(ValueError):
    """A file's SHA-256 differs from its pinned value: it was altered, truncated or replaced."""


class UnsafePickleError(ValueError):
    """A pickle asked for something other than plain numpy array reconstruction."""
