"""HTTP plumbing the clients share: a connection pool that survives forks, capped reads, setup.

One client is shared by every thread of a process, and httpx's pool is thread-safe. After a fork
(Celery prefork) the child must not touch the pool it inherited, whose sockets the parent still
uses, so an `os.register_at_fork` hook makes each live pool open a fresh client in the child on
first use; the inherited one is dropped without being closed. `close()` releases the client; the
pool opens another if it is used again.

`Wire` is the client of the hot path (MYSuite: five requests per invoice). It sends through
httpx's transport directly, so a request skips the `httpx.Client` layers it never uses (cookies,
auth, redirects, event hooks): a third of a request's CPU in `bench/`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

import httpx

from providers.base import TransientError

_live_pools: weakref.WeakSet[ForkSafePool[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool.forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ForkSafePool(Generic[C]):
    """An HTTP client (`httpx.Client` or `Wire`) opened on first use in each process."""

    def __init__(self, factory: Callable[[], C]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._http: C | None = None
        _live_pools.add(self)

    def client(self) -> C:
        with self._lock:
            if self._http is None:
                self._http = self._factory()
            return self._http

    def forget_inherited(self) -> None:
        self._lock = threading.Lock()  # another thread may have held the parent's lock at fork time
        self._http = None

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()


class Wire:
    """Keep-alive connections and httpx's requests, responses and errors, without `httpx.Client`.

    Redirects are the caller's to follow (`providers.links.open_link` checks every target), and no
    provider of ours sets cookies that matter.
    """

    HEADERS = {"User-Agent": "einvoice-worker", "Accept-Encoding": "gzip, deflate"}

    def __init__(self, max_connections: int) -> None:
        self._transport = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        )

    @contextmanager
    def stream(
        self,
        method: str,
        url: str | httpx.URL,
        timeout: httpx.Timeout,
        *,
        content: Iterator[bytes] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send, and hand out the response with its body still to read; it is closed on leaving."""
        request = httpx.Request(
            method,
            url,
            content=content,
            headers={**self.HEADERS, **(headers or {})},
            extensions={"timeout": timeout.as_dict()},
        )
        response = self._transport.handle_request(request)
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        self._transport.close()


def timeout(connect: float, read: float) -> httpx.Timeout:
    """Connecting and waiting for a pooled connection share one limit, reading and writing another."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def read_capped(chunks: Iterator[bytes], limit: int, provider: str) -> bytes:
    """The whole answer, or TransientError once it passes `limit` bytes (nothing more is read)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TransientError(f"{provider} answer is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def api_client(connect_timeout: float, read_timeout: float) -> httpx.Client:
    """The JSON APIs' client: one per provider client, kept alive across calls."""
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        headers={"User-Agent": "einvoice-worker"},
    )


def shared_redis(url: str | None) -> Any:
    """The Redis holding the shared token and rate limits, or None to keep both in the process."""
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
