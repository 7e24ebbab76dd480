"""The processing-time model the first poll is scheduled from, fitted from bracketed history."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tasks.policy import (
    MB,
    Policy,
    ProcessingModel,
    estimated_processing,
    first_poll_delay,
    fit_processing,
    next_poll_delay,
)

POLICY = Policy()


def bracket(size: int, true_seconds: float, rng: random.Random) -> tuple[int, float | None, float]:
    """What polls would have seen: pending a little before, done a little after."""
    return size, true_seconds * rng.uniform(0.85, 0.99), true_seconds * rng.uniform(1.01, 1.15)


def test_fit_recovers_base_and_rate_from_brackets() -> None:
    rng = random.Random(3)
    samples = [bracket(size, 4.0 + 0.5 * size / MB, rng) for size in (rng.randint(1, 40) * MB for _ in range(40))]
    model = fit_processing(samples, POLICY)
    assert model is not None
    assert abs(model.seconds_per_byte * MB - 0.5) < 0.05
    assert abs(model.base_seconds - 4.0) < 1.0
    assert abs(estimated_processing(POLICY, 30 * MB, model) - 19.0) < 1.0


def test_unbracketed_history_only_pulls_the_estimate_down() -> None:
    # Every first poll found the document done: the truth is below, and the next estimate is lower.
    samples = [(size * MB, None, 2.0 * size) for size in range(1, 20)]
    model = fit_processing(samples, POLICY)
    assert model is not None
    assert estimated_processing(POLICY, 10 * MB, model) <= 20.0 + 1e-9


def test_no_history_means_no_model() -> None:
    assert fit_processing([], POLICY) is None
    assert fit_processing([(0, None, 3.0)], POLICY) is None


@given(
    st.lists(
        st.tuples(st.integers(1, 40 * MB), st.one_of(st.none(), st.floats(0, 100)), st.floats(0, 200)),
        max_size=60,
    )
)
def test_model_is_never_negative_and_first_poll_stays_bounded(samples: list[tuple[int, float | None, float]]) -> None:
    model = fit_processing(samples, POLICY)
    if model is not None:
        assert model.base_seconds >= 0 and model.seconds_per_byte >= 0
    for size in (0, MB, 40 * MB):
        delay = first_poll_delay(POLICY, size, model)
        assert POLICY.poll_min_seconds <= delay <= POLICY.poll_cap_seconds


def test_first_poll_aims_a_little_before_the_estimate() -> None:
    model = ProcessingModel(1.0, 1.0 / MB)
    assert first_poll_delay(POLICY, 20 * MB, model) == POLICY.poll_first_share * 21.0


@given(elapsed=st.floats(0, 48 * 3600), polls=st.integers(1, 500), seed=st.integers(0, 99))
def test_later_polls_wait_a_bounded_share_of_the_time_spent(elapsed: float, polls: int, seed: int) -> None:
    delay = next_poll_delay(POLICY, MB, None, polls, random.Random(seed), elapsed=elapsed)
    assert POLICY.poll_min_seconds <= delay <= POLICY.poll_cap_seconds
    assert delay <= max(POLICY.poll_min_seconds, (POLICY.poll_growth - 1) * elapsed)


def test_polls_every_share_of_elapsed_time_keep_the_lag_under_that_share() -> None:
    rng = random.Random(5)
    first = first_poll_delay(POLICY, 40 * MB, ProcessingModel(1.0, 0.1 / MB))  # estimate far too low
    for true_seconds in (first + 0.1, 17.0, 41.0, 200.0):
        t, polls = first, 1
        while t < true_seconds:
            t += next_poll_delay(POLICY, 40 * MB, None, polls, rng, elapsed=t)
            polls += 1
        assert t - true_seconds <= max(POLICY.poll_min_seconds, (POLICY.poll_growth - 1) * true_seconds)
        assert polls < 40


def test_learnt_history_moves_the_next_poll_up_to_the_new_estimate() -> None:
    blind = next_poll_delay(POLICY, 20 * MB, None, 1, random.Random(1), elapsed=5.0)
    informed = next_poll_delay(POLICY, 20 * MB, ProcessingModel(1.0, 1.0 / MB), 1, random.Random(1), elapsed=5.0)
    assert blind <= 1.0
    assert informed == POLICY.poll_first_share * 21.0 - 5.0
