"""The MYSuite sandbox over real HTTP, shared by the contract tests of this package."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from providers.links import LinkPolicy
from providers.mysuite import MySuiteClient, MySuiteConfig
from sandbox.mysuite import MySuiteSandboxConfig, create_app
from sandbox.server import ServerThread

# Quick defaults for tests: requests finish processing at once unless a test asks otherwise.
SANDBOX_DEFAULTS: dict[str, Any] = {
    "processing_base_seconds": 0.0,
    "seconds_per_mb": 0.0,
    "link_ttl_seconds": 432000,
}


class MySuiteSandbox:
    """Handle on the running simulator: its URLs, knobs and counters (through its admin API)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.mount = f"{base_url}/mysuite"
        self.async_url = f"{self.mount}/async/factwsfront.asmx"
        self.sync_url = f"{self.mount}/sync/FactWSFront.asmx"
        self._admin = httpx.Client(timeout=10)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        response = self._admin.post(f"{self.mount}/_admin/config", json=knobs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self._admin.post(f"{self.mount}/_admin/reset").raise_for_status()
        self.configure(preset="default", **SANDBOX_DEFAULTS)

    def counters(self) -> dict[str, Any]:
        response = self._admin.get(f"{self.mount}/_admin/counters")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def calls(self, transaction: str) -> int:
        entry = self.counters()["transactions"].get(transaction, {"calls": 0})
        return int(entry["calls"])

    def close(self) -> None:
        self._admin.close()


@pytest.fixture(scope="session")
def mysuite_server() -> Iterator[MySuiteSandbox]:
    app = Starlette(routes=[Mount("/mysuite", app=create_app(MySuiteSandboxConfig(**SANDBOX_DEFAULTS)))])
    with ServerThread(app) as server:
        sandbox = MySuiteSandbox(server.url)
        yield sandbox
        sandbox.close()


@pytest.fixture
def sandbox(mysuite_server: MySuiteSandbox) -> MySuiteSandbox:
    mysuite_server.reset()
    return mysuite_server


@pytest.fixture
def make_client(sandbox: MySuiteSandbox) -> Iterator[Any]:
    """Build clients pointed at the sandbox; every one is closed after the test."""
    made: list[MySuiteClient] = []
    base = MySuiteConfig(
        async_url=sandbox.async_url,
        sync_url=sandbox.sync_url,
        requestor="12211111-1111-1111-1111-111111111111",
        connect_timeout=2.0,
        read_timeout=5.0,
        upload_timeout=10.0,
        incall_wait=0.0,
    )

    def make(*, links: LinkPolicy | None = None, **overrides: Any) -> MySuiteClient:
        client = MySuiteClient(replace(base, **overrides), links=links)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
