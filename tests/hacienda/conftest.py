"""The Hacienda sandbox over real HTTP, mounted as sandbox/app.py mounts it, and clients for it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from providers.hacienda import HaciendaClient, HaciendaSettings
from providers.ratelimit import RateLimiter
from sandbox.hacienda import HaciendaSandboxConfig, create_app
from tests.sandboxes import Admin, client_factory, served

USER = "cpj-3-101-123456@stag.comprobanteselectronicos.go.cr"
PASSWORD = "sandbox"
OTHER_USER = "cpf-01-1448-0790@stag.comprobanteselectronicos.go.cr"

# Each test starts from this: the protocol as documented, without waiting or quota unless asked.
BASE_CONFIG = HaciendaSandboxConfig(
    users={USER: PASSWORD, OTHER_USER: "otra"},
    processing_seconds=0.0,
    quota_per_hour=0,
    quota_per_day=0,
    seed=7,
)


class Sandbox(Admin):
    def __init__(self, url: str) -> None:
        self.url = url
        self.base = f"{url}/hacienda"
        super().__init__(self.base)

    @property
    def api_url(self) -> str:
        return f"{self.base}/recepcion/v1/"

    @property
    def idp_url(self) -> str:
        return f"{self.base}/idp/auth/realms/rut-stag/protocol/openid-connect/token"

    def expire_tokens(self, refresh: bool = False) -> None:
        self.admin.post("/expire-tokens", json={"refresh": refresh}).raise_for_status()


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[Sandbox]:
    with served("hacienda", create_app(BASE_CONFIG)) as url:
        yield Sandbox(url)


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    sandbox_server.configure(**dataclasses.asdict(BASE_CONFIG))
    sandbox_server.clear()
    return sandbox_server


@pytest.fixture
def make_client(sandbox: Sandbox) -> Iterator[Callable[..., HaciendaClient]]:
    """Clients of the sandbox; keyword arguments override settings, `limiter` injects a RateLimiter."""
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def build(limiter: RateLimiter | None = None, **overrides: Any) -> HaciendaClient:
        settings = HaciendaSettings(
            api_url=sandbox.api_url,
            idp_url=sandbox.idp_url,
            username=USER,
            password=PASSWORD,
            redis_prefix=prefix,
            rate_per_hour=0,
            rate_per_day=0,
            rate_wait=0.0,
        )
        return HaciendaClient(dataclasses.replace(settings, **overrides), limiter=limiter)

    yield from client_factory(build)
