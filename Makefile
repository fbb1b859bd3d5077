# Two entry points: `make demo` (main job on shipped default data) and `make test`.
# Both create/update .venv. torch is pinned to 2.13.0 first so pip takes the local CPU wheel
# and never resolves a CUDA build.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.krenorm-installed

.PHONY: demo test lint venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/krenorm demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q
