"""The idToken, one per credential for all worker processes.

MSeller's tokens are AWS Cognito JWTs whose lifetime is not documented, so the client reads it from
the idToken's own `exp` claim and logs in again a margin before it. A login does not count against
the plan, but a login per document or per process would still hammer Cognito, so the token lives in
Redis, where every process reads it; only the process holding a short Redis lock logs in, the
others keep using the current token while it is valid or wait briefly for the new one.

Refused credentials (401/403 on the login) raise AuthError and suspend further logins by this
client for a cool-down: retrying a wrong password from many processes is how accounts get locked.
"""

from __future__ import annotations

import base64
import binascii
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
from providers.mseller.settings import MSellerSettings
from providers.ratelimit import retry_after_seconds

log = logging.getLogger(__name__)

LOCK_SECONDS = 10.0
LOCK_POLL = 0.05
# When the idToken carries no readable `exp`, Cognito's default lifetime is assumed.
DEFAULT_LIFETIME = 3600.0

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Token:
    id_token: str
    expires_at: float
    lifetime: float

    def fresh(self, now: float, margin: float) -> bool:
        """Valid for longer than the margin (capped at half the lifetime, for short-lived tokens)."""
        return self.expires_at - now > min(margin, self.lifetime / 2)

    def usable(self, now: float) -> bool:
        return self.expires_at - now > 1.0


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


class TokenSource:
    """Hands out a valid idToken, logging in only when the shared one is missing or near `exp`."""

    def __init__(self, settings: MSellerSettings, http: httpx.Client, redis_client: Any | None) -> None:
        self._settings = settings
        self._http = http
        self._redis = redis_client
        identity = "\0".join((settings.base, settings.email or ""))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        self._key = f"{settings.redis_prefix}:mseller:token:{digest}"
        self._lock_key = f"{self._key}:lock"
        self._local: Token | None = None
        self._mutex = threading.Lock()
        self._refused_until = 0.0
        self._refusal: AuthError | None = None

    def get(self) -> str:
        now = time.time()
        margin = self._settings.token_refresh_margin
        token = self._local
        if token is not None and token.fresh(now, margin):
            return token.id_token
        token = self._load()
        if token is not None and token.fresh(now, margin):
            self._local = token
            return token.id_token
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
                and current.id_token != rejected
                and (current.fresh(now, margin) or (not locked and current.usable(now)))
            ):
                self._local = current
                return current.id_token
            token = self._login()
            self._store(token)
            self._local = token
            return token.id_token

    @contextmanager
    def _shared_lock(self, rejected: str | None) -> Iterator[bool]:
        """Hold the Redis lock if it can be had within LOCK_SECONDS; yields whether it is held."""
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
                    and current.id_token != rejected
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
        ttl_ms = max(1000, int((token.expires_at - time.time()) * 1000))
        self._redis_call(lambda: self._redis.set(self._key, json.dumps(asdict(token)), px=ttl_ms))

    def _redis_call(self, call: Any) -> Any:
        import redis

        try:
            return call()
        except redis.RedisError as exc:
            raise TransientError(f"mseller: token cache unavailable ({type(exc).__name__})") from exc

    def _login(self) -> Token:
        settings = self._settings
        now = time.time()
        if now < self._refused_until and self._refusal is not None:
            raise AuthError(
                f"{self._refusal.message}; login suspended for {self._refused_until - now:.0f}s",
                code=self._refusal.code,
                description=self._refusal.description,
            )
        if not settings.email or not settings.password:
            raise AuthError("mseller: MSELLER_EMAIL and MSELLER_PASSWORD are not configured")
        with observed("mseller", "login"):
            started = time.time()
            try:
                response = self._http.post(
                    f"{settings.base}/customer/authentication",
                    json={"email": settings.email, "password": settings.password},
                )
            except httpx.TimeoutException as exc:
                raise TransientError(f"mseller login: timeout ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"mseller login: connection failed ({type(exc).__name__})") from exc
            return self._parse(response, started)

    def _parse(self, response: httpx.Response, started: float) -> Token:
        status = response.status_code
        description = _message(response)
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
            return Token(id_token=id_token, expires_at=expires_at, lifetime=max(1.0, expires_at - started))
        if status in (400, 401, 403):
            error = AuthError(
                f"mseller refused the credentials (HTTP {status})", code=str(status), description=description
            )
            self._refused_until = time.time() + self._settings.auth_cooldown
            self._refusal = error
            log.error("mseller: login refused (HTTP %s): %s", status, description)
            raise error
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


def _message(response: httpx.Response) -> str | None:
    """MSeller's `{"message", "code"}` error body as one short line."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts = [str(body[k])[:300] for k in ("code", "message") if body.get(k)]
    return ": ".join(parts) or None
