"""The IDP access token, one per credential for all worker processes (see providers/tokens.py).

Hacienda's Keycloak issues 5-minute access tokens and rate-limits logins (a sandbox client library
lists 10 successful logins a minute), so the shared token is refreshed with the refresh grant while
the IDP still accepts it and the password grant is the fallback. Refused credentials (400/401 on
the password grant) raise AuthError and start the login cool-down.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from providers.base import AuthError, RateLimitedError, TransientError, observed
from providers.hacienda.settings import HaciendaSettings
from providers.ratelimit import retry_after_seconds
from providers.tokens import SharedToken, Token, error_body

log = logging.getLogger(__name__)


class _RefreshRefused(Exception):
    """The IDP no longer accepts the refresh token (expired, session ended): log in again."""


class TokenSource(SharedToken):
    """Hacienda's access token: refreshed while possible, else a password grant."""

    value_field = "access_token"
    refreshes = True

    def __init__(self, settings: HaciendaSettings, http: httpx.Client, redis_client: Any | None) -> None:
        super().__init__(
            "hacienda", (settings.idp_url, settings.client_id, settings.username or ""), settings, http, redis_client
        )
        self._settings = settings

    def obtain(self, current: Token | None) -> Token:
        if current is not None and current.refreshable(time.time()):
            try:
                return self._grant(refresh_token=current.refresh_token)
            except _RefreshRefused:
                log.info("hacienda: refresh token refused by the IDP, logging in again")
        return self._grant()

    def _grant(self, refresh_token: str | None = None) -> Token:
        settings = self._settings
        form = {"client_id": settings.client_id, "client_secret": ""}
        if refresh_token is not None:
            form |= {"grant_type": "refresh_token", "refresh_token": refresh_token}
            operation = "token_refresh"
        else:
            self.check_refusal()
            if not settings.username or not settings.password:
                raise AuthError("hacienda: HACIENDA_USERNAME and HACIENDA_PASSWORD are not configured")
            form |= {"grant_type": "password", "username": settings.username, "password": settings.password}
            operation = "token_login"
        with observed("hacienda", operation):
            started = time.time()
            response = self.post(settings.idp_url, "hacienda IDP", data=form)
            return self._parse(response, started, refreshing=refresh_token is not None)

    def _parse(self, response: httpx.Response, started: float, *, refreshing: bool) -> Token:
        status = response.status_code
        cause = response.headers.get("x-error-cause")
        if status == 200:
            try:
                body = response.json()
                token = Token(
                    value=str(body["access_token"]),
                    expires_at=started + float(body["expires_in"]),
                    lifetime=float(body["expires_in"]),
                    refresh_token=body.get("refresh_token"),
                    refresh_expires_at=(
                        started + float(body["refresh_expires_in"]) if body.get("refresh_expires_in") else None
                    ),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientError("hacienda IDP: unreadable token response", code="200") from exc
            log.info("hacienda: %s the IDP token", "refreshed" if refreshing else "logged in and got")
            return token
        # Keycloak's `{"error": …, "error_description": …}`.
        description = error_body(response, ("error", "error_description"), 200) or cause
        if status in (400, 401) and refreshing:
            raise _RefreshRefused()
        if status in (400, 401, 403):
            raise self.refused(
                AuthError(
                    f"hacienda IDP refused the credentials (HTTP {status})",
                    code=str(status),
                    description=description,
                )
            )
        if status == 429:
            raise RateLimitedError(
                "hacienda IDP: too many requests",
                code="429",
                description=description,
                retry_after=retry_after_seconds(response.headers),
            )
        if status == 499 or status >= 500:
            raise TransientError(f"hacienda IDP: HTTP {status}", code=str(status), description=description)
        raise AuthError(f"hacienda IDP: unexpected HTTP {status}", code=str(status), description=description)
