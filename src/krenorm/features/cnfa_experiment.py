"""The CNFA experiment behind `krenorm cnfa`: train a small CNN briefly on a real data set and
report the CNFA of its conv layers on held-out images (docs/math/features.md §3)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from krenorm.features.cnfa import CNFAReport, cnfa_report
from krenorm.features.small_cnn import (
    SmallCNN,
    TrainingSummary,
    classification_accuracy,
    train_classifier,
)

if TYPE_CHECKING:  # rich is imported when a table is drawn (start-up time)
    from rich.table import Table


@dataclass(frozen=True)
class CNFAExperiment:
    """A trained small CNN's CNFA report with what it was trained on and how well it does."""

    dataset: str
    description: str
    widths: tuple[int, ...]
    kernel_size: int
    training: TrainingSummary
    test_accuracy: float
    report: CNFAReport
    init_scale: float | None = None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "description": self.description,
            "widths": list(self.widths),
            "kernel_size": self.kernel_size,
            "training": self.training.to_dict(),
            "test_accuracy": self.test_accuracy,
            "report": self.report.to_dict(),
            "init_scale": self.init_scale,
        }

    def baseline_summary(self) -> list[str]:
        """One line per layer and α: trained Pearson against both baselines (the network at
        initialization, W0ᵀW0 vs G0^α; the initial filters against the trained AGOP)."""
        init = "PyTorch default" if self.init_scale is None else f"N(0, {self.init_scale:g}²)"
        lines = [f"initialization: {init} (CNFA depends on it; docs/features.md \"CNFA\")"]
        for entry in self.report.layers:
            lines.append(
                f"{entry.layer} α={entry.alpha:g}: trained {entry.trained.pearson:.3f} vs "
                f"at-init network {entry.initialization.pearson:.3f} "
                f"({'above' if entry.trained.pearson > entry.initialization.pearson else 'below'})"
                f", vs initial filters {entry.initial_filters.pearson:.3f} "
                f"({'above' if entry.trained.pearson > entry.initial_filters.pearson else 'below'})"
            )
        return lines


def run_cnfa_experiment(
    dataset: str = "mnist",
    n_train: int = 2000,
    n_test: int = 500,
    n_images: int = 128,
    epochs: int = 2,
    widths: Sequence[int] = (16, 32),
    kernel_size: int = 3,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    alphas: Sequence[float] = (0.5, 1.0),
    n_bootstrap: int = 200,
    seed: int = 0,
    data_dir: str | Path | None = None,
    allow_fetch: bool = True,
    init_scale: float | None = None,
) -> CNFAExperiment:
    """Load all classes of `dataset` through krenorm.data.load_dataset (n_train/n_test images,
    standardized), train SmallCNN(widths, kernel_size) with Adam for `epochs`, and compute the
    CNFA report on the first `n_images` test images against a copy of the network at
    initialization. init_scale: None for PyTorch's default initialization, or s for i.i.d.
    N(0, s²) weights and zero biases (SmallCNN)."""
    from krenorm.data import load_dataset

    if not 1 <= n_images <= n_test:
        raise ValueError(f"n_images must lie in [1, n_test={n_test}], got {n_images}.")
    data = load_dataset(
        dataset,
        classes=None,
        n_train=n_train,
        n_test=n_test,
        labels="raw",
        seed=seed,
        data_dir=data_dir,
        allow_fetch=allow_fetch,
    )
    x_train, x_test = data.x_train.float(), data.x_test.float()
    model = SmallCNN(
        x_train.shape[1],
        int(data.y_train.max()) + 1,
        (x_train.shape[2], x_train.shape[3]),
        tuple(widths),
        kernel_size,
        seed,
        init_scale=init_scale,
    )
    initial = copy.deepcopy(model)
    training = train_classifier(
        model,
        x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    report = cnfa_report(
        model, initial, x_test[:n_images], alphas=alphas, n_bootstrap=n_bootstrap, seed=seed
    )
    return CNFAExperiment(
        dataset=dataset,
        description=data.provenance.description,
        widths=tuple(widths),
        kernel_size=kernel_size,
        training=training,
        test_accuracy=classification_accuracy(model, x_test, data.y_test),
        report=report,
        init_scale=init_scale,
    )


def cnfa_table(report: CNFAReport) -> Table:
    """A rich Table no wider than 80 columns: per layer, α and measure (Pearson, cosine) the
    correlation of WᵀW with G^α for the trained network (Pearson with its bootstrap interval),
    the network at initialization (net₀), the initial filters (filters₀), and the network at
    initialization with an exactly isotropic Δ (iso Δ₀, Pearson only)."""
    from rich.table import Table

    table = Table(title=f"CNFA on {report.n_images} images ({report.estimator} AGOP)",
                  caption="corr(WᵀW, G^α); ₀: at initialization")
    for column in ("layer", "α", "measure", "trained", "interval", "net₀", "filters₀",
                   "iso Δ₀"):
        table.add_column(column, justify="left" if column in ("layer", "measure") else "right")
    for entry in report.layers:
        low, high = entry.trained.pearson_interval
        table.add_row(entry.layer, f"{entry.alpha:g}", "Pearson", f"{entry.trained.pearson:.3f}",
                      f"[{low:.2f}, {high:.2f}]", f"{entry.initialization.pearson:.3f}",
                      f"{entry.initial_filters.pearson:.3f}",
                      f"{entry.isotropic_initialization.pearson:.3f}")
        table.add_row("", "", "cosine", f"{entry.trained.cosine:.3f}", "",
                      f"{entry.initialization.cosine:.3f}",
                      f"{entry.initial_filters.cosine:.3f}", "", end_section=True)
    return table


def write_cnfa_outputs(experiment: CNFAExperiment, directory: str | Path) -> tuple[Path, Path]:
    """Write cnfa.json (the experiment's to_dict) and cnfa.png (plot_cnfa_report) to directory."""
    import json

    from krenorm.features.figures import plot_cnfa_report

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, figure_path = directory / "cnfa.json", directory / "cnfa.png"
    json_path.write_text(json.dumps(experiment.to_dict(), indent=2))
    plot_cnfa_report(experiment.report).savefig(figure_path, dpi=120)
    return json_path, figure_path
