# `make run` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU/CUDA choice of torch belongs to the machine; any version the pyproject range allows works.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck pytest bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The service on the embedded SQLite database (./mtl-tune.db); the first start launches a demo study.
run: setup
	$(BIN)/mtl-tune serve --demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# One pytest process per core: most tests wait on subprocesses, servers and databases more than they compute.
pytest: setup
	$(BIN)/pytest -n auto

test: lint typecheck pytest

bench: setup
	$(BIN)/python bench/strategy_step_time.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
