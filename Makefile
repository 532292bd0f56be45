# Two commands for a newcomer: `make demo` and `make test`. Both create the venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install demo airflow backfill system test test-unit test-integration lint format clean

help:
	@echo "make demo   - set up and run the hourly ingestion end to end on the embedded stack (ENGINE=opensearch: a real OpenSearch node)"
	@echo "make airflow - the Airflow UI (admin/admin) on the embedded stack, to trigger runs and backfills"
	@echo "make backfill FROM=2026-12-01T00:00 TO=2026-12-01T06:00 [DAG=...] - a backfill through the running make airflow"
	@echo "make test   - set up, lint, type-check and run every test"
	@echo "make lint   - ruff + mypy only"
	@echo "make test-distributed - the hourly DAG on CeleryExecutor (PostgreSQL, Redis, 2 workers), checked"
	@echo "make clean  - remove the venv and local state (.local/)"
	@echo "make opensearch - start a real OpenSearch 2.19 node (Java 17 + Maven), detached; prints its URL"
	@echo "make opensearch-stop - stop the node that make opensearch started"

$(STAMP): requirements.txt requirements-extras.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 or python3 on PATH)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# ENGINE=opensearch runs the demo / local Airflow on a real OpenSearch node (Java 17 + Maven)
# instead of the pip-only embedded default (noida-db).
ENGINE ?= elasticsearch

demo: install
	$(BIN)/python scripts/demo.py --engine $(ENGINE) $(ARGS)

airflow: install
	$(BIN)/python scripts/airflow_local.py --engine $(ENGINE)

# A backfill through the api-server of the running `make airflow` (same .local/ state, same login):
# one run per interval whose logical date is in [FROM, TO]; DAG defaults to image_ingest_s3_hourly.
backfill: install
	$(BIN)/python scripts/backfill.py $(if $(FROM),--from "$(FROM)") $(if $(TO),--to "$(TO)") $(if $(DAG),--dag "$(DAG)") $(ARGS)

# Debian packages and services the whole suite needs (chromium, pdftoppm, Redis, PostgreSQL,
# Maven, a Compose CLI): installed when absent, so CI on a fresh machine skips nothing.
system:
	bash scripts/setup_system.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint system
	$(BIN)/python -m pytest

# A real CeleryExecutor deployment on this machine (docs/distributed.md); ARGS="--images 2000 ..."
.PHONY: install-distributed test-distributed
DIST_STAMP := $(VENV)/.installed-distributed-stamp

$(DIST_STAMP): $(STAMP) requirements-distributed.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-distributed.txt -c constraints.txt
	@touch $(DIST_STAMP)

install-distributed: $(DIST_STAMP)

test-distributed: $(DIST_STAMP) system
	$(BIN)/python scripts/distributed_run.py $(ARGS)

# A real OpenSearch 2.19 node in one JVM (opensearch-node/); ARGS="--nodes 3 --heap 2g --port 9200"
.PHONY: opensearch opensearch-stop

opensearch: install
	$(BIN)/python -m imagelabels.devstack.opensearch_node start $(ARGS)

opensearch-stop: install
	$(BIN)/python -m imagelabels.devstack.opensearch_node stop

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

test-integration: install
	$(BIN)/python -m pytest -m integration

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
