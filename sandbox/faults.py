"""Faults the JSON simulators inject the same way."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class DroppedConnection(Response):
    """Starts a response and never finishes it: the server then closes the socket mid-answer."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"512")]})


class FaultKnobs(Protocol):
    @property
    def fault_scope(self) -> str: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def drop_share(self) -> float: ...
    @property
    def error_share(self) -> float: ...
    @property
    def error_status(self) -> int: ...


async def injected_fault(
    config: FaultKnobs,
    rng: random.Random,
    totals: Counter[str],
    target: str,
    error: Callable[[int], Response],
    spoilt: Sequence[tuple[str, float]],
) -> Response | str | None:
    """The latency, then at most one fault drawn by its share, counted in `totals` as `fault_…`.

    A dropped connection or an error answer (`error(status)`) is returned as the response to send;
    a spoilt answer (`spoilt`: name and share) is returned by name, for the endpoint to spoil after
    it has done the work. `fault_scope` is `all` or the `target` the faults are meant for.
    """
    if config.fault_scope not in ("all", target):
        return None
    if config.latency_ms > 0:
        await asyncio.sleep(config.latency_ms / 1000)
    draw = rng.random()
    if draw < config.drop_share:
        totals["fault_dropped"] += 1
        return DroppedConnection()
    draw -= config.drop_share
    if draw < config.error_share:
        totals[f"fault_{config.error_status}"] += 1
        return error(config.error_status)
    draw -= config.error_share
    for name, share in spoilt:
        if draw < share:
            totals[f"fault_{name}"] += 1
            return name
        draw -= share
    return None
