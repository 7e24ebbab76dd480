"""The API's server processes answer without Nagle's delay, also behind a socket uvicorn bound itself."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.api.serve import NoDelayHttpToolsProtocol


def accepted_nodelay(protocol: type[HttpToolsProtocol]) -> list[int]:
    """TCP_NODELAY of each connection a real uvicorn server accepted on a socket it bound itself
    (as it does for `--workers N`), serving with `protocol`."""
    seen: list[int] = []

    class Recording(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    app = FastAPI()

    @app.get("/")
    def root() -> dict[str, Any]:
        return {"ok": True}

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=Recording, log_level="warning", lifespan="off")
    sock = config.bind_socket()
    assert sock.proto == 0  # the premise: asyncio leaves Nagle on for such a socket
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client() as client:
            for _ in range(2):
                assert client.get(f"http://127.0.0.1:{sock.getsockname()[1]}/").json() == {"ok": True}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    return seen


@pytest.mark.parametrize(("protocol", "nodelay"), [(HttpToolsProtocol, False), (NoDelayHttpToolsProtocol, True)])
def test_connections_on_a_socket_uvicorn_bound_get_tcp_nodelay_from_our_protocol(
    protocol: type[HttpToolsProtocol], nodelay: bool
) -> None:
    seen = accepted_nodelay(protocol)
    assert len(seen) == 1  # one kept-alive connection for both requests
    assert bool(seen[0]) is nodelay
