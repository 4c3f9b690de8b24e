# Two commands matter: `make run` and `make test`. Both create or update .venv from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000
export FLASK_APP := fundraising:create_app

.PHONY: translations run test test-fast lint format bench bench-quick migrate demo clean help

help:
	@echo "make run      - install, migrate the database, load the demo data once, serve http://$(HOST):$(PORT)"
	@echo "make test     - install with the dev extras and run the whole suite (SQLite and PostgreSQL)"
	@echo "make lint     - ruff"
	@echo "make bench    - benchmarks (bench/), full size; make bench-quick for a short run"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

# Message catalogues are compiled at install, from the .po files kept in the repository.
CATALOGS := $(wildcard fundraising/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGS:.po=.mo)

fundraising/translations/%/LC_MESSAGES/messages.mo: fundraising/translations/%/LC_MESSAGES/messages.po | $(VENV)/.installed
	$(BIN)/pybabel compile -d fundraising/translations -l $*

translations: $(COMPILED)

run: $(VENV)/.installed translations
	$(BIN)/fundraising db upgrade
	$(BIN)/fundraising demo
	$(BIN)/fundraising run --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev translations
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -x -q -k "not postgresql" $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(VENV)/.installed
	$(BIN)/fundraising db upgrade

demo: $(VENV)/.installed
	$(BIN)/fundraising demo

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/roundups_import.py
	$(BIN)/python bench/loan_distribution.py
	$(BIN)/python bench/donations_http.py

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python bench/ledger.py --quick
	$(BIN)/python bench/roundups_import.py --quick
	$(BIN)/python bench/loan_distribution.py --quick
	$(BIN)/python bench/donations_http.py --quick

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
