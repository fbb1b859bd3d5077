"""One experiment of a sweep as a pure, hashable value (ARCHITECTURE.md "Data flow", "Scale").

An experiment is (data spec, architecture spec, N, T, λ0, λ1, theory settings, network
settings). Its content hash is the SHA-256 of its canonical JSON (sorted keys, no spaces,
shortest float repr) prefixed with SPEC_VERSION, so the same numbers give the same hash in every
process and on every machine; the results store keys rows by it.
Execution details that do not change what is computed (device, workers) are not part of a spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from krenorm.architectures import ArchitectureSpec

#: Bumped whenever the meaning of a spec field changes, so old hashes are never reused.
SPEC_VERSION = 1


def _hashable(value: Any) -> Any:
    """Lists (from TOML or JSON) become tuples, recursively, so specs stay hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    return value


def _plain(value: Any) -> Any:
    """Tuples become lists, recursively, for JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class DataSpec:
    """The data of one experiment: a dataset name (see experiments.sweep_data.DATASET_LOADERS),
    the training and test sizes P and P_test, the data seed and the dataset's other keyword
    arguments as sorted (name, value) pairs."""

    dataset: str
    n_train: int
    n_test: int
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        normalised = tuple(sorted((str(key), _hashable(value)) for key, value in self.options))
        object.__setattr__(self, "options", normalised)

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test,
                "seed": self.seed, "options": {key: _plain(value) for key, value in self.options}}

    @classmethod
    def from_dict(cls, raw: dict) -> DataSpec:
        return cls(raw["dataset"], raw["n_train"], raw["n_test"], raw["seed"],
                   tuple(raw.get("options", {}).items()))


@dataclass(frozen=True)
class TheorySettings:
    """Which theory fits to run (finite width N and/or the N → ∞ NNGP limit) and the saddle-point
    solver options passed to `krenorm.theory.fit_theory` (THEORY.md §3)."""

    finite: bool = True
    infinite: bool = True
    solver: str = "auto"
    tolerance: float = 1e-9
    max_iterations: int = 500
    n_starts: int = 1
    seed: int = 0

    def solver_options(self) -> dict:
        return {"solver": self.solver, "tolerance": self.tolerance,
                "max_iterations": self.max_iterations, "n_starts": self.n_starts,
                "seed": self.seed}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NetworkSpec:
    """Sampled finite network at width N (see `krenorm.networks.sample_posterior`)."""

    sampler: str = "collapsed"
    n_replicas: int = 8
    n_steps: int = 1000
    burn_in: int | None = None
    seed: int = 0
    dtype: str = "float64"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentSpec:
    """One point of a sweep. width is N (float for the theory; an integer when a network is
    sampled); temperature T, prior precisions λ0 and λ1 as in THEORY.md §1. At least one of
    theory / network is set."""

    data: DataSpec
    architecture: ArchitectureSpec
    width: float
    temperature: float
    lambda0: float = 1.0
    lambda1: float = 1.0
    theory: TheorySettings | None = TheorySettings()
    network: NetworkSpec | None = None

    def __post_init__(self) -> None:
        for name in ("width", "temperature", "lambda0", "lambda1"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.theory is None and self.network is None:
            raise ValueError("an experiment needs theory settings, network settings or both.")

    def to_dict(self) -> dict:
        return {
            "data": self.data.to_dict(),
            "architecture": _plain(self.architecture.to_dict()),
            "width": self.width,
            "temperature": self.temperature,
            "lambda0": self.lambda0,
            "lambda1": self.lambda1,
            "theory": None if self.theory is None else self.theory.to_dict(),
            "network": None if self.network is None else self.network.to_dict(),
        }

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, NaN refused: the text the content hash is taken of."""
        return json.dumps({"spec_version": SPEC_VERSION, **self.to_dict()}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False)

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of `canonical_json()`: the store's key for this experiment."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def label(self) -> str:
        """A short human description for progress bars and logs."""
        return (f"{self.data.dataset} P={self.data.n_train} {self.architecture.kind} "
                f"N={self.width:g} T={self.temperature:g} seed={self.data.seed}")

    @classmethod
    def from_dict(cls, raw: dict) -> ExperimentSpec:
        """Inverse of `to_dict` (reads the spec JSON stored with each result)."""
        architecture = ArchitectureSpec(**raw["architecture"])
        theory = raw.get("theory")
        network = raw.get("network")
        return cls(
            DataSpec.from_dict(raw["data"]), architecture, raw["width"], raw["temperature"],
            raw["lambda0"], raw["lambda1"],
            None if theory is None else TheorySettings(**theory),
            None if network is None else NetworkSpec(**network),
        )
