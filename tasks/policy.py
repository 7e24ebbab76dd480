"""When to try again: backoff with full jitter, a cap and a deadline, and the first poll from history.

Pure functions over a `Policy`, so that the schedule can be property-tested without a database.
The worker builds the Policy from its settings and hands it to the tasks through the Celery config.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Policy:
    # Polling: the first poll lands when the document should be ready (size x observed rate);
    # later polls back off exponentially from a fraction of that estimate.
    poll_seconds_per_mb: float = 1.0
    poll_base_seconds: float = 1.0
    # The first poll goes a little before the estimate: a document still pending then is polled
    # again shortly after, and its true ready time is bracketed, which is what sharpens the
    # estimate for the next documents (a first poll that finds it ready says only "before").
    poll_first_share: float = 0.9
    # Later polls wait (poll_growth - 1) x the time already spent: the lag after the document is
    # ready stays under that share of its processing time, whatever the estimate said.
    poll_growth: float = 1.2
    poll_min_seconds: float = 0.5
    poll_factor: float = 2.0
    poll_cap_seconds: float = 300.0
    # Transient errors: full jitter between 0 and base * 2**attempt, capped.
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 300.0
    rate_limited_min_seconds: float = 5.0
    # A submit that failed without a clear answer may still be running at the provider; resending
    # before the provider's own request timeout (IIS: 110 s) could race it on a non-idempotent call.
    resend_after_seconds: float = 120.0
    # Contingency: after this many consecutive failures (documents a call could not take to the
    # provider, those of a batch held back after an unanswered call included) the provider is
    # paused for everyone, and one probe goes out per wait (doubling from the base up to the cap)
    # until one succeeds.
    outage_after_failures: int = 6
    outage_probe_seconds: float = 5.0
    outage_probe_cap_seconds: float = 60.0
    # No final answer from the provider within this long after acceptance: `expired`.
    deadline_seconds: float = 48 * 3600.0
    # Leases: how long a step may hold a job before the sweep assumes its worker died.
    lease_seconds: float = 120.0
    lease_seconds_per_mb: float = 10.0
    # A job handed to the broker is dispatched again by the sweep only after this grace.
    redispatch_seconds: float = 30.0
    # A submit takes up to this many documents at once: its own and other small ones of its provider
    # whose messages are due, so that one claim, one record and one poll message serve them all
    # (1: one by one).
    submit_batch: int = 10
    gather_max_bytes: int = 1024 * 1024
    # A batch's calls to its provider (after the first, which goes alone) run this many at once.
    calls_at_once: int = 4
    sweep_interval_seconds: float = 10.0
    sweep_batch: int = 500
    # Broker countdowns longer than this are never used (Redis visibility_timeout redelivers them).
    max_countdown_seconds: float = 300.0
    # Links: refresh this long before they expire, for documents retrieved within the window.
    links_refresh_before_seconds: float = 24 * 3600.0
    links_refresh_window_seconds: float = 30 * 24 * 3600.0
    archive_dir: str = ".einvoice/archive"
    # Documents are kept this long after their job reached a final state, then their bytes are
    # purged (the job, its events and the payload's sha256 stay).
    payload_retention_days: float = 90.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> Policy:
        if not values:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_mapping(self) -> dict[str, Any]:
        return asdict(self)

    def lease_for(self, size_bytes: int) -> timedelta:
        """Uploading 40 MB takes longer than polling; the lease must outlast the slowest honest step."""
        return timedelta(seconds=self.lease_seconds + self.lease_seconds_per_mb * size_bytes / MB)


def full_jitter(base: float, attempt: int, cap: float, rng: random.Random | None = None) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**attempt)], spreading retry storms."""
    rand = rng or random
    ceiling = min(cap, base * (2 ** max(0, min(attempt, 30))))
    return rand.uniform(0, ceiling)


@dataclass(frozen=True)
class ProcessingModel:
    """How long the provider takes, learnt from past documents: `base_seconds + seconds_per_byte * size`."""

    base_seconds: float
    seconds_per_byte: float


History = ProcessingModel | float | None
"""What the schedule knows of the provider: a fitted model, a bare rate (seconds per byte, with the
policy's base), or nothing (the policy's prior)."""


def estimated_processing(policy: Policy, size_bytes: int, history: History) -> float:
    """How long the provider should need for a document of this size, from history when there is any."""
    if isinstance(history, ProcessingModel):
        return history.base_seconds + history.seconds_per_byte * size_bytes
    rate = history if history is not None else policy.poll_seconds_per_mb / MB
    return policy.poll_base_seconds + rate * size_bytes


def fit_processing(samples: Sequence[tuple[int, float | None, float]], policy: Policy) -> ProcessingModel | None:
    """Fit `base + rate * size` to past documents given as (size, lower, upper) seconds.

    The provider finished each document after `lower` (our last poll that found it pending, None
    if the first poll already found it done) and before `upper` (the poll that saw it done). Where
    both are known the midpoint is used; bounds from above only are used when too few documents
    were bracketed, and they can only pull the estimate down (the first poll aims a little early),
    so an estimate that is too high shrinks geometrically until polls start bracketing again.
    Weighted least squares over the sizes when they vary enough, else the policy's base and the
    median rate.
    """
    bracketed = [(size, (low + high) / 2, high - low) for size, low, high in samples if low is not None]
    points = bracketed if len(bracketed) >= 3 else [(size, high, high) for size, _, high in samples]
    # A midpoint is as uncertain as its bracket is wide: weigh each document by 1 / width^2, so the
    # tight brackets of well-scheduled documents outweigh the wide ones of the first, blind polls.
    weighted = [(size, mid, 1.0 / max(width, 0.05) ** 2) for size, mid, width in points if size > 0 and mid >= 0]
    if not weighted:
        return None
    total = sum(w for _, _, w in weighted)
    mean_size = sum(w * size for size, _, w in weighted) / total
    mean_seconds = sum(w * mid for _, mid, w in weighted) / total
    spread = sum(w * (size - mean_size) ** 2 for size, _, w in weighted)
    if len(weighted) >= 3 and spread > 0 and (spread / total) ** 0.5 > 0.1 * mean_size:
        rate = sum(w * (size - mean_size) * (mid - mean_seconds) for size, mid, w in weighted) / spread
        if rate > 0:
            base = mean_seconds - rate * mean_size
            if base >= 0:
                return ProcessingModel(base, rate)
            # A negative intercept means noise: keep the line through the origin instead.
            rate = sum(w * size * mid for size, mid, w in weighted) / sum(w * size * size for size, _, w in weighted)
            return ProcessingModel(0.0, rate)
    base = min(policy.poll_base_seconds, min(mid for _, mid, _ in weighted))
    rates = sorted(max(0.0, mid - base) / size for size, mid, _ in weighted)
    return ProcessingModel(base, rates[len(rates) // 2])


def first_poll_delay(policy: Policy, size_bytes: int, history: History) -> float:
    return min(
        policy.poll_cap_seconds,
        max(policy.poll_min_seconds, policy.poll_first_share * estimated_processing(policy, size_bytes, history)),
    )


def next_poll_delay(
    policy: Policy,
    size_bytes: int,
    history: History,
    polls: int,
    rng: random.Random | None = None,
    *,
    elapsed: float | None = None,
) -> float:
    """After `polls` pending answers, how long until the next poll (jittered, capped).

    Given `elapsed`, the time since the provider accepted the document, the next poll waits a share
    of it: between 75% and 100% of `(poll_growth - 1) * elapsed`. Poll times then grow
    geometrically, so a document is seen at most that share of its processing time after it was
    ready however wrong the estimate was, and a wrong estimate costs a few polls (log of the error
    in base `poll_growth`), not a long lag. A learnt `history` that expects the document much later
    moves the next poll up to just before that. Without `elapsed`, backoff from a quarter of the
    estimate, doubling per poll.
    """
    rand = rng or random
    if elapsed is not None:
        ceiling = min(policy.poll_cap_seconds, max(0.0, elapsed) * (policy.poll_growth - 1.0))
        step = max(policy.poll_min_seconds, rand.uniform(0.75 * ceiling, ceiling))
        if history is not None:
            # History learnt since the first poll (or since the last) may say the document needs
            # much longer: skip the polls that would surely find it pending.
            ahead = policy.poll_first_share * estimated_processing(policy, size_bytes, history) - elapsed
            step = max(step, min(ahead, policy.poll_cap_seconds))
        return step
    step = max(policy.poll_min_seconds, 0.25 * estimated_processing(policy, size_bytes, history))
    ceiling = min(policy.poll_cap_seconds, step * policy.poll_factor ** max(0, min(polls - 1, 30)))
    return max(policy.poll_min_seconds, rand.uniform(ceiling / 2, ceiling))


def retry_delay(
    policy: Policy, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    delay = full_jitter(policy.retry_base_seconds, attempt, policy.retry_cap_seconds, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def at(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
