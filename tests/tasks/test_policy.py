"""Backoff and poll scheduling: bounded, jittered, and growing."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tasks.policy import MB, Policy, first_poll_delay, full_jitter, next_poll_delay, retry_delay

POLICY = Policy()


@given(
    base=st.floats(0.01, 100),
    attempt=st.integers(-5, 10_000),
    cap=st.floats(0.01, 10_000),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_between_zero_and_the_capped_exponential(
    base: float, attempt: int, cap: float, seed: int
) -> None:
    delay = full_jitter(base, attempt, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2 ** max(0, min(attempt, 30)))


@given(attempt=st.integers(0, 1000), retry_after=st.one_of(st.none(), st.floats(0, 3600)), seed=st.integers(0, 99))
def test_retry_delay_honours_retry_after_and_cap(attempt: int, retry_after: float | None, seed: int) -> None:
    delay = retry_delay(POLICY, attempt, retry_after, random.Random(seed))
    assert delay <= max(POLICY.retry_cap_seconds, retry_after or 0)
    if retry_after is not None:
        assert delay >= retry_after


@given(size=st.integers(0, 40 * MB), rate=st.one_of(st.none(), st.floats(0, 1e-5)))
def test_first_poll_is_bounded(size: int, rate: float | None) -> None:
    delay = first_poll_delay(POLICY, size, rate)
    assert POLICY.poll_min_seconds <= delay <= POLICY.poll_cap_seconds


def test_first_poll_grows_with_size_and_uses_history() -> None:
    assert first_poll_delay(POLICY, 4 * MB, None) > first_poll_delay(POLICY, 1 * MB, None)
    slow = first_poll_delay(POLICY, 2 * MB, 5.0 / MB)
    fast = first_poll_delay(POLICY, 2 * MB, 0.1 / MB)
    assert slow > fast


@given(polls=st.integers(1, 500), size=st.integers(0, 40 * MB), seed=st.integers(0, 99))
def test_next_poll_is_bounded(polls: int, size: int, seed: int) -> None:
    delay = next_poll_delay(POLICY, size, None, polls, random.Random(seed))
    assert POLICY.poll_min_seconds <= delay <= POLICY.poll_cap_seconds


def test_next_poll_grows_until_the_cap() -> None:
    rng = random.Random(1)
    means = [sum(next_poll_delay(POLICY, 4 * MB, None, n, rng) for _ in range(200)) / 200 for n in range(1, 12)]
    assert means[0] < means[3] < means[6]
    assert means[-1] <= POLICY.poll_cap_seconds
