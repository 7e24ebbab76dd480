"""What every simulator's test fixtures share: serving it mounted as sandbox/app.py mounts it, its
admin API, and a factory of provider clients that closes them after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from sandbox.server import ServerThread


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@contextmanager
def served(mount: str, app: ASGIApp) -> Iterator[str]:
    """The server's base URL while `app` is served under `/{mount}` over real HTTP."""
    with ServerThread(Starlette(routes=[Mount(f"/{mount}", app=app)])) as server:
        yield server.url


class Admin:
    """The `/_admin/` API of one simulator (see sandbox/admin.py)."""

    def __init__(self, base_url: str) -> None:
        self.admin = httpx.Client(base_url=f"{base_url}/_admin", timeout=10)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        response = self.admin.post("/config", json=knobs)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def clear(self) -> None:
        """Forget what the simulator received (its counters, documents and locks)."""
        self.admin.post("/reset").raise_for_status()

    def counters(self) -> dict[str, Any]:
        response = self.admin.get("/counters")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = self.counters()["totals"]
        return totals

    def close(self) -> None:
        self.admin.close()


def client_factory(build: Callable[..., C]) -> Iterator[Callable[..., C]]:
    """For a `make_client` fixture: `build` wrapped so that every client it made is closed afterwards."""
    made: list[C] = []

    def make(*args: Any, **kwargs: Any) -> C:
        client = build(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
