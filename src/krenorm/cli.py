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
