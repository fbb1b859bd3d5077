"""Package habits: one version, shipped type hints, extras that are really optional, and a
console script that says what to install when the `cli` extra is missing.

The import checks run in a fresh interpreter whose import system refuses the extras' modules
(matplotlib, dask, distributed, typer), as if they were not installed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import krenorm

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "krenorm"
EXTRA_MODULES = ("dask", "distributed", "typer")

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
    # A None entry in sys.modules is what Python itself reads as "not installed": `import` raises
    # ModuleNotFoundError and importlib.util.find_spec answers None (libraries such as xarray
    # probe optional packages that way, and must see them as absent, not crash on the probe).
    blocker = textwrap.dedent(f"""
        import sys
        for _name in {blocked!r}:
            sys.modules[_name] = None
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
    # matplotlib is core: ArviZ, a core dependency, requires it.
    assert core >= {"numpy", "scipy", "torch", "scikit-learn", "tqdm", "pillow", "arviz",
                    "matplotlib"}
    assert not core & {"typer", "dask"}
    assert "typer" in names(extras["cli"])
    assert "dask" in names(extras["cluster"])
    assert extras["all"] == ["krenorm[cli,cluster]"]
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



def _krenorm_imports() -> dict[str, set[str]]:
    """{importing top-level package: imported top-level packages}, module- and function-level
    imports alike, from the source (top-level package = first name under krenorm)."""
    def package(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else "krenorm"

    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        source = package(".".join(parts).removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [])
            for name in names:
                if name.startswith("krenorm.") and package(name) != source:
                    graph.setdefault(source, set()).add(package(name))
    return graph


def test_dependency_rule():
    """docs/architecture.md "Dependency rule": applications import the foundation, never the
    reverse, and nothing but the entry points imports experiments or cli."""
    graph = _krenorm_imports()
    entry_points = {"cli", "_cli_entry", "__main__"}
    for source, targets in graph.items():
        if source not in entry_points:
            assert "cli" not in targets, f"krenorm.{source} imports krenorm.cli"
        if source not in entry_points | {"experiments"}:
            assert "experiments" not in targets, f"krenorm.{source} imports krenorm.experiments"
    applications = {"theory", "networks", "data", "features", "spectra", "adaptive"}
    forbidden = {
        # architectures holds a PatchGeometry from kernels, so kernels never imports it back.
        "kernels": applications | {"architectures"},
        "architectures": applications,
        "theory": {"networks", "data", "features", "spectra", "adaptive"},
        "networks": {"theory", "data", "features", "spectra", "adaptive"},
        "data": {"theory", "networks", "features", "spectra", "adaptive"},
        "spectra": {"theory", "networks", "features", "adaptive"},
        "features": {"theory", "networks", "spectra", "adaptive"},
        "adaptive": {"features", "spectra"},
    }
    # The bottom layer imports nothing else of krenorm.
    for source in ("width", "_validation", "linalg", "fixed_point", "threads", "memory",
                   "kernel_ridge_solvers"):
        assert not graph.get(source), (source, graph.get(source))
    for source, banned in forbidden.items():
        assert not graph.get(source, set()) & banned, (source, graph.get(source, set()) & banned)


#: The repository pages the code may cite; the design files outside the repository are not
#: among them, so a citation of one fails the test below.
CITED_PAGES = {
    **{f"docs/math/{name}.md": f"docs/math/{name}.md"
       for name in ("theory", "features", "spectra", "adaptive", "deep")},
    "docs/architecture.md": "docs/architecture.md",
    "docs/scale.md": "docs/scale.md",
}
PENDING_PAGES = ("DEEP.md",)


def _sections(page: str) -> tuple[set[int], list[str]]:
    """Numbers that have both an `<a id="sN">` anchor and a '## N.' heading, and all '## '
    titles without their numbers."""
    text = (ROOT / page).read_text()
    titles = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    anchored = {int(n) for n in re.findall(r'<a id="s(\d+)"></a>', text)}
    numbered = {int(m.group(1)) for t in titles if (m := re.match(r"(\d+)\. ", t))}
    return anchored & numbered, [re.sub(r"^\d+\. ", "", title) for title in titles]


def test_every_mathematics_citation_in_the_code_resolves():
    """'X.md §N', 'X.md "Heading"' and 'X.md, Heading' in src name a section that exists in the
    repository's own pages (docs/math/*.md, docs/architecture.md), under the same number."""
    names = "|".join(re.escape(name) for name in (*CITED_PAGES, *PENDING_PAGES))
    pattern = re.compile(rf"(?<![\w/])({names})")
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = re.sub(r"\s+", " ", path.read_text())
        for match in pattern.finditer(text):
            if match.group(1) in PENDING_PAGES:
                continue
            numbers, titles = _sections(CITED_PAGES[match.group(1)])
            tail = text[match.end():match.end() + 160]
            section = re.match(r"\s*§\s*(\d+)(?:\s*[–-]\s*(\d+))?((?:\s*,\s*§\s*\d+)*)", tail)
            cited: set[int] = set()
            if section:
                first, last = int(section.group(1)), int(section.group(2) or section.group(1))
                cited = set(range(first, last + 1)) | {
                    int(n) for n in re.findall(r"§\s*(\d+)", section.group(3))}
            quoted = re.match(r'\s*,?\s*((?:"[^"]+"(?:\s*,\s*|\s+and\s+)?)+)', tail)
            headings = re.findall(r'"([^"]+)"', quoted.group(1)) if quoted else []
            missing = [f"§{n}" for n in sorted(cited - numbers)]
            missing += [h for h in headings if not any(t.startswith(h) for t in titles)]
            if missing:
                problems.append(f"{path.relative_to(ROOT)}: {match.group(1)} {missing}")
    assert not problems, "\n".join(problems)


def test_no_citation_of_a_design_file_outside_the_repository():
    """Users never see the design files the code was written from; the code, tests, docs and
    benchmarks cite the repository's own pages instead."""
    design = re.compile(r"(?<![\w/])(THEORY|FEATURES|SPECTRA|ADAPTIVE|ARCHITECTURE|DEEP)\.md")
    places = [*PACKAGE.rglob("*.py"), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md",
              *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "examples").rglob("*.md")]
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0)}" for path in places
                 for match in design.finditer(path.read_text())]
    assert not offenders, "\n".join(offenders)
