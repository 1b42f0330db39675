# The two commands in the README are `make run` and `make test`; both create .venv and
# install the pinned dependencies on first use (and again when pyproject.toml changes).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export GX_ANALYTICS_ENABLED := false
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: run test bench dagster-dev lint format clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (first use only)..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/cdp run

test: $(STAMP)
	bash tests/system_packages.sh
	$(BIN)/python -m pytest

# Benchmarks (never part of `make test`): every tests/benchmarks/bench_*.py in turn.
bench: $(STAMP)
	@for script in tests/benchmarks/bench_*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

dagster-dev: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster $(BIN)/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check orchestration reverse_etl seeds tests dbt_project/models
	$(BIN)/ruff format --check orchestration reverse_etl seeds tests dbt_project/models

format: $(STAMP)
	$(BIN)/ruff format orchestration reverse_etl seeds tests dbt_project/models

clean:
	rm -rf warehouse .dagster dbt_project/target dbt_project/logs
