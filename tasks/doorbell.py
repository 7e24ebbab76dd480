"""Wake-ups for a gathering step: one message pending per provider, not one per document.

A gathering step (submit) claims a whole batch of a provider's waiting documents whatever message
wakes it, so with one message per document nine in ten find their job taken, yet each still costs
the broker, the worker pool and a claim statement. A doorbell keeps at most one wake-up pending
per (step, provider):

- whoever accepts a document commits it first, then rings; only a ring that finds no wake-up
  pending sends a message;
- the run of that message answers the bell (clears it) *before* it claims. A document whose ring
  found the bell set was committed before the answer, so the claim sees it;
- a run that comes back with a full batch rings again, so a backlog drains batch after batch, with
  each next batch claimed while the previous one is still calling the provider; a batch the
  breaker holds back rings for none (the sweep rings once the provider is let through).

The bell is a hint, never the record. A lost message or a flushed Redis leaves the documents due
in the database, where the sweep finds them after the redispatch grace.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("einvoice.tasks")

KEY_PREFIX = "einvoice:bell:"


class Doorbell(Protocol):
    def ring(self, step: str, provider: str) -> bool:
        """True when no wake-up is pending: the caller must send one."""
        ...

    def answer(self, step: str, provider: str) -> None:
        """A wake-up is being served: the next ring sends a new one."""
        ...


class AlwaysRing:
    """Every document gets its own message: brokers with no shared store to keep a bell in (the
    embedded filesystem broker, AMQP)."""

    def ring(self, step: str, provider: str) -> bool:
        return True

    def answer(self, step: str, provider: str) -> None:
        return None


class RedisDoorbell:
    """The bell as a Redis key that expires: a wake-up lost with its message stops muting the
    rings after `ttl_seconds`. When Redis fails, ringing sends (a message too many is harmless)."""

    def __init__(self, client: redis.Redis[bytes], ttl_seconds: float) -> None:
        self.client = client
        self.ttl_ms = max(1, int(ttl_seconds * 1000))

    @classmethod
    def from_url(cls, url: str, ttl_seconds: float) -> RedisDoorbell:
        """A client that fails at once rather than retrying: a ring that cannot read the bell sends
        anyway, and the broker's own failure handling takes it from there."""
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        return cls(client, ttl_seconds)

    def ring(self, step: str, provider: str) -> bool:
        try:
            return bool(self.client.set(_key(step, provider), b"1", nx=True, px=self.ttl_ms))
        except redis.RedisError as exc:
            log.warning("doorbell of %s for %s unreadable (%s): sending a wake-up", step, provider, exc)
            return True

    def answer(self, step: str, provider: str) -> None:
        try:
            self.client.delete(_key(step, provider))
        except redis.RedisError as exc:
            # The key expires on its own; until then new documents wait for this run or the sweep.
            log.warning("doorbell of %s for %s not cleared (%s)", step, provider, exc)


def _key(step: str, provider: str) -> str:
    return f"{KEY_PREFIX}{step}:{provider}"


def for_broker(url: str, ttl_seconds: float) -> Doorbell:
    """A Redis broker keeps the bells; any other broker sends a message per document."""
    if url.startswith(("redis://", "rediss://")):
        return RedisDoorbell.from_url(url, ttl_seconds)
    return AlwaysRing()
