"""When to try again: backoff with full jitter, a cap and a deadline, and the first poll from history.

Pure functions over a `Policy`, so that the schedule can be property-tested without a database.
The worker builds the Policy from its settings and hands it to the tasks through the Celery config.
"""

from __future__ import annotations

import random
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
    # Contingency: after this many consecutive failed calls the provider is paused for everyone,
    # and one probe goes out per wait (doubling from the base up to the cap) until one succeeds.
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
    sweep_interval_seconds: float = 10.0
    sweep_batch: int = 500
    # Broker countdowns longer than this are never used (Redis visibility_timeout redelivers them).
    max_countdown_seconds: float = 300.0
    # Links: refresh this long before they expire, for documents retrieved within the window.
    links_refresh_before_seconds: float = 24 * 3600.0
    links_refresh_window_seconds: float = 30 * 24 * 3600.0
    archive_dir: str = ".einvoice/archive"

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


def estimated_processing(policy: Policy, size_bytes: int, seconds_per_byte: float | None) -> float:
    """How long the provider should need for a document of this size, from history when there is any."""
    rate = seconds_per_byte if seconds_per_byte is not None else policy.poll_seconds_per_mb / MB
    return policy.poll_base_seconds + rate * size_bytes


def first_poll_delay(policy: Policy, size_bytes: int, seconds_per_byte: float | None) -> float:
    return min(
        policy.poll_cap_seconds,
        max(policy.poll_min_seconds, estimated_processing(policy, size_bytes, seconds_per_byte)),
    )


def next_poll_delay(
    policy: Policy,
    size_bytes: int,
    seconds_per_byte: float | None,
    polls: int,
    rng: random.Random | None = None,
) -> float:
    """After `polls` pending answers: back off from a quarter of the estimate, with jitter and a cap.

    Starting from a fraction of the expected processing time keeps the lag after the document is
    ready small for large documents, while the exponential growth bounds the number of polls for
    documents that take far longer than expected.
    """
    step = max(policy.poll_min_seconds, 0.25 * estimated_processing(policy, size_bytes, seconds_per_byte))
    ceiling = min(policy.poll_cap_seconds, step * policy.poll_factor ** max(0, min(polls - 1, 30)))
    rand = rng or random
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
