# invoiceflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(BIN)/uv

# A project-local Airflow: SQLite metadata in .airflow/, whose airflow.cfg names this repository's
# DAGs and plugins (scripts/airflow_config.py writes it; `source scripts/airflow-env.sh` gives a
# shell the same AIRFLOW_HOME, so a plain `airflow dags list` sees the project too).
export AIRFLOW_HOME := $(CURDIR)/.airflow
export GX_ANALYTICS_ENABLED := false
export INVOICEFLOW_DATA_DIR ?= $(CURDIR)/data
export PATH := $(BIN):$(PATH)
# Debian packages: WeasyPrint's libraries and the invoice font; the browser test's Chromium.
RENDER_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
TEST_PACKAGES := chromium chromium-driver
# pytest-xdist workers for `make test`: one per core by default (`make test TEST_WORKERS=1` runs serially).
TEST_WORKERS ?= auto

.PHONY: help install install-test airflow-config demo up books test test-fast lint lock bench bench-parse bench-scale bench-statements bench-tryton bench-workbench bench-documents clean

help:
	@echo "make demo    install, seed demo data, run last month's billing end to end, print the results"
	@echo "make test    install test tools, make sure PostgreSQL runs, run the whole suite"
	@echo "make up      airflow standalone with this project's DAGs (UI on http://localhost:8080)"
	@echo "make books   the journal in Fava, Beancount's web UI, on http://127.0.0.1:5000 (BOOKS_PORT=...)"
	@echo "make test-fast  the suite without the slow end-to-end runs (minutes, not a quarter hour)"
	@echo "make lint    ruff (with Airflow's AIR3 rules), import-linter (the import direction) and mypy"
	@echo "make lock    re-compile requirements*.txt from pyproject.toml"
	@echo "make messages  collect the English texts into the catalogue's .pot and merge it into every language's .po (pybabel)"
	@echo "make bench   pricing, reconciliation, workbench, DAG parse time, statement parsing, documents, the scale run and Tryton; results in bench/results/"
	@echo "make bench-parse  DAG parse time per file, results in bench/results/parse-latest.json"
	@echo "make bench-statements  bank file parse time per 10,000 lines per format and the corpus report, bench/results/statements-latest.json"
	@echo "make bench-documents  invoiceflow's document path against bare WeasyPrint on 20 invoices (0 to 500 entries), bench/results/documents-latest.json"
	@echo "make bench-scale  a billing cycle on CeleryExecutor, 1 then 2 workers, the render floor and wall/floor (SCALE_ARGS=...), bench/results/scale-latest.json"

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

airflow-config: $(VENV)/.installed
	$(BIN)/python scripts/airflow_config.py

$(AIRFLOW_HOME)/airflow.db: | $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/python scripts/airflow_config.py
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db airflow-config
	invoiceflow demo

up: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db airflow-config
	@echo "Airflow UI: http://localhost:8080 - user admin, password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	airflow standalone

# Fava is not a runtime dependency: installed here when missing, at the versions requirements-test.txt pins.
BOOKS_PORT ?= 5000
BOOKS_FILE := $(INVOICEFLOW_DATA_DIR)/outbox/accounting/books.beancount
books: $(VENV)/.installed
	@$(BIN)/python -c "import fava" 2>/dev/null || $(UV) pip install --quiet --python $(BIN)/python --constraint requirements-test.txt fava
	invoiceflow accounting beancount --out $(BOOKS_FILE)
	@echo "Fava on http://127.0.0.1:$(BOOKS_PORT) (Ctrl-C stops it)"
	$(BIN)/fava --host 127.0.0.1 --port $(BOOKS_PORT) $(BOOKS_FILE)

test: $(VENV)/.installed-test
	bash scripts/ensure-debian-packages.sh $(RENDER_PACKAGES) $(TEST_PACKAGES)
	$(BIN)/python scripts/tryton_server.py build  # Tryton for the accounting tests: its venv and template, once
	source scripts/ensure-postgres.sh && $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: $(VENV)/.installed-test
	bash scripts/ensure-debian-packages.sh $(RENDER_PACKAGES)
	source scripts/ensure-postgres.sh && $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=include $(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python scripts/architecture.py --check

bench: $(VENV)/.installed-test
	source scripts/ensure-postgres.sh && $(BIN)/python bench/bench_pricing.py && $(BIN)/python bench/bench_reconciliation.py
	$(MAKE) bench-workbench
	$(MAKE) bench-parse
	$(MAKE) bench-statements
	$(MAKE) bench-documents
	$(MAKE) bench-scale
	$(MAKE) bench-tryton

bench-tryton: $(VENV)/.installed-test
	$(BIN)/python bench/bench_tryton.py

# Sizes are arguments: make bench-scale SCALE_ARGS="--entries 100000 --contracts 530 --clients 130"
SCALE_ARGS ?=
bench-scale: $(VENV)/.installed-test
	source scripts/ensure-postgres.sh && $(BIN)/python bench/bench_scale.py $(SCALE_ARGS)

bench-workbench: $(VENV)/.installed-test
	cd bench && $(BIN)/python bench_workbench.py

bench-parse: $(VENV)/.installed-test
	$(BIN)/python bench/bench_parse.py

bench-statements: $(VENV)/.installed-test
	$(BIN)/python bench/bench_statements.py

bench-documents: $(VENV)/.installed-test
	$(BIN)/python bench/bench_documents.py

# The catalogue of invoice words (docs/languages.md): the English text in the code, collected into
# the .pot, then merged into each language's .po; new or changed texts come out empty or fuzzy
# until translated (a test refuses them).
.PHONY: messages
messages: $(VENV)/.installed
	$(BIN)/pybabel -q extract -F include/invoiceflow/core/locale/babel.cfg -c TRANSLATORS: --add-location=file \
		--sort-by-file --project=invoiceflow -o include/invoiceflow/core/locale/invoiceflow.pot include/invoiceflow
	$(BIN)/pybabel -q update -i include/invoiceflow/core/locale/invoiceflow.pot -d include/invoiceflow/core/locale \
		-D invoiceflow --ignore-obsolete

lock: | $(UV)
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 --extra test pyproject.toml -o requirements-test.txt

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME) data .pytest_cache .tryton
