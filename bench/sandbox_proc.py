"""The sandbox in a process of its own, with a gauge of how many calls are in flight at once.

`python -m bench.sandbox_proc --port P` serves every simulator (as `einvoice sandbox` does) and adds
`POST /_bench/inflight`, which answers the highest and the time-averaged number of requests the
sandbox was serving at once since the last reset. The average is the integral of the in-flight
count over time divided by the time, so it needs no sampling and misses no short burst.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """ASGI middleware counting HTTP requests between their arrival and the end of their answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reset()

    def reset(self) -> None:
        self.current = 0
        self.peak = 0
        self.requests = 0
        self.area = 0.0  # sum of in-flight count x seconds
        self.busy = 0.0  # seconds with at least one request in flight
        self.since = time.monotonic()
        self._last = self.since

    def _advance(self) -> None:
        now = time.monotonic()
        self.area += self.current * (now - self._last)
        if self.current:
            self.busy += now - self._last
        self._last = now

    def stats(self) -> dict[str, Any]:
        self._advance()
        elapsed = self._last - self.since
        return {
            "requests": self.requests,
            "peak": self.peak,
            "mean_in_flight": self.area / elapsed if elapsed else 0.0,
            "mean_in_flight_while_busy": self.area / self.busy if self.busy else 0.0,
            "seconds": elapsed,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/_bench/inflight":
            await self._report(receive, send)
            return
        self._advance()
        self.current += 1
        self.requests += 1
        self.peak = max(self.peak, self.current)
        try:
            await self.app(scope, receive, send)
        finally:
            self._advance()
            self.current -= 1

    async def _report(self, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = self.stats()
        if body and json.loads(body).get("reset"):
            self.reset()
        payload = json.dumps(data).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from sandbox.app import build_app

    uvicorn.run(
        InFlight(build_app()),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=2048,
    )


if __name__ == "__main__":
    main()
