"""Fixtures of the end-to-end tests: one sandbox per module, a fresh stack per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandbox.app import build_app
from sandbox.server import ServerThread
from tests.e2e.stack import Stack, make_stack


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
