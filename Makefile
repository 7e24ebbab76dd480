# Thin wrappers over documented commands; every target works from a fresh clone.
# Commands: README.md (CLI, workers) and docs/OPERATIONS.md (the compose stack).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMPOSE ?= docker compose

.PHONY: setup demo test lint bench up down worker beat flower metrics migrate sandbox

$(BIN)/einvoice: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/einvoice

demo: setup
	$(BIN)/einvoice demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint
	$(BIN)/pytest

# Every benchmark under bench/ (each prints a table and writes bench/results/<name>.json);
# BENCH_ARGS=--quick for the short versions. Figures and commands: BENCHMARKS.md.
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The whole stack in containers (postgres, redis, migrate, workers, beat, flower, metrics,
# prometheus, grafana, sandbox).
up:
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

# Local processes against DATABASE_URL / CELERY_BROKER_URL (or the embedded default).
worker: setup
	$(BIN)/celery -A worker.app worker --loglevel INFO

beat: setup
	$(BIN)/celery -A worker.app beat --loglevel INFO

flower: setup
	$(BIN)/celery -A worker.app flower

metrics: setup
	$(BIN)/einvoice metrics

migrate: setup
	$(BIN)/alembic upgrade head

sandbox: setup
	$(BIN)/einvoice sandbox
