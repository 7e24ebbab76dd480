"""The doorbell kept in Redis, against a real Redis: what the producers and the workers share."""

from __future__ import annotations

import time

from tasks.doorbell import AlwaysRing, RedisDoorbell, for_broker


def test_one_ring_sends_until_the_bell_is_answered(redis_url: str) -> None:
    bell = RedisDoorbell.from_url(redis_url, ttl_seconds=30)
    assert bell.ring("einvoice.submit", "mysuite") is True
    assert bell.ring("einvoice.submit", "mysuite") is False, "a wake-up is pending"
    assert bell.ring("einvoice.submit", "hacienda") is True, "each provider has its own bell"
    bell.answer("einvoice.submit", "mysuite")
    assert bell.ring("einvoice.submit", "mysuite") is True


def test_a_bell_whose_wake_up_was_lost_stops_muting_after_its_ttl(redis_url: str) -> None:
    bell = RedisDoorbell.from_url(redis_url, ttl_seconds=0.2)
    assert bell.ring("einvoice.submit", "ttl") is True
    assert bell.ring("einvoice.submit", "ttl") is False
    time.sleep(0.3)
    assert bell.ring("einvoice.submit", "ttl") is True


def test_without_redis_every_ring_sends() -> None:
    down = RedisDoorbell.from_url("redis://127.0.0.1:1/0", ttl_seconds=30)
    assert down.ring("einvoice.submit", "mysuite") is True
    assert down.ring("einvoice.submit", "mysuite") is True
    down.answer("einvoice.submit", "mysuite")  # logged, not raised


def test_only_a_redis_broker_keeps_bells(redis_url: str) -> None:
    assert isinstance(for_broker(redis_url, 30), RedisDoorbell)
    assert isinstance(for_broker("filesystem://", 30), AlwaysRing)
    assert isinstance(for_broker("amqp://guest@127.0.0.1//", 30), AlwaysRing)
