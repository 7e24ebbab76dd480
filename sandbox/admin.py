"""The `/_admin/` endpoints every simulator has: its configuration, a reset, its counters.

Tests and the demo drive all simulators the same way, so these answer alike: `GET /_admin/config`
shows the configuration, `POST /_admin/config` applies a JSON object of knobs (400 naming the bad
knob, nothing applied), `POST /_admin/reset` forgets what was received, `GET /_admin/counters`
tells what was received. `sandbox.app.AdminGuard` protects them all by their path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def admin_routes(
    *,
    show: Callable[[], dict[str, Any]],
    apply: Callable[[dict[str, Any]], None],
    reset: Callable[[], None],
    counters: Callable[[], dict[str, Any]],
) -> list[Route]:
    """`apply` raises ValueError for a bad knob; `show` is what GET and a successful POST answer."""

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                apply(_json_object(await request.body()))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(show())

    async def reset_endpoint(request: Request) -> Response:
        reset()
        return JSONResponse({"reset": True})

    async def counters_endpoint(request: Request) -> Response:
        return JSONResponse(counters())

    return [
        Route("/_admin/config", config, methods=["GET", "POST"]),
        Route("/_admin/reset", reset_endpoint, methods=["POST"]),
        Route("/_admin/counters", counters_endpoint, methods=["GET"]),
    ]


def _json_object(body: bytes) -> dict[str, Any]:
    """The knobs to change; an empty body changes none."""
    try:
        changes = json.loads(body or b"{}")
    except ValueError:  # also UnicodeDecodeError
        raise ValueError("body must be a JSON object") from None
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object")
    return changes
