"""`python -m krenorm …` runs the `krenorm` command (same as the installed script)."""

from krenorm.cli import app

app(prog_name="krenorm")
