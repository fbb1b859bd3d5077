"""The `krenorm` console script.

The command line lives in krenorm.cli and needs the `cli` extra (typer, rich). The installed
script points here so that, without that extra, it stops with one line saying what to install
instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import sys

#: Top-level modules of the `cli` extra.
CLI_EXTRA_MODULES = ("typer", "rich")
MISSING_CLI_EXTRA = (
    "krenorm: the command line needs the 'cli' extra (typer, rich): pip install 'krenorm[cli]'"
)


def main() -> None:
    """Run the `krenorm` command, or exit with status 1 and one line when typer is missing."""
    try:
        # Imported here, not at module level: this function is the only place that can turn a
        # missing optional dependency into a one-line message.
        from krenorm.cli import app
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in CLI_EXTRA_MODULES:
            raise
        sys.exit(MISSING_CLI_EXTRA)
    app(prog_name="krenorm")


if __name__ == "__main__":
    main()
