# Headwater: `make demo` runs the demo, `make test` runs every check. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo test lint typecheck unit bench clean fmt

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## run the demo on the embedded broker
	$(VENV)/bin/headwater --data $${HEADWATER_DEMO_DATA:-./headwater-demo-data} demo

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check src tests bench tools
	$(PY) -m ruff format --check src tests bench tools

typecheck: $(STAMP)  ## mypy --strict on src/
	$(PY) -m mypy

unit: $(STAMP)  ## pytest
	$(PY) -m pytest -q

test: lint typecheck unit  ## everything CI runs

fmt: $(STAMP)  ## format the code
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

bench: $(STAMP)  ## run the benchmark scripts
	$(PY) bench/log_append.py
	$(PY) bench/client.py

clean:  ## remove the virtualenv and build leftovers
	rm -rf $(VENV) build src/*.egg-info
