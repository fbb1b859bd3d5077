"""Every fenced code block of docs/*.md and README.md runs (or, for shell commands, parses):

- ```python blocks run in order, one namespace per page, in a temporary working directory (so a
  page never writes into the repository). A block that needs a data set this machine does not
  have (DatasetUnavailableError) is skipped with the loader's message; the pages use synthetic
  or shipped data wherever a newcomer may lack a file, so that only README's MNIST example can
  skip. The SLURM example cannot reach a cluster: it runs against a stand-in `dask_jobqueue`
  and a `run_sweep` that checks its arguments against the real signature. A block whose first
  line is `# needs a running cluster` (connecting to a scheduler address) is compiled, not run;
  the same page shows the same call on an in-process LocalCluster, which runs.
- ```bash blocks: every `krenorm …` / `python -m krenorm …` line is parsed by the real command
  line with `--help` appended (the command and each option must exist); `[optional]` parts are
  dropped. Other lines (make, dask, bash scripts) are not krenorm's to check.
- ```toml blocks parse as TOML.
"""

from __future__ import annotations

import inspect
import re
import shlex
import sys
import tomllib
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.data import DatasetUnavailableError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[tuple[Path, int, str]]:
    out = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                out.append((page, text[:match.start()].count("\n") + 1, match.group(2)))
    return out


#: First line of a docs block that talks to a real scheduler (compiled only, see above).
NEEDS_CLUSTER = "# needs a running cluster"


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_page_with_code_has_fenced_blocks():
    """Code in the pages is fenced with a language, so this module finds it: no indented
    block starting with an import or a krenorm command remains."""
    for page in PAGES:
        outside = FENCE.sub("", page.read_text())
        stray = re.findall(r"^    (?:from krenorm|import krenorm|krenorm \w)", outside,
                           re.MULTILINE)
        assert not stray, f"{_page_id(page)}: unfenced code {stray}"


def _fake_cluster_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for dask_jobqueue.SLURMCluster and run_sweep (no cluster in a test)."""
    import krenorm.experiments.sweep as sweep_module

    class SLURMCluster:
        def __init__(self, **options: object) -> None:
            self.options = options
            self.scheduler_address = "tcp://127.0.0.1:8786"

        def scale(self, *, jobs: int) -> None:
            assert jobs >= 1

    signature = inspect.signature(sweep_module.run_sweep)

    def run_sweep(*args: object, **kwargs: object) -> types.SimpleNamespace:
        signature.bind(*args, **kwargs)  # the documented call must fit the real function
        return types.SimpleNamespace(to_dict=lambda: {"checked": True})

    monkeypatch.setitem(sys.modules, "dask_jobqueue",
                        types.SimpleNamespace(SLURMCluster=SLURMCluster))
    monkeypatch.setattr(sweep_module, "run_sweep", run_sweep)


_PYTHON_PAGES = sorted({page for page, _, _ in _blocks("python")})


@pytest.mark.parametrize("page", _PYTHON_PAGES, ids=_page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for _, line, code in (block for block in _blocks("python") if block[0] == page):
        if code.startswith(NEEDS_CLUSTER):
            compile(code, f"{_page_id(page)}:{line}", "exec")
            continue
        if "dask_jobqueue" in code:
            _fake_cluster_modules(monkeypatch)
        try:
            exec(compile(code, f"{_page_id(page)}:{line}", "exec"), namespace)
        except DatasetUnavailableError as missing:
            pytest.skip(f"{_page_id(page)}:{line} needs a data set: {missing}")


def _command_lines(code: str) -> list[str]:
    """The krenorm command lines of a shell block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = []
    for raw in joined.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", "", line).strip()  # optional parts
        if line.startswith(("krenorm ", "python -m krenorm ")):
            lines.append(line.removeprefix("python -m ").removeprefix("krenorm ").strip())
    return lines


_COMMANDS = [(page, line, command) for page, line, code in _blocks("bash")
             for command in _command_lines(code)]


@pytest.mark.parametrize(("page", "line", "command"), _COMMANDS,
                         ids=[f"{_page_id(p)}:{n}:{c.split()[0]}" for p, n, c in _COMMANDS])
def test_shell_commands_parse(page, line, command):
    result = CliRunner().invoke(app, [*shlex.split(command), "--help"])
    assert result.exit_code == 0, f"{_page_id(page)}:{line}: krenorm {command}\n{result.output}"


@pytest.mark.parametrize(("page", "line", "code"), _blocks("toml"),
                         ids=[f"{_page_id(p)}:{n}" for p, n, _ in _blocks("toml")])
def test_toml_blocks_parse(page, line, code):
    tomllib.loads(code)


def test_the_pages_hold_code_blocks_of_each_kind():
    """The collection itself works (a broken fence pattern would make the tests above vacuous)."""
    assert len(_PYTHON_PAGES) >= 5
    assert len(_COMMANDS) >= 8
    assert _blocks("toml")
