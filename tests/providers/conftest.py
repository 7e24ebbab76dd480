"""The MYSuite sandbox over real HTTP, shared by the contract tests of this package."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from providers.mysuite import MySuiteClient, MySuiteConfig
from sandbox.mysuite import MySuiteSandboxConfig, create_app
from tests.sandboxes import Admin, client_factory, served

# Quick defaults for tests: requests finish processing at once unless a test asks otherwise.
SANDBOX_DEFAULTS: dict[str, Any] = {
    "processing_base_seconds": 0.0,
    "seconds_per_mb": 0.0,
    "link_ttl_seconds": 432000,
}


class MySuiteSandbox(Admin):
    """Handle on the running simulator: its URLs, knobs and counters (through its admin API)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.mount = f"{base_url}/mysuite"
        self.async_url = f"{self.mount}/async/factwsfront.asmx"
        self.sync_url = f"{self.mount}/sync/FactWSFront.asmx"
        super().__init__(self.mount)

    def reset(self) -> None:
        self.clear()
        self.configure(preset="default", **SANDBOX_DEFAULTS)

    def calls(self, transaction: str) -> int:
        entry = self.counters()["transactions"].get(transaction, {"calls": 0})
        return int(entry["calls"])


@pytest.fixture(scope="session")
def mysuite_server() -> Iterator[MySuiteSandbox]:
    with served("mysuite", create_app(MySuiteSandboxConfig(**SANDBOX_DEFAULTS))) as url:
        sandbox = MySuiteSandbox(url)
        yield sandbox
        sandbox.close()


@pytest.fixture
def sandbox(mysuite_server: MySuiteSandbox) -> MySuiteSandbox:
    mysuite_server.reset()
    return mysuite_server


@pytest.fixture
def make_client(sandbox: MySuiteSandbox) -> Iterator[Any]:
    """Build clients pointed at the sandbox; every one is closed after the test."""
    base = MySuiteConfig(
        async_url=sandbox.async_url,
        sync_url=sandbox.sync_url,
        requestor="12211111-1111-1111-1111-111111111111",
        connect_timeout=2.0,
        read_timeout=5.0,
        upload_timeout=10.0,
        incall_wait=0.0,
    )

    yield from client_factory(lambda *, links=None, **overrides: MySuiteClient(replace(base, **overrides), links=links))
