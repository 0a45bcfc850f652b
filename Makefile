# mistnet: `make demo` sets everything up and runs the whole job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV ?= .venv
ASSETS ?= $(firstword $(wildcard ../shared/data /work/shared/data) assets)
BIN := $(VENV)/bin

.PHONY: setup services test lint demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

services:
	deploy/services.sh start

test: setup services
	MISTNET_ASSETS=$(abspath $(ASSETS)) $(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: setup services
	$(BIN)/mistnet demo --assets $(ASSETS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
