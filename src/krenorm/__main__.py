"""`python -m krenorm …` runs the `krenorm` command (the same entry point as the installed
script, so a missing `cli` extra gives the same one-line message)."""

from krenorm._cli_entry import main

main()
