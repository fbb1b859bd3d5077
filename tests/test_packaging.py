"""Package habits: one version, shipped type hints, extras that are really optional, and a
console script that says what to install when the `cli` extra is missing.

The import checks run in a fresh interpreter whose import system refuses the extras' modules
(matplotlib, dask, distributed, typer), as if they were not installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import krenorm

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "krenorm"
EXTRA_MODULES = ("matplotlib", "dask", "distributed", "typer")

#: Packages a user of the theory, the networks or the data needs without any extra.
CORE_MODULES = (
    "krenorm",
    "krenorm.width",
    "krenorm.architectures",
    "krenorm.data",
    "krenorm.kernels",
    "krenorm.theory",
    "krenorm.networks",
)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which importing any of `blocked` fails as a missing
    module does."""
    blocker = textwrap.dedent(f"""
        import importlib.abc, sys

        class _Missing(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _Missing())
    """)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)],
                          capture_output=True, text=True, env=environment, timeout=300,
                          check=False)


def test_version_is_written_once_and_read_by_pyproject():
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "krenorm.__version__"}
    # setuptools reads the attribute statically: it must be a plain string literal.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    literals = [node.value.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and any(getattr(t, "id", None) == "__version__" for t in node.targets)]
    assert literals == [krenorm.__version__]


def test_py_typed_is_shipped():
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["krenorm"]


def test_extras_hold_the_optional_dependencies():
    project = pyproject()["project"]

    def names(requirements: list[str]) -> set[str]:
        return {requirement.split("[")[0].split(">")[0].split("=")[0].strip()
                for requirement in requirements}

    core = names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert core >= {"numpy", "scipy", "torch", "scikit-learn", "tqdm", "pillow", "arviz"}
    assert not core & {"matplotlib", "typer", "dask"}
    assert "typer" in names(extras["cli"]) and "matplotlib" in names(extras["plots"])
    assert "dask" in names(extras["cluster"])
    assert extras["all"] == ["krenorm[cli,plots,cluster]"]
    assert names(extras["dev"]) >= {"pytest", "ruff", "mypy"}
    assert project["scripts"]["krenorm"] == "krenorm._cli_entry:main"


def test_core_packages_import_without_the_extras():
    own_lenses = [f"krenorm.{package}.{path.stem}"
                  for package in ("spectra", "adaptive")
                  for path in sorted((PACKAGE / package).glob("*.py"))
                  if path.stem not in ("__init__", "figures")]
    modules = [*CORE_MODULES, "krenorm.spectra", "krenorm.adaptive", *own_lenses]
    result = run_without(EXTRA_MODULES, f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        print("imported", len({modules!r}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)}" in result.stdout


def test_console_script_without_the_cli_extra_says_what_to_install():
    result = run_without(("typer",), """
        import sys
        sys.argv = ["krenorm", "--help"]
        from krenorm._cli_entry import main
        main()
    """)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["krenorm: the command line needs the 'cli' extra (typer, rich): "
                     "pip install 'krenorm[cli]'"]


def test_console_script_runs_the_command_with_the_cli_extra():
    pytest.importorskip("typer")
    result = run_without((), """
        import sys
        sys.argv = ["krenorm", "--help"]
        from krenorm._cli_entry import main
        main()
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Usage: krenorm" in result.stdout

