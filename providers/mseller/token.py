"""The idToken, one per credential for all worker processes (see providers/tokens.py).

MSeller's tokens are AWS Cognito JWTs whose lifetime is not documented, so the client reads it from
the idToken's own `exp` claim and logs in again a margin before it. A login does not count against
the plan, but a login per document or per process would still hammer Cognito. Refused credentials
(401/403 on the login) raise AuthError and start the login cool-down.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

import httpx

from providers.base import AuthError, RateLimitedError, TransientError, observed
from providers.mseller.settings import MSellerSettings
from providers.ratelimit import retry_after_seconds
from providers.tokens import SharedToken, Token, error_body

log = logging.getLogger(__name__)

# When the idToken carries no readable `exp`, Cognito's default lifetime is assumed.
DEFAULT_LIFETIME = 3600.0


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (we only need to know when to renew)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


class TokenSource(SharedToken):
    """MSeller's idToken, from a fresh login whenever the shared one is missing or near `exp`."""

    value_field = "id_token"

    def __init__(self, settings: MSellerSettings, http: httpx.Client, redis_client: Any | None) -> None:
        super().__init__("mseller", (settings.base, settings.email or ""), settings, http, redis_client)
        self._settings = settings

    def obtain(self, current: Token | None) -> Token:
        settings = self._settings
        self.check_refusal()
        if not settings.email or not settings.password:
            raise AuthError("mseller: MSELLER_EMAIL and MSELLER_PASSWORD are not configured")
        with observed("mseller", "login"):
            started = time.time()
            response = self.post(
                f"{settings.base}/customer/authentication",
                "mseller login",
                json={"email": settings.email, "password": settings.password},
            )
            return self._parse(response, started)

    def _parse(self, response: httpx.Response, started: float) -> Token:
        status = response.status_code
        # MSeller's `{"message", "code"}` error body.
        description = error_body(response, ("code", "message"), 300)
        if 200 <= status < 300:
            try:
                body = response.json()
                id_token = body["idToken"]
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientError("mseller login: unreadable answer", code=str(status)) from exc
            if not isinstance(id_token, str) or not id_token:
                raise TransientError("mseller login: the answer has no idToken", code=str(status))
            expires_at = jwt_expiry(id_token) or started + DEFAULT_LIFETIME
            log.info("mseller: logged in; the idToken expires in %.0fs", expires_at - started)
            return Token(value=id_token, expires_at=expires_at, lifetime=max(1.0, expires_at - started))
        if status in (400, 401, 403):
            raise self.refused(
                AuthError(f"mseller refused the credentials (HTTP {status})", code=str(status), description=description)
            )
        if status == 429:
            raise RateLimitedError(
                "mseller login: too many requests",
                code="429",
                description=description,
                retry_after=retry_after_seconds(response.headers),
            )
        if status >= 500:
            raise TransientError(f"mseller login: HTTP {status}", code=str(status), description=description)
        raise AuthError(f"mseller login: unexpected HTTP {status}", code=str(status), description=description)
