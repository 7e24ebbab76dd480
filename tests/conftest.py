"""Shared fixtures: real PostgreSQL databases, a Redis database, and the sandbox over HTTP.

Each test session gets databases of its own, so several sessions (and CI) can share one server.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from sandbox.app import build_app
from sandbox.server import ServerThread
from tests.e2e.stack import Stack, make_stack

TEST_PG = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def create_pg_database() -> str:
    """Create an empty database on the test server and return its plain postgresql:// URL."""
    name = f"einvoice_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_psycopg_url(TEST_PG), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = TEST_PG.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(_psycopg_url(TEST_PG), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (no schema), dropped afterwards."""
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database index of this session's own, emptied first."""
    index = random.randint(1, 15)
    url = f"{TEST_REDIS}/{index}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def migrated_pg_url(empty_pg_url: str) -> str:
    """A throwaway PostgreSQL database at the latest schema, built by the Alembic chain."""
    from worker.schema import upgrade

    upgrade(empty_pg_url)
    return empty_pg_url


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """A Store on each backend, schema built by the migrations."""
    from models import Store, make_engine
    from worker.schema import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("migrated_pg_url")
    engine = make_engine(url)
    yield Store(engine)
    engine.dispose()


# The stack of real parts (sandbox over HTTP, PostgreSQL or SQLite, Redis or the file broker) that
# the end-to-end, operations and fault tests drive through the CLI and Celery workers.


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with ServerThread(build_app()) as server:
        yield server.url


@pytest.fixture
def pg_stack(migrated_pg_url: str, redis_url: str, sandbox_url: str, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_url).flushdb()
    stack = make_stack(migrated_pg_url, redis_url, sandbox_url, tmp_path, {})
    yield stack
    stack.store.engine.dispose()


@pytest.fixture
def embedded_stack(sandbox_url: str, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(f"sqlite:///{tmp_path / 'einvoice.db'}", None, sandbox_url, tmp_path, {})
    yield stack
    stack.store.engine.dispose()
