# scrm — the two commands of the quick start are `make run` and `make test`.
# Both build their own virtual environment from pyproject.toml; nothing is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test test-only lint typecheck bench bench-leads bench-chat dedupe-eval chromium install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: migrate, seed the sandbox demo corp, serve web + scheduler at http://$(HOST):$(PORT) (default 127.0.0.1:8000; e.g. make run PORT=8731)
run: install
	mkdir -p instance
	$(BIN)/scrm db upgrade
	$(BIN)/scrm serve --host $(HOST) --port $(PORT)

## make test: ruff, mypy, layer contracts, the whole suite (SQLite; PostgreSQL when SCRM_TEST_DATABASE_URL is set)
test: install chromium lint test-only

test-only: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

## Debian's Chromium for the browser tests (never a browser download)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

## make bench: each callback target with PASS/FAIL — PostgreSQL web tier vs a decrypt-only floor, scrm serve on
## SQLite at 200 adds/s, the Procfile's roles on PostgreSQL (needs postgres@127.0.0.1:5432; about 6 minutes)
bench: install
	$(BIN)/python -m tests.bench.callback_bench

## make dedupe-eval: lead dedupe quality on a seeded, labelled set (pairwise precision, recall, F1; fails below 0.97 / 0.93)
dedupe-eval: install
	$(BIN)/python -m tests.dedupe_eval

## make bench-leads: importing 100k leads with dedupe vs a plain bulk insert of the same rows (SQLite, and PostgreSQL
## when reachable); then, on PostgreSQL with 1M leads, the dedupe check of POST /api/leads and the list's first page
bench-leads: install
	$(BIN)/python -m tests.bench.leads_bench
	$(BIN)/python -m tests.bench.leads_api_bench

## make bench-chat: ingesting 1M archived chat messages with 50 keyword rules on one core (SQLite, and PostgreSQL
## when reachable) beside a parse-only baseline of the same file (targets: 20,000 msg/s, ratio 0.5)
bench-chat: install
	$(BIN)/python -m tests.bench.chat_bench

clean:
	rm -rf $(VENV) instance *.egg-info
