from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.server import ApiServer, api_env
from tests.e2e.stack import Stack


@pytest.fixture
def api_stack(pg_stack: Stack) -> Stack:
    pg_stack.env = api_env(pg_stack.env)
    return pg_stack


@pytest.fixture
def api(api_stack: Stack, tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(api_stack.env, tmp_path / "api.log").start()
    yield server
    server.stop()
