"""The one row type of results: one finished experiment of the store, with the spec it ran and
an `Estimate` per source it computed — the theory at width N (N = ∞ included), the N → ∞
reference, the retuned-prior Gaussian process and the sampled network. Reports, tables,
figures and the agreement analysis all read these rows (docs/architecture.md "One pipeline").

Theory and network rows are matched by their problem (data, architecture, T, λ0, λ1) and the
exact width N — never by a source label or α.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from krenorm.experiments.spec import ExperimentSpec
from krenorm.experiments.store import ExperimentRecord, ResultsStore
from krenorm.width import INFINITE_WIDTH, is_infinite, width_to_json

#: Metric prefixes of the runner and the row field each fills.
SOURCES: dict[str, str] = {"theory": "theory", "theory_infinite": "infinite",
                           "retuned": "retuned", "network": "network"}


@dataclass(frozen=True)
class Estimate:
    """The numbers of one source at one point: test loss ε_g = bias² + variance
    (docs/math/theory.md §6), its standard error (sampled networks only), train error, α = P/N
    (0 at N = ∞), convergence of the saddle point (theory only) and the part's diagnostics."""

    test_loss: float
    bias2: float
    variance: float
    train_error: float
    alpha: float
    test_loss_stderr: float | None = None
    train_error_stderr: float | None = None
    converged: bool | None = None
    log_evidence: float | None = None
    diagnostics: dict = field(default_factory=dict)
    #: Posterior average of the instantaneous training MSE (theory; deep networks), if stored.
    train_loss: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_metrics(cls, prefix: str, metrics: dict, diagnostics: dict) -> Estimate | None:
        """The estimate of one source from a record's flat metrics ('prefix.test_loss', …);
        None when the point did not compute that source."""
        if f"{prefix}.test_loss" not in metrics:
            return None

        def get(name: str) -> Any:
            return metrics.get(f"{prefix}.{name}")

        return cls(get("test_loss"), get("bias2"), get("variance"), get("train_error"),
                   get("alpha") if get("alpha") is not None else 0.0,
                   get("test_loss_stderr"), get("train_error_stderr"), get("converged"),
                   get("log_evidence"), diagnostics.get(prefix) or {}, get("train_loss"))


@dataclass(frozen=True)
class ResultRow:
    """One finished experiment: its spec and the estimate of each source it computed.
    `infinite` is the N → ∞ reference computed next to a finite N; at an N = ∞ point the
    theory itself is that limit (see `infinite_loss`)."""

    spec_hash: str
    spec: ExperimentSpec
    seconds: float | None
    theory: Estimate | None = None
    infinite: Estimate | None = None
    retuned: Estimate | None = None
    network: Estimate | None = None
    provenance: dict = field(default_factory=dict)

    # -- spec fields, for tables ------------------------------------------------------------

    @property
    def dataset(self) -> str:
        return self.spec.data.dataset

    @property
    def n_train(self) -> int:
        return self.spec.data.n_train

    @property
    def architecture(self) -> str:
        return self.spec.architecture.kind

    @property
    def activation(self) -> str:
        return self.spec.architecture.activation

    @property
    def width(self) -> float:
        return self.spec.width

    @property
    def temperature(self) -> float:
        return self.spec.temperature

    @property
    def lambda0(self) -> float:
        return self.spec.lambda0

    @property
    def lambda1(self) -> float:
        return self.spec.lambda1

    @property
    def data_seed(self) -> int:
        return self.spec.data.seed

    @property
    def network_seed(self) -> int | None:
        return None if self.spec.network is None else self.spec.network.seed

    # -- headline numbers -------------------------------------------------------------------

    @property
    def theory_loss(self) -> float | None:
        return None if self.theory is None else self.theory.test_loss

    @property
    def infinite_estimate(self) -> Estimate | None:
        """The N → ∞ theory at this point: its `infinite` part, or the theory at N = ∞."""
        if self.infinite is not None:
            return self.infinite
        return self.theory if is_infinite(self.width) else None

    @property
    def infinite_loss(self) -> float | None:
        estimate = self.infinite_estimate
        return None if estimate is None else estimate.test_loss

    @property
    def retuned_loss(self) -> float | None:
        return None if self.retuned is None else self.retuned.test_loss

    @property
    def network_loss(self) -> float | None:
        return None if self.network is None else self.network.test_loss

    @property
    def network_stderr(self) -> float | None:
        return None if self.network is None else self.network.test_loss_stderr

    @property
    def converged(self) -> bool | None:
        return None if self.theory is None else self.theory.converged

    def to_dict(self) -> dict:
        """Flat fields for a CSV table: the spec columns a reader compares, then ε_g and its
        parts per source (empty where the point did not compute the source)."""
        spec = self.spec
        network = spec.network
        out: dict[str, Any] = {
            "spec_hash": self.spec_hash, "dataset": self.dataset, "n_train": self.n_train,
            "n_test": spec.data.n_test, "architecture": self.architecture,
            "mask": "x".join(map(str, spec.architecture.mask)),
            "stride": "x".join(map(str, spec.architecture.stride)),
            "activation": self.activation, "width": width_to_json(self.width),
            "temperature": self.temperature, "lambda0": self.lambda0, "lambda1": self.lambda1,
            "data_seed": self.data_seed, "network_seed": self.network_seed,
            "sampler": None if network is None else network.sampler,
            "n_replicas": None if network is None else network.n_replicas,
            "n_steps": None if network is None else network.n_steps,
            "theory_loss": self.theory_loss, "infinite_loss": self.infinite_loss,
            "retuned_loss": self.retuned_loss, "network_loss": self.network_loss,
            "network_stderr": self.network_stderr, "converged": self.converged,
        }
        for name in ("theory", "retuned", "network"):
            estimate = getattr(self, name)
            for part in ("bias2", "variance", "train_error"):
                out[f"{name}_{part}"] = None if estimate is None else getattr(estimate, part)
        out["seconds"] = self.seconds
        return out


#: Column names of `ResultRow.to_dict`, in order (the CSV header of every report).
ROW_FIELDS = ["spec_hash", "dataset", "n_train", "n_test", "architecture", "mask", "stride",
               "activation", "width", "temperature", "lambda0", "lambda1", "data_seed",
               "network_seed", "sampler", "n_replicas", "n_steps", "theory_loss",
               "infinite_loss", "retuned_loss", "network_loss", "network_stderr", "converged",
               "theory_bias2", "theory_variance", "theory_train_error", "retuned_bias2",
               "retuned_variance", "retuned_train_error", "network_bias2", "network_variance",
               "network_train_error", "seconds"]


def row_from_record(record: ExperimentRecord) -> ResultRow:
    """The row of one finished store record."""
    estimates = {field_name: Estimate.from_metrics(prefix, record.metrics, record.diagnostics)
                 for prefix, field_name in SOURCES.items()}
    return ResultRow(record.spec_hash, ExperimentSpec.from_dict(record.spec), record.seconds,
                     provenance=record.provenance, **estimates)


def result_rows(store: ResultsStore, sweep: str | None = None,
                hashes: Iterable[str] | None = None) -> list[ResultRow]:
    """Finished points of one sweep (or of the whole store), in sweep order (a store holding
    one sweep is read in that sweep's order); only those whose hash is in `hashes` when given
    (a compare run reads the points of its current config)."""
    if sweep is None and len(store.sweeps()) == 1:
        sweep = store.sweeps()[0]
    wanted = None if hashes is None else set(hashes)
    return [row_from_record(record) for record in store.records(sweep, status="done")
            if wanted is None or record.spec_hash in wanted]


# -- matching theory to networks --------------------------------------------------------------

ProblemKey = tuple


def theory_index(rows: Sequence[ResultRow]) -> dict[tuple[ProblemKey, float], Estimate]:
    """The theory at each (problem, N): from a row's `theory` at its width and from any row's
    N → ∞ reference at N = ∞ (the first one found; they are equal up to solver tolerance)."""
    index: dict[tuple[ProblemKey, float], Estimate] = {}
    for row in rows:
        key = row.spec.problem_key()
        if row.theory is not None:
            index.setdefault((key, row.width), row.theory)
        if row.infinite is not None:
            index.setdefault((key, INFINITE_WIDTH), row.infinite)
    return index


def problem_labels(keys: Sequence[ProblemKey]) -> dict[ProblemKey, str]:
    """A short label per problem: the architecture kind, with its mask/stride when two
    problems share the kind, and the data / hyper-parameters that differ between problems."""
    def architecture(key: ProblemKey) -> Any:
        return key[1]

    described: dict[ProblemKey, list[str]] = {key: [architecture(key).kind] for key in keys}
    for key in keys:
        spec = architecture(key)
        same_kind = {architecture(other) for other in keys if architecture(other).kind ==
                     spec.kind}
        if len(same_kind) > 1 and spec.is_convolutional:
            described[key].append(f"mask {spec.mask[0]}×{spec.mask[1]} stride "
                                  f"{spec.stride[0]}×{spec.stride[1]}")
        depths = {getattr(architecture(other), "depth", 1) for other in keys}
        if len(depths) > 1 or depths != {1}:  # deep points always say their depth
            described[key].append(f"L={getattr(spec, 'depth', 1)}")
        if len({architecture(other).activation for other in keys}) > 1:
            described[key].append(spec.activation)
    fields = (("data", lambda key: key[0].dataset), ("P", lambda key: key[0].n_train),
              ("seed", lambda key: key[0].seed), ("T", lambda key: key[2]),
              ("λ0", lambda key: key[3]), ("λ1", lambda key: key[4]))
    for name, get in fields:
        if len({get(key) for key in keys}) > 1:
            for key in keys:
                value = get(key)
                described[key].append(f"{name}={value:g}" if isinstance(value, float)
                                      else f"{name}={value}")
    return {key: ", ".join(parts) for key, parts in described.items()}
