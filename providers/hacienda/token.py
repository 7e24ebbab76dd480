"""The IDP access token, one per credential for all worker processes.

Hacienda's Keycloak issues 5-minute access tokens and rate-limits logins (a sandbox client library
lists 10 successful logins a minute); a login per document, or per process after every restart,
would burn that allowance and look like an attack. So the token lives in Redis, where every
process reads it, and only the process holding a short Redis lock logs in or refreshes; the others
keep using the current token while it is still valid, or wait briefly for the new one.

Refused credentials (400/401 on the password grant) raise AuthError and suspend further logins by
this client for a cool-down: retrying a wrong password from many processes is how accounts get
locked. The token is held in clear in Redis, which is trusted infrastructure like the broker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from providers.base import AuthError, RateLimitedError, TransientError, observed
from providers.hacienda.settings import HaciendaSettings
from providers.ratelimit import retry_after_seconds

log = logging.getLogger(__name__)

LOCK_SECONDS = 10.0
LOCK_POLL = 0.05

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_at: float
    lifetime: float
    refresh_token: str | None
    refresh_expires_at: float | None

    def fresh(self, now: float, margin: float) -> bool:
        """Valid for longer than the margin (capped at half the lifetime, for short-lived tokens)."""
        return self.expires_at - now > min(margin, self.lifetime / 2)

    def usable(self, now: float) -> bool:
        return self.expires_at - now > 1.0

    def refreshable(self, now: float) -> bool:
        return self.refresh_token is not None and (
            self.refresh_expires_at is None or self.refresh_expires_at - now > 1.0
        )


class _RefreshRefused(Exception):
    """The IDP no longer accepts the refresh token (expired, session ended): log in again."""


class TokenSource:
    """Hands out a valid bearer token, logging in or refreshing only when needed."""

    def __init__(self, settings: HaciendaSettings, http: httpx.Client, redis_client: Any | None) -> None:
        self._settings = settings
        self._http = http
        self._redis = redis_client
        identity = "\0".join((settings.idp_url, settings.client_id, settings.username or ""))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        self._key = f"{settings.redis_prefix}:hacienda:token:{digest}"
        self._lock_key = f"{self._key}:lock"
        self._local: Token | None = None
        self._mutex = threading.Lock()
        self._auth_refused_until = 0.0
        self._auth_refusal: AuthError | None = None

    def get(self) -> str:
        now = time.time()
        token = self._local
        if token is not None and token.fresh(now, self._settings.token_refresh_margin):
            return token.access_token
        token = self._load()
        if token is not None and token.fresh(now, self._settings.token_refresh_margin):
            self._local = token
            return token.access_token
        return self._renew(rejected=None)

    def renew(self, rejected: str) -> str:
        """A new token after the API refused `rejected` (401), unless another process already has one."""
        return self._renew(rejected=rejected)

    def _renew(self, rejected: str | None) -> str:
        margin = self._settings.token_refresh_margin
        with self._mutex, self._shared_lock(rejected) as locked:
            now = time.time()
            current = self._load()
            if (
                current is not None
                and current.access_token != rejected
                and (current.fresh(now, margin) or (not locked and current.usable(now)))
            ):
                self._local = current
                return current.access_token
            token = None
            if current is not None and current.refreshable(now):
                try:
                    token = self._grant(refresh_token=current.refresh_token)
                except _RefreshRefused:
                    log.info("hacienda: refresh token refused by the IDP, logging in again")
            if token is None:
                token = self._grant()
            self._store(token)
            self._local = token
            return token.access_token

    @contextmanager
    def _shared_lock(self, rejected: str | None) -> Iterator[bool]:
        """Hold the Redis lock if it can be had within LOCK_SECONDS; yields whether it is held.

        Waiting ends early when another process stores a fresh token; after the wait the caller
        proceeds without the lock rather than fail, since a stuck lock expires on its own anyway.
        """
        if self._redis is None:
            yield True
            return
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_SECONDS
        locked = False
        try:
            while True:
                if self._redis_call(
                    lambda: self._redis.set(self._lock_key, owner, nx=True, px=int(LOCK_SECONDS * 1000))
                ):
                    locked = True
                    break
                current = self._load()
                replaced = (
                    current is not None
                    and current.access_token != rejected
                    and current.fresh(time.time(), self._settings.token_refresh_margin)
                )
                if replaced or time.monotonic() > deadline:
                    break
                time.sleep(LOCK_POLL)
            yield locked
        finally:
            if locked:
                self._redis_call(lambda: self._redis.eval(_RELEASE, 1, self._lock_key, owner))

    def _load(self) -> Token | None:
        if self._redis is None:
            return self._local
        raw = self._redis_call(lambda: self._redis.get(self._key))
        if raw is None:
            return None
        try:
            return Token(**json.loads(raw))
        except (TypeError, ValueError):
            return None

    def _store(self, token: Token) -> None:
        if self._redis is None:
            return
        ends = max(token.expires_at, token.refresh_expires_at or token.expires_at)
        ttl_ms = max(1000, int((ends - time.time()) * 1000))
        self._redis_call(lambda: self._redis.set(self._key, json.dumps(asdict(token)), px=ttl_ms))

    def _redis_call(self, call: Any) -> Any:
        import redis

        try:
            return call()
        except redis.RedisError as exc:
            raise TransientError(f"hacienda: token cache unavailable ({type(exc).__name__})") from exc

    def _grant(self, refresh_token: str | None = None) -> Token:
        settings = self._settings
        form = {"client_id": settings.client_id, "client_secret": ""}
        if refresh_token is not None:
            form |= {"grant_type": "refresh_token", "refresh_token": refresh_token}
            operation = "token_refresh"
        else:
            now = time.time()
            refusal = self._auth_refusal
            if now < self._auth_refused_until and refusal is not None:
                raise AuthError(
                    f"{refusal.message}; login suspended for {self._auth_refused_until - now:.0f}s",
                    code=refusal.code,
                    description=refusal.description,
                )
            if not settings.username or not settings.password:
                raise AuthError("hacienda: HACIENDA_USERNAME and HACIENDA_PASSWORD are not configured")
            form |= {"grant_type": "password", "username": settings.username, "password": settings.password}
            operation = "token_login"
        with observed("hacienda", operation):
            started = time.time()
            try:
                response = self._http.post(settings.idp_url, data=form)
            except httpx.TimeoutException as exc:
                raise TransientError(f"hacienda IDP: timeout ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"hacienda IDP: connection failed ({type(exc).__name__})") from exc
            return self._parse(response, started, refreshing=refresh_token is not None)

    def _parse(self, response: httpx.Response, started: float, *, refreshing: bool) -> Token:
        status = response.status_code
        cause = response.headers.get("x-error-cause")
        if status == 200:
            try:
                body = response.json()
                token = Token(
                    access_token=str(body["access_token"]),
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
        description = _keycloak_error(response) or cause
        if status in (400, 401) and refreshing:
            raise _RefreshRefused()
        if status in (400, 401, 403):
            error = AuthError(
                f"hacienda IDP refused the credentials (HTTP {status})",
                code=str(status),
                description=description,
            )
            self._auth_refused_until = time.time() + self._settings.auth_cooldown
            self._auth_refusal = error
            log.error("hacienda: IDP refused the credentials (HTTP %s): %s", status, description)
            raise error
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


def _keycloak_error(response: httpx.Response) -> str | None:
    """Keycloak's `{"error": …, "error_description": …}`, as one short line."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts = [str(body[k])[:200] for k in ("error", "error_description") if body.get(k)]
    return ": ".join(parts) or None
