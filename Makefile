# One entry point for people and CI. `make demo` and `make test` set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= shipyard-demo

.PHONY: setup demo test check lock clean

setup: $(VENV)/.installed

# torch first, from the pinned CPU build, so nothing later pulls a CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/shipyard demo --dir $(DEMO_DIR)

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tests/typecheck.py

test: check
	$(BIN)/pytest

# Regenerate constraints.txt from the current environment (torch pinned without its local build tag).
lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+.*/torch==\1/' | sed '1i # Exact versions Shipyard is tested with; regenerate with: make lock. Used as pip constraints.' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
