"""The shared request budget: one bucket for all processes, a provider-wide pause, the quota kept."""

from __future__ import annotations

import threading
import time
import uuid
from email.utils import formatdate

import pytest

from providers.base import RateLimitedError
from providers.hacienda.samples import sample_comprobante
from providers.ratelimit import DAY, HOUR, Rate, RateLimiter, plan, retry_after_seconds


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["redis", "in-process"])
def limiter_pair(request, redis_url):
    """Two limiters for the same provider: two processes with Redis, one process without."""
    name = _name()
    rates = [Rate(limit=100, period=1000.0, burst=3)]
    if request.param == "redis":
        pair = (RateLimiter(name, redis_url, rates=rates), RateLimiter(name, redis_url, rates=rates))
    else:
        single = RateLimiter(name, None, rates=rates)
        pair = (single, single)
    yield pair
    for limiter in pair:
        limiter.close()


def test_bucket_is_shared_between_limiters(limiter_pair):
    first, second = limiter_pair
    first.acquire()
    second.acquire()
    first.acquire()

    with pytest.raises(RateLimitedError) as caught:
        second.acquire(timeout=0)
    # 97 tokens over 1000 s refill one token in about 10 s.
    assert 5 < (caught.value.retry_after or 0) < 11


def test_limiters_of_other_providers_are_independent(redis_url):
    rates = [Rate(limit=10, period=1000.0, burst=1)]
    one, other = RateLimiter(_name(), redis_url, rates=rates), RateLimiter(_name(), redis_url, rates=rates)
    one.acquire()
    other.acquire()
    with pytest.raises(RateLimitedError):
        one.acquire()


def test_pause_holds_every_limiter_of_the_provider(limiter_pair):
    first, second = limiter_pair
    first.pause(0.3)

    with pytest.raises(RateLimitedError) as caught:
        second.acquire(timeout=0)
    assert 0 < (caught.value.retry_after or 0) <= 0.3

    started = time.monotonic()
    second.acquire(timeout=2)
    assert time.monotonic() - started >= 0.2


def test_a_short_pause_never_shortens_a_longer_one(limiter_pair):
    first, second = limiter_pair
    first.pause(30)
    second.pause(0.1)
    with pytest.raises(RateLimitedError) as caught:
        first.acquire(timeout=0)
    assert (caught.value.retry_after or 0) > 25


def test_pause_applies_without_any_rate_plan(redis_url):
    limiter = RateLimiter(_name(), redis_url)
    assert limiter.rates == ()
    for _ in range(50):
        limiter.acquire()
    limiter.pause(10)
    with pytest.raises(RateLimitedError):
        limiter.acquire()


def test_window_never_grants_more_than_its_limit():
    rate = Rate(limit=5, period=0.5, burst=2)
    limiter = RateLimiter(_name(), None, rates=[rate])
    grants: list[float] = []
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        limiter.acquire(timeout=1)
        grants.append(time.monotonic())
    worst = max(sum(1 for g in grants if start <= g < start + rate.period) for start in grants)
    assert worst <= rate.limit
    assert len(grants) >= 10  # and the budget is really used, not starved


def test_plan_builds_hour_and_day_windows():
    assert plan(0, 0) == []
    hourly, daily = plan(100, 1000)
    assert (hourly.limit, hourly.period, hourly.capacity) == (100, HOUR, 10)
    assert (daily.limit, daily.period, daily.capacity) == (1000, DAY, 100)
    assert plan(100, 1000, burst=500)[0].capacity == 99
    with pytest.raises(ValueError):
        Rate(limit=5, period=1, burst=5)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "42"}, 42.0),
        ({"retry-after": formatdate(1_700_000_030, usegmt=True)}, 30.0),
        ({"x-ratelimit-reset": "1700000090"}, 90.0),
        ({"x-ratelimit-reset": "15"}, 15.0),
        ({"retry-after": "soon", "x-ratelimit-reset": "1700000010"}, 10.0),
        ({"x-ratelimit-reset": "nan?"}, 60.0),
        ({}, 60.0),
    ],
)
def test_retry_after_from_headers(headers, expected):
    assert retry_after_seconds(headers, now=1_700_000_000) == pytest.approx(expected, abs=0.01)


def _run(clients, sequences):
    """Submit documents from several threads, one client each; return the errors raised."""
    errors: list[BaseException] = []

    def work(client, numbers):
        for n in numbers:
            try:
                client.submit(sample_comprobante(n), f"inv-{n}")
            except BaseException as exc:  # collected and asserted by the caller
                errors.append(exc)

    threads = [threading.Thread(target=work, args=args) for args in zip(clients, sequences, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_shared_limiter_keeps_three_clients_under_the_quota(sandbox, make_client, redis_url):
    sandbox.configure(quota_per_hour=10, quota_hour_seconds=2)
    name = _name()
    # One call of headroom below the quota absorbs the delay between a grant and its arrival.
    rates = [Rate(limit=9, period=2.0, burst=1)]
    clients = [
        make_client(redis_url=redis_url, rate_wait=10, limiter=RateLimiter(name, redis_url, rates=rates))
        for _ in range(3)
    ]
    sequences = [range(1, 7), range(7, 13), range(13, 19)]

    errors = _run(clients, sequences)

    assert errors == []
    totals = sandbox.totals()
    assert totals["created"] == 18
    assert totals.get("status_429", 0) == 0


def test_without_the_limiter_the_same_run_trips_the_quota(sandbox, make_client, redis_url):
    sandbox.configure(quota_per_hour=10, quota_hour_seconds=2)
    clients = [make_client(redis_url=redis_url) for _ in range(3)]

    errors = _run(clients, [range(1, 7), range(7, 13), range(13, 19)])

    assert errors and all(isinstance(e, RateLimitedError) for e in errors)
    assert sandbox.totals()["status_429"] >= 1


def test_unreachable_redis_fails_closed():
    from providers.base import TransientError
    from sandbox.server import free_port

    limiter = RateLimiter(_name(), f"redis://127.0.0.1:{free_port()}/0", per_hour=100)
    with pytest.raises(TransientError, match="unavailable"):
        limiter.acquire()
