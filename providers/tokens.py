"""A bearer token shared by every worker process, renewed before it expires.

Identity providers rate-limit logins (Hacienda's Keycloak, MSeller's Cognito), and a login per
document, or per process after every restart, would burn that allowance and look like an attack. So
the token lives in Redis, where every process reads it, and only the process holding a short Redis
lock logs in or refreshes; the others keep using the current token while it is still valid, or
wait briefly for the new one. The token is held in clear in Redis, which is trusted infrastructure
like the broker.

Refused credentials suspend further logins by this source for a cool-down: retrying a wrong
password from many processes is how accounts get locked. Each provider says only how it obtains a
token (`SharedToken.obtain`); the caching, locking and cool-down live here once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from providers.base import AuthError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_SECONDS = 10.0
LOCK_POLL = 0.05

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float
    lifetime: float
    refresh_token: str | None = None
    refresh_expires_at: float | None = None

    def fresh(self, now: float, margin: float) -> bool:
        """Valid for longer than the margin (capped at half the lifetime, for short-lived tokens)."""
        return self.expires_at - now > min(margin, self.lifetime / 2)

    def usable(self, now: float) -> bool:
        return self.expires_at - now > 1.0

    def refreshable(self, now: float) -> bool:
        return self.refresh_token is not None and (
            self.refresh_expires_at is None or self.refresh_expires_at - now > 1.0
        )


class TokenSettings(Protocol):
    @property
    def redis_prefix(self) -> str: ...
    @property
    def token_refresh_margin(self) -> float: ...
    @property
    def auth_cooldown(self) -> float: ...


class Unauthorized(AuthError):
    """A 401 from the API: the token may just have expired, so it earns one renewal."""


class SharedToken(ABC):
    """Hands out a valid bearer token, obtaining a new one only when the shared one is near expiry.

    `value_field` names the token in the cached JSON and `refreshes` says whether the refresh fields
    are kept there: each provider's cache entries keep the shape they have always had, so processes
    of different releases share them during a rolling deploy.
    """

    value_field = "token"
    refreshes = False

    def __init__(
        self,
        provider: str,
        identity: tuple[str, ...],
        settings: TokenSettings,
        http: httpx.Client,
        redis_client: Any | None,
    ) -> None:
        self.provider = provider
        self._margin = settings.token_refresh_margin
        self._cooldown = settings.auth_cooldown
        self._http = http
        self._redis = redis_client
        digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:24]
        self._key = f"{settings.redis_prefix}:{provider}:token:{digest}"
        self._lock_key = f"{self._key}:lock"
        self._local: Token | None = None
        self._mutex = threading.Lock()
        self._refused_until = 0.0
        self._refusal: AuthError | None = None

    @abstractmethod
    def obtain(self, current: Token | None) -> Token:
        """A new token from the identity provider; `current` is the expiring one, for a refresh."""

    def get(self) -> str:
        now = time.time()
        token = self._local
        if token is not None and token.fresh(now, self._margin):
            return token.value
        token = self._load()
        if token is not None and token.fresh(now, self._margin):
            self._local = token
            return token.value
        return self._renew(rejected=None)

    def renew(self, rejected: str) -> str:
        """A new token after the API refused `rejected` (401), unless another process already has one."""
        return self._renew(rejected=rejected)

    def authorized(self, operation: str, send: Callable[[str], T]) -> T:
        """`send` with the current token, and once more with a renewed one if the API answers 401."""
        token = self.get()
        try:
            return send(token)
        except Unauthorized:
            log.warning("%s: API refused the token on %s; renewing it once", self.provider, operation)
        token = self.renew(token)
        try:
            return send(token)
        except Unauthorized as exc:
            raise AuthError(
                f"{self.provider} API refused a freshly issued token (HTTP 401)",
                code="401",
                description=exc.description,
            ) from None

    def check_refusal(self) -> None:
        """Refuse to log in while the cool-down after refused credentials runs."""
        now = time.time()
        refusal = self._refusal
        if now < self._refused_until and refusal is not None:
            raise AuthError(
                f"{refusal.message}; login suspended for {self._refused_until - now:.0f}s",
                code=refusal.code,
                description=refusal.description,
            )

    def refused(self, error: AuthError) -> AuthError:
        """Start the cool-down after the identity provider refused the credentials."""
        self._refused_until = time.time() + self._cooldown
        self._refusal = error
        log.error("%s: credentials refused (HTTP %s): %s", self.provider, error.code, error.description)
        return error

    def post(self, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """POST to the identity provider; a timeout or a failed connection is transient."""
        try:
            return self._http.post(url, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{what}: timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: connection failed ({type(exc).__name__})") from exc

    def _renew(self, rejected: str | None) -> str:
        with self._mutex, self._shared_lock(rejected) as locked:
            now = time.time()
            current = self._load()
            if (
                current is not None
                and current.value != rejected
                and (current.fresh(now, self._margin) or (not locked and current.usable(now)))
            ):
                self._local = current
                return current.value
            token = self.obtain(current)
            self._store(token)
            self._local = token
            return token.value

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
                    current is not None and current.value != rejected and current.fresh(time.time(), self._margin)
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
            fields = json.loads(raw)
            return Token(value=fields.pop(self.value_field), **fields)
        except (TypeError, ValueError, KeyError, AttributeError):
            return None

    def _store(self, token: Token) -> None:
        if self._redis is None:
            return
        fields: dict[str, Any] = {
            self.value_field: token.value,
            "expires_at": token.expires_at,
            "lifetime": token.lifetime,
        }
        ends = token.expires_at
        if self.refreshes:
            fields |= {"refresh_token": token.refresh_token, "refresh_expires_at": token.refresh_expires_at}
            ends = max(ends, token.refresh_expires_at or ends)
        ttl_ms = max(1000, int((ends - time.time()) * 1000))
        self._redis_call(lambda: self._redis.set(self._key, json.dumps(fields), px=ttl_ms))

    def _redis_call(self, call: Any) -> Any:
        import redis

        try:
            return call()
        except redis.RedisError as exc:
            raise TransientError(f"{self.provider}: token cache unavailable ({type(exc).__name__})") from exc


def error_body(response: httpx.Response, keys: tuple[str, ...], limit: int) -> str | None:
    """The named fields of a JSON error body, as one short line."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts = [str(body[k])[:limit] for k in keys if body.get(k)]
    return ": ".join(parts) or None
