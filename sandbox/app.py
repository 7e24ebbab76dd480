"""Every simulator on one port, at the paths of the interface contract.

The `/_admin/` endpoints of every simulator change its behaviour and reveal what it received. On
loopback they are open, which is what tests and the demo use; a sandbox reachable from elsewhere
must be started with an admin token (`SANDBOX_ADMIN_TOKEN`), which `AdminGuard` then requires on
every admin path, whichever simulator it belongs to.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

ADMIN_SEGMENT = "_admin"
ADMIN_HEADER = "x-admin-token"


class AdminTokenMissing(RuntimeError):
    """The sandbox would expose its admin endpoints beyond this machine without a token."""


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`; an unknown name counts as exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_exposure(host: str, admin_token: str | None) -> None:
    """Refuse a bind beyond loopback without a token: anyone reaching the port could reconfigure it."""
    if not admin_token and not is_loopback(host):
        raise AdminTokenMissing(
            f"the sandbox would listen on {host}, beyond loopback, with open admin endpoints: "
            "set SANDBOX_ADMIN_TOKEN (or --admin-token), or bind 127.0.0.1"
        )


class AdminGuard:
    """Answers 401 on any admin path without the token, before the simulator sees the request.

    It matches the path segment rather than each simulator's routes, so a simulator added later is
    covered without knowing about it; the match ignores case because the MYSuite simulator serves
    paths case-insensitively, as IIS does.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._is_admin(scope["path"]) and not self._authorised(scope):
            response = JSONResponse(
                {"error": "admin token required (header X-Admin-Token or Authorization: Bearer)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _is_admin(path: str) -> bool:
        return ADMIN_SEGMENT in (segment.lower() for segment in path.split("/"))

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key == ADMIN_HEADER:
                offered = value
            elif key == "authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
            else:
                continue
            if hmac.compare_digest(offered, self._token):
                return True
        return False


def build_app(admin_token: str | None = None) -> Starlette:
    """MYSuite under /mysuite (async and sync services), Hacienda under /hacienda, Prodigia under /prodigia,
    MSeller under /mseller.

    With `admin_token`, every `/_admin/` path requires it; without, they are open (loopback use).
    """
    from sandbox.hacienda import create_app as hacienda_app
    from sandbox.mseller import create_app as mseller_app
    from sandbox.mysuite import create_app as mysuite_app
    from sandbox.prodigia import create_app as prodigia_app

    middleware = [Middleware(AdminGuard, token=admin_token)] if admin_token else []
    return Starlette(
        routes=[
            Mount("/mysuite", app=mysuite_app()),
            Mount("/hacienda", app=hacienda_app()),
            Mount("/prodigia", app=prodigia_app()),
            Mount("/mseller", app=mseller_app()),
        ],
        middleware=middleware,
    )
