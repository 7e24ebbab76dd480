"""The retry schedule of deliveries and the destination rule, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.webhooks import BlockedDestination, DeliveryPolicy, check_destination

T0 = datetime(2026, 11, 29, tzinfo=UTC)


def schedule(policy: DeliveryPolicy, seed: int) -> list[datetime]:
    rng = random.Random(seed)
    times: list[datetime] = []
    now = T0
    attempts = 0
    while True:
        attempts += 1
        nxt = policy.next_attempt(T0, attempts, now, rng)
        if nxt is None:
            return times
        times.append(nxt)
        now = nxt


@given(st.integers(0, 10_000))
def test_retries_back_off_with_jitter_for_about_three_days(seed: int) -> None:
    policy = DeliveryPolicy()
    times = schedule(policy, seed)
    gaps = [(b - a).total_seconds() for a, b in zip([T0, *times], times, strict=False)]
    assert 12 <= len(times) <= 30
    assert timedelta(days=2.5) < times[-1] - T0 <= timedelta(days=3)
    for n, gap in enumerate(gaps, start=1):
        step = min(policy.retry_cap_seconds, policy.retry_base_seconds * 2 ** (n - 1))
        assert step / 2 <= gap <= step


def test_jitter_spreads_deliveries_that_failed_together() -> None:
    firsts = {DeliveryPolicy().next_attempt(T0, 5, T0, random.Random(seed)) for seed in range(50)}
    assert len(firsts) > 40


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http:///nohost",
    ],
)
def test_private_loopback_and_link_local_destinations_are_refused(url: str) -> None:
    with pytest.raises(BlockedDestination):
        check_destination(url, allow_private=False)


def test_private_destinations_pass_only_when_allowed() -> None:
    check_destination("http://127.0.0.1:8000/hook", allow_private=True)
    check_destination("http://8.8.8.8/hook", allow_private=False)
    with pytest.raises(BlockedDestination):
        check_destination("gopher://127.0.0.1/", allow_private=True)
