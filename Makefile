# Headwater: `make demo` runs the demo, `make test` runs every check. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.installed-base
TOOLS := $(VENV)/.installed-test

.PHONY: help demo test lint typecheck unit bench clean fmt

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(BASE)

$(TOOLS): $(BASE)
	$(PY) -m pip install --quiet -e '.[test]'
	@# Real-client compatibility tests: kcat (Debian's, librdkafka 2.0.2) and kafkajs.
	@if ! command -v kcat >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq kcat >/dev/null; \
	fi
	@test -d tests/integration/server/js/node_modules || \
		npm ci --prefix tests/integration/server/js --no-audit --no-fund --loglevel=error
	touch $(TOOLS)

demo: $(BASE)  ## run the demo on the embedded broker
	$(VENV)/bin/headwater --data $${HEADWATER_DEMO_DATA:-./headwater-demo-data} demo

lint: $(TOOLS)  ## ruff
	$(PY) -m ruff check src tests bench tools
	$(PY) -m ruff format --check src tests bench tools

typecheck: $(TOOLS)  ## mypy --strict on src/
	$(PY) -m mypy

unit: $(TOOLS)  ## pytest
	$(PY) -m pytest -q

test: lint typecheck unit  ## everything CI runs

fmt: $(TOOLS)  ## format the code
	$(PY) -m ruff format src tests bench tools
	$(PY) -m ruff check --fix src tests bench tools

bench: $(TOOLS)  ## run the benchmark scripts (heavy: run alone)
	$(PY) bench/log_append.py
	$(PY) bench/client.py --peers
	$(PY) bench/consume_memory.py
	$(PY) bench/kafka_p2.py
	$(PY) bench/idle_connections.py

clean:  ## remove the virtualenv and build leftovers
	rm -rf $(VENV) build src/*.egg-info tests/integration/server/js/node_modules
