"""One experiment as a pure, hashable, validated value (docs/architecture.md "One pipeline").

An experiment is (data spec, architecture spec, width N, T, λ0, λ1, theory settings, sampler
settings): the effective theory at width N (N = math.inf is the infinite-width NNGP limit,
docs/math/theory.md §3) and/or a sampled network of width N. `compare` and `sweep` both expand
their configs into these specs; one runner executes a spec, one store records it under its
content hash.

The content hash is the SHA-256 of the spec's canonical JSON (sorted keys, no spaces, shortest
float repr, N written by `krenorm.width.width_to_json`) prefixed with SPEC_VERSION, so the same
numbers give the same hash in every process and on every machine. Execution details that do
not change what is computed (device, workers) are not part of a spec.

Every constructor here validates its arguments and raises a ValueError naming the field, so the
API, the CLI and the TOML configs are checked by the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from krenorm.architectures import ArchitectureSpec
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.datasets import DATASET_LOADERS, LIST_OPTIONS, dataset_options
from krenorm.experiments.errors import ConfigError
from krenorm.networks import SAMPLERS
from krenorm.networks.settings import SamplerSettings
from krenorm.theory.solvers import SOLVER_METHODS
from krenorm.width import check_width, is_infinite, width_from_json, width_label, width_to_json

#: Bumped whenever the meaning of a spec field changes, so old hashes are never reused.
#: 2: network settings are `SamplerSettings` (thin, step size, adaptation, kernel records added),
#: the theory settings carry `retuned_priors`, and N may be math.inf (written "inf").
#: 3: the network settings carry `leapfrog_steps` (HMC samplers) and the sampler set grew
#: 'hmc' and 'collapsed-hmc'.
SPEC_VERSION = 3


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")


def _check_positive_number(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class DataSpec:
    """The data of one experiment: a dataset name (a key of `datasets.DATASET_LOADERS`), the
    training and test sizes P and P_test, the data seed and the dataset's other keyword
    arguments as sorted (name, value) pairs (lists become tuples)."""

    dataset: str
    n_train: int
    n_test: int
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_LOADERS:
            raise ConfigError(f"dataset must be one of {sorted(DATASET_LOADERS)}, got "
                              f"{self.dataset!r}.")
        _check_int("n_train", self.n_train, 1)
        _check_int("n_test", self.n_test, 1)
        _check_int("seed", self.seed, 0)
        options = dict(self.options)
        allowed = dataset_options(self.dataset)
        for key, value in options.items():
            if key not in allowed:
                raise ConfigError(f"options.{key} is not an option of dataset {self.dataset!r}; "
                                  f"allowed: {sorted(allowed)}.")
            if key in LIST_OPTIONS and not isinstance(value, (list, tuple)):
                raise ConfigError(f"options.{key} must be a list, got {value!r}.")
        normalised = tuple(sorted((str(key), _hashable(value)) for key, value in options.items()))
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
    """Which theory fits a point runs and the saddle-point solver options passed to
    `krenorm.theory.fit_theory` (docs/math/theory.md §3).

    finite: the theory at the point's width N (for N = math.inf that is the NNGP limit).
    infinite: also the N → ∞ reference at a finite N (metrics 'theory_infinite.*').
    retuned_priors: also the infinite-width Gaussian process with the readout priors
    renormalized by this point's Q̄ (λ1/Q̄ for FC, λ1/q̄_i per patch for an LCN, the diagonal
    of Q̄ for a CNN without pooling; metrics 'retuned.*'); needs a finite N and `finite`.
    """

    finite: bool = True
    infinite: bool = True
    retuned_priors: bool = False
    solver: str = "auto"
    tolerance: float = 1e-9
    max_iterations: int = 500
    n_starts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("finite", "infinite", "retuned_priors"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        if self.solver not in SOLVER_METHODS:
            raise ConfigError(f"solver must be one of {sorted(SOLVER_METHODS)}, got "
                              f"{self.solver!r}.")
        object.__setattr__(self, "tolerance", _check_positive_number("tolerance",
                                                                     self.tolerance))
        _check_int("max_iterations", self.max_iterations, 1)
        _check_int("n_starts", self.n_starts, 1)
        _check_int("seed", self.seed, 0)
        if self.retuned_priors and not self.finite:
            raise ConfigError("retuned_priors needs finite = true (the retuned priors come from "
                              "the finite-width Q̄).")

    @property
    def any(self) -> bool:
        """Whether any theory fit is requested."""
        return self.finite or self.infinite

    def solver_options(self) -> dict:
        """Keyword options of `krenorm.theory.fit_theory`."""
        return {"solver": self.solver, "tolerance": self.tolerance,
                "max_iterations": self.max_iterations, "n_starts": self.n_starts,
                "seed": self.seed}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TheorySettings:
        return cls(**raw)


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment. width is N: a positive float, math.inf for the infinite-width limit
    (theory only), an integer when a network is sampled. Temperature T and prior precisions λ0,
    λ1 as in docs/math/theory.md §1. At least one of theory / network is set.

    At N = ∞ the 'infinite' reference of the theory settings is the fit itself, so it is
    normalised to False there (the two ways of writing the same point hash the same)."""

    data: DataSpec
    architecture: ArchitectureSpec | DeepArchitectureSpec
    width: float
    temperature: float
    lambda0: float = 1.0
    lambda1: float = 1.0
    theory: TheorySettings | None = TheorySettings()
    network: SamplerSettings | None = None

    def __post_init__(self) -> None:
        for name, kind in (("data", DataSpec), ("theory", TheorySettings),
                           ("network", SamplerSettings)):
            value = getattr(self, name)
            if not isinstance(value, kind) and not (value is None and name in ("theory",
                                                                               "network")):
                raise ConfigError(f"{name} must be a {kind.__name__}, got "
                                  f"{type(value).__name__}.")
        if not isinstance(self.architecture, ArchitectureSpec | DeepArchitectureSpec):
            raise ConfigError(f"architecture must be an ArchitectureSpec or a "
                              f"DeepArchitectureSpec, got {type(self.architecture).__name__}.")
        if self.is_deep:
            self._check_deep()
        try:
            width = check_width(self.width, name="width")
        except ValueError as error:
            raise ConfigError(str(error)) from error
        object.__setattr__(self, "width", width)
        for name in ("temperature", "lambda0", "lambda1"):
            object.__setattr__(self, name, _check_positive_number(name, getattr(self, name)))
        if self.theory is not None and not self.theory.any:
            object.__setattr__(self, "theory", None)
        if self.theory is None and self.network is None:
            raise ConfigError("an experiment needs theory settings, network settings or both.")
        if self.network is not None and self.network.sampler not in SAMPLERS:
            raise ConfigError(f"network.sampler = {self.network.sampler!r} is not available; "
                              f"choose one of {sorted(SAMPLERS)}.")
        if self.network is not None and (is_infinite(width) or not width.is_integer()):
            raise ConfigError(f"width = {self.width!r} must be a whole number when a network "
                              "is sampled (a network has a finite number of units).")
        if is_infinite(width) and self.theory is not None:
            if self.theory.retuned_priors:
                raise ConfigError("retuned_priors needs a finite width: at N = ∞ Q̄ = 1 and the "
                                  "retuned process is the NNGP itself.")
            if self.theory.infinite:
                object.__setattr__(self, "theory", TheorySettings(**{
                    **self.theory.to_dict(), "infinite": False, "finite": True}))

    @property
    def is_deep(self) -> bool:
        """A DeepArchitectureSpec of depth ≥ 2 (depth-1 configs give the one-layer spec):
        theory by `fit_deep_theory`, networks by `sample_deep_posterior` (docs/deep.md). All
        hidden layers have width N and prior λ0, the readout λ1."""
        return isinstance(self.architecture, DeepArchitectureSpec)

    @property
    def shallow_architecture(self) -> ArchitectureSpec:
        """The one-hidden-layer spec of a non-deep point (ValueError for a deep one)."""
        if not isinstance(self.architecture, ArchitectureSpec):
            raise ValueError("a deep point has no one-hidden-layer architecture; its theory "
                             "and networks run through experiments.deep_step.")
        return self.architecture

    def _check_deep(self) -> None:
        if self.theory is not None and self.theory.retuned_priors:
            raise ConfigError("retuned_priors is not defined for deep architectures (depth ≥ 2); "
                              "set it to false.")
        if self.network is not None and self.network.n_replicas < 4:
            raise ConfigError(f"network.n_replicas = {self.network.n_replicas}: a deep network "
                              "is sampled with the metastability check, which needs ≥ 4 "
                              "replicas (two halves of ≥ 2 chains).")

    @property
    def is_infinite_width(self) -> bool:
        return is_infinite(self.width)

    def problem_key(self) -> tuple:
        """What a theory point and a network point must share to be compared: the data, the
        architecture, T, λ0 and λ1 (everything but N and the settings)."""
        return (self.data, self.architecture, self.temperature, self.lambda0, self.lambda1)

    def to_dict(self) -> dict:
        return {
            "data": self.data.to_dict(),
            "architecture": _plain(self.architecture.to_dict()),
            "width": width_to_json(self.width),
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
        what = "+".join(part for part, present in (("theory", self.theory is not None),
                                                   ("network", self.network is not None))
                        if present)
        depth = (f" L={self.architecture.depth}" if isinstance(self.architecture,
                                                                DeepArchitectureSpec) else "")
        return (f"{self.data.dataset} P={self.data.n_train} {self.architecture.kind}{depth} "
                f"N={width_label(self.width)} T={self.temperature:g} seed={self.data.seed} "
                f"{what}")

    @classmethod
    def from_dict(cls, raw: dict) -> ExperimentSpec:
        """Inverse of `to_dict` (reads the spec JSON stored with each result; spec_version 1
        rows read too: their network settings are a subset of SamplerSettings)."""
        theory = raw.get("theory")
        network = raw.get("network")
        architecture: ArchitectureSpec | DeepArchitectureSpec = (
            DeepArchitectureSpec.from_dict(raw["architecture"]) if "depth" in raw["architecture"]
            else ArchitectureSpec.from_dict(raw["architecture"]))
        return cls(
            DataSpec.from_dict(raw["data"]), architecture,
            width_from_json(raw["width"]), raw["temperature"], raw["lambda0"], raw["lambda1"],
            None if theory is None else TheorySettings.from_dict(theory),
            None if network is None else SamplerSettings.from_dict(network),
        )


def NetworkSpec(sampler: str = "collapsed", n_replicas: int = 8, n_steps: int = 1000,
                burn_in: int | None = None, seed: int = 0, dtype: str = "float64"
                ) -> SamplerSettings:
    """Deprecated: use `krenorm.networks.settings.SamplerSettings` (same fields and more).
    Keeps the old defaults (8 replicas × 1000 steps)."""
    warnings.warn("krenorm.experiments.spec.NetworkSpec is deprecated; use "
                  "krenorm.networks.settings.SamplerSettings.", DeprecationWarning, stacklevel=2)
    return SamplerSettings(sampler=sampler, n_replicas=n_replicas, n_steps=n_steps,
                           burn_in=burn_in, seed=seed, dtype=dtype)
