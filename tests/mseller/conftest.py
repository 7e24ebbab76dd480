"""The MSeller sandbox over real HTTP, mounted as sandbox/app.py mounts it, and clients for it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from providers.mseller import InProcessBudget, MSellerClient, MSellerSettings
from providers.mseller.budget import MonthlyBudget
from providers.ratelimit import RateLimiter
from sandbox.mseller import MSellerSandboxConfig, create_app
from sandbox.mseller.config import DEFAULT_API_KEY, DEFAULT_EMAIL, DEFAULT_PASSWORD
from tests.sandboxes import Admin, client_factory, served

UNCERTIFIED = "sin-certificado@example.com"

# Each test starts from this: the protocol as documented, without waiting or plan limits unless asked.
BASE_CONFIG = MSellerSandboxConfig(
    users={DEFAULT_EMAIL: DEFAULT_PASSWORD, UNCERTIFIED: "otra"},
    uncertified_users=[UNCERTIFIED],
    processing_seconds=0.0,
    rate_per_second=0,
    monthly_requests=0,
    seed=7,
)


class Sandbox(Admin):
    def __init__(self, url: str) -> None:
        self.url = f"{url}/mseller"
        super().__init__(self.url)

    def ecf(self, encf: str) -> dict[str, int]:
        counts: dict[str, int] = self.counters()["ecfs"].get(encf, {})
        return counts

    def expire_tokens(self) -> None:
        self.admin.post("/expire-tokens").raise_for_status()


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[Sandbox]:
    with served("mseller", create_app(BASE_CONFIG)) as url:
        yield Sandbox(url)


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    sandbox_server.configure(**dataclasses.asdict(BASE_CONFIG))
    sandbox_server.clear()
    return sandbox_server


@pytest.fixture
def make_client(sandbox: Sandbox) -> Iterator[Callable[..., MSellerClient]]:
    """Clients of the sandbox; keyword arguments override settings, `budget`/`limiter` inject them."""
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def build(
        budget: MonthlyBudget | None = None, limiter: RateLimiter | None = None, **overrides: Any
    ) -> MSellerClient:
        settings = MSellerSettings(
            url=sandbox.url,
            email=DEFAULT_EMAIL,
            password=DEFAULT_PASSWORD,
            api_key=DEFAULT_API_KEY,
            redis_prefix=prefix,
            rate_per_second=0,
            monthly_requests=0,
            rate_wait=0.0,
        )
        return MSellerClient(
            dataclasses.replace(settings, **overrides), budget=budget or InProcessBudget(0), limiter=limiter
        )

    yield from client_factory(build)
