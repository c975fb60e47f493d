# One entry point for people and CI. `make demo` and `make test` set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= shipyard-demo
# Where torch comes from: PyTorch's CPU index (about 200 MB), so a laptop never pulls PyPI's CUDA build (several
# GB). On a GPU machine: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128 (your CUDA version).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test check lock clean

setup: $(VENV)/.installed

# torch first, from TORCH_INDEX, so nothing later pulls another build; where that index is unreachable, pip's
# own configuration decides (a local wheel directory, or PyPI). Then it says which build it installed.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --retries 1 --timeout 15 torch==2.13.0 --index-url $(TORCH_INDEX) \
	  || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -c "import torch; print('installed torch', torch.__version__, 'for CUDA ' + torch.version.cuda if torch.version.cuda else '(the CPU build)')"
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
