"""The API application as a server process builds it from the environment: `einvoice api` runs it
in-process, or names it to uvicorn so that each of several worker processes builds its own engine,
pool and broker connection (none of which survive a fork)."""

from __future__ import annotations

import asyncio
import socket

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from models import Store, make_engine
from models.access import ServerSecret
from worker.api.app import create_app


def build() -> FastAPI:
    from tasks.context import store_setup
    from worker.app import app as celery_app
    from worker.app import settings

    secret = ServerSecret.load(embedded=settings.embedded)
    store = Store(make_engine(settings.database_url))
    for setup in store_setup:
        setup(store)

    def broker_check() -> None:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    return create_app(
        store=store, secret=secret, policy=settings.policy, archive_dir=settings.archive_dir, broker_check=broker_check
    )


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY on every connection.

    With several workers uvicorn binds the listening socket itself, with protocol number 0, and
    asyncio only turns Nagle off on sockets whose protocol reads IPPROTO_TCP. uvicorn writes a
    response's head and body in two sends, so Nagle then holds each body back until the client's
    delayed ACK: 40 ms added to every request on a kept-alive connection.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
