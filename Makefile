# Two entry points: `make demo` (main job on shipped default data) and `make test`.
# Both create/update .venv with every extra (cli, cluster) and the dev tools. torch is
# pinned to 2.13.0 first so pip takes the local CPU wheel and never resolves a CUDA build.
# `make typecheck` runs mypy over src alone (configured in pyproject.toml); `make test` runs it too.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.krenorm-installed

.PHONY: demo test lint typecheck venv

venv: $(STAMP)

# The version lives in src/krenorm/__init__.py (read by pyproject), so a change there reinstalls.
$(STAMP): pyproject.toml src/krenorm/__init__.py
	@echo "installing krenorm and its dependencies into $(VENV) (first time: about 3 minutes)"
	@test -x $(PY) || { echo "[1/3] creating the virtual environment $(VENV)"; python3 -m venv $(VENV); }
	@echo "[2/3] pip: torch 2.13.0, CPU wheel (the largest download)"
	@$(PY) -m pip install --progress-bar on torch==2.13.0 | grep -v "^Requirement already satisfied" || true
	@echo "[3/3] pip: krenorm (editable) with numpy, scipy, scikit-learn, matplotlib, typer, rich, dask, arviz and the dev tools"
	@$(PY) -m pip install --progress-bar on -e ".[all,dev]" | grep -v "^Requirement already satisfied" || true
	@$(PY) -c "import krenorm, torch" && touch $(STAMP) && echo "installed: $$($(PY) -c 'import krenorm; print(krenorm.__version__)')"

demo: $(STAMP)
	@echo "running krenorm demo: theory vs sampled networks on MNIST 0 vs 1, 65 points (see README for the time it takes)"
	$(VENV)/bin/krenorm demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(STAMP)
	@echo "running ruff, mypy and the test suite…"
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q
