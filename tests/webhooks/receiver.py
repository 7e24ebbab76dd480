"""A webhook receiver over real HTTP that verifies Standard Webhooks signatures and misbehaves on cue."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    webhook_id: str
    type: str
    data: dict[str, Any]


@dataclass
class Receiver:
    """`mode` per path: "ok", "fail" (500), "gone" (410), "turns" (500, too slow, 2xx, 2xx in turns)."""

    slow_seconds: float
    secrets: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    ok: list[tuple[str, Received]] = field(default_factory=list)
    bad_signatures: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    hold_seconds: float = 0.0
    inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{name}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        with self.lock:
            self.inflight += 1
            turn = self.requests.get(name, 0)
            self.requests[name] = turn + 1
        try:
            if self.hold_seconds:
                await asyncio.sleep(self.hold_seconds)
            mode = self.modes.get(name, "ok")
            if mode == "gone":
                return Response(status_code=410)
            if mode == "fail" or (mode == "turns" and turn % 4 == 0):
                return Response(status_code=500)
            if mode == "turns" and turn % 4 == 1:
                # Past the sender's timeout: it has given up, so this one does not count as received.
                await asyncio.sleep(self.slow_seconds)
                return Response(status_code=204)
            try:
                payload = Webhook(self.secrets[name]).verify(body, dict(request.headers))
            except (WebhookVerificationError, KeyError, ValueError):
                with self.lock:
                    self.bad_signatures += 1
                return Response(status_code=400)
            with self.lock:
                self.ok.append((name, Received(request.headers["webhook-id"], payload["type"], payload["data"])))
            return Response(status_code=204)
        finally:
            with self.lock:
                self.inflight -= 1

    def received(self, name: str) -> list[Received]:
        with self.lock:
            return [r for n, r in self.ok if n == name]
