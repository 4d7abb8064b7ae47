# invoiceflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(BIN)/uv

# A project-local Airflow: SQLite metadata in .airflow/, this repository's DAGs and plugins.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG := 4
export AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR := False
export GX_ANALYTICS_ENABLED := false
export INVOICEFLOW_DATA_DIR ?= $(CURDIR)/data
export PATH := $(BIN):$(PATH)
# Debian packages: WeasyPrint's libraries and the invoice font; the browser test's Chromium.
RENDER_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
TEST_PACKAGES := chromium chromium-driver
# pytest-xdist workers for `make test`: one per core by default (`make test TEST_WORKERS=1` runs serially).
TEST_WORKERS ?= auto

.PHONY: help install install-test demo up test lint lock bench bench-parse bench-scale clean

help:
	@echo "make demo    install, seed demo data, run last month's billing end to end, print the results"
	@echo "make test    install test tools, make sure PostgreSQL runs, run the whole suite"
	@echo "make up      airflow standalone with this project's DAGs (UI on http://localhost:8080)"
	@echo "make lint    ruff, including Airflow's AIR3 rules"
	@echo "make lock    re-compile requirements*.txt from pyproject.toml"
	@echo "make bench   pricing, reconciliation, DAG parse time and the scale run; results in bench/results/"
	@echo "make bench-parse  DAG parse time per file, results in bench/results/parse-latest.json"
	@echo "make bench-scale  a billing cycle on CeleryExecutor, 1 then 2 workers (SCALE_ARGS=...), bench/results/scale-latest.json"

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9

$(VENV)/.installed: requirements.txt pyproject.toml | $(UV)
	bash scripts/ensure-debian-packages.sh $(RENDER_PACKAGES)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(UV) pip install --quiet --python $(BIN)/python -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(AIRFLOW_HOME)/airflow.db: | $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db
	invoiceflow demo

up: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db
	@echo "Airflow UI: http://localhost:8080 - user admin, password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	airflow standalone

test: $(VENV)/.installed-test
	bash scripts/ensure-debian-packages.sh $(RENDER_PACKAGES) $(TEST_PACKAGES)
	source scripts/ensure-postgres.sh && $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-test
	source scripts/ensure-postgres.sh && $(BIN)/python bench/bench_pricing.py && $(BIN)/python bench/bench_reconciliation.py
	$(MAKE) bench-parse
	$(MAKE) bench-scale

# Sizes are arguments: make bench-scale SCALE_ARGS="--entries 100000 --contracts 530 --clients 130"
SCALE_ARGS ?=
bench-scale: $(VENV)/.installed-test
	source scripts/ensure-postgres.sh && $(BIN)/python bench/bench_scale.py $(SCALE_ARGS)

bench-parse: $(VENV)/.installed-test
	$(BIN)/python bench/bench_parse.py

lock: | $(UV)
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 --extra test pyproject.toml -o requirements-test.txt

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME) data .pytest_cache
