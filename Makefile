# Thin wrappers over documented commands; every target works from a fresh clone.
# Commands: README.md (CLI, workers) and docs/OPERATIONS.md (the compose stack).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMPOSE ?= docker compose

LOCK := requirements/lock.txt
DEV_LOCK := requirements/dev-lock.txt
# The lock tool's own flags: one resolution for every platform, with every file's hash.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock'

.PHONY: setup lock demo test lint bench up down worker beat flower metrics migrate sandbox

# Exactly the locked versions (hashes checked), then the project itself without its dependencies.
$(BIN)/einvoice: pyproject.toml $(DEV_LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/einvoice

# Regenerate the locks after a change of dependencies in pyproject.toml (requirements/README.md).
lock:
	test -x $(BIN)/uv || { $(PY) -m venv $(VENV) && $(BIN)/pip install -q uv; }
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --extra dev -c $(LOCK) -o $(DEV_LOCK)

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

# The whole stack in containers (postgres, redis, migrate, workers, beat, api, flower, metrics,
# prometheus, grafana). It requires every provider setting and password (docs/OPERATIONS.md); on a
# laptop: COMPOSE='docker compose --profile dev --env-file deploy/dev.env' make up.
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
