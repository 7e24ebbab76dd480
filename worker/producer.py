"""The producer API used by ERPs: validate, store, then publish the job id.

The job row and its payload are committed in one transaction before anything is published, and
only the job id travels through the broker (claim check), so a lost message loses nothing: the sweep
re-dispatches the job from the database.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from models import Job, JobState, Store
from providers import get_provider, provider_names
from providers.base import InvalidPayload
from tasks.pipeline import dispatch
from tasks.policy import Policy
from worker.app import app as _app  # noqa: F401  (makes our app current for dispatch)

log = logging.getLogger("einvoice.producer")

# After a failed publish, skip publishing for this long: each attempt against a dead broker costs
# its retries (about half a second), and the jobs are safe in the database, where the sweep finds
# them once the grace has passed. A batch of thousands must not crawl while Redis is down.
PUBLISH_BACKOFF_SECONDS = 5.0
_publish_lock = threading.Lock()
_publish_skip_until = 0.0

MAX_INTERNAL_ID = 50
# Hard ceiling on what is accepted at all: the largest document any provider takes (MYSuite
# production, 40 MB) plus a little room for encodings. Larger input is refused, not stored.
MAX_PAYLOAD_BYTES = 40 * 1024 * 1024


class InvalidInput(ValueError):
    """Input refused before a job could exist (no usable key, or too large to keep)."""


@dataclass(frozen=True)
class Enqueued:
    job: Job
    created: bool

    @property
    def state(self) -> str:
        return self.job.state


def check_internal_id(internal_id: str) -> str:
    """The ERP's id is the provider's idempotency key (MYSuite Data2): 1 to 50 printable characters."""
    if not isinstance(internal_id, str) or not internal_id.strip():
        raise InvalidInput("internal id is empty")
    if len(internal_id) > MAX_INTERNAL_ID:
        raise InvalidInput(f"internal id is {len(internal_id)} characters; the limit is {MAX_INTERNAL_ID}")
    # Cs: a lone surrogate cannot even be stored (no encoding has it); Cf: invisible format
    # characters (bidi overrides) that make two ids look alike.
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in internal_id):
        raise InvalidInput("internal id contains control characters")
    if internal_id != internal_id.strip():
        raise InvalidInput("internal id has leading or trailing spaces")
    return internal_id


def enqueue(
    store: Store,
    payload: bytes,
    internal_id: str,
    *,
    provider: str = "mysuite",
    policy: Policy | None = None,
    actor: str = "producer",
    publish: bool = True,
) -> Enqueued:
    """Accept one document. The same (provider, entity, internal id) again returns the existing job.

    Raises InvalidInput when there is nothing to key a job on or the payload is too large to keep;
    a document that is merely wrong (not XML, DOCTYPE, wrong root...) becomes an `invalid` job so
    that the ERP can see why, and is never sent.
    """
    pol = policy or Policy()
    if provider not in provider_names():
        raise InvalidInput(f"unknown provider {provider!r}; known: {', '.join(provider_names())}")
    check_internal_id(internal_id)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidInput(
            f"document is {len(payload):,} bytes; the largest accepted is {MAX_PAYLOAD_BYTES:,} bytes (40 MB)"
        )
    client = get_provider(provider)
    reason: str | None = None
    try:
        client.validate(payload, internal_id)
    except InvalidPayload as exc:
        reason = exc.message
    job, created = store.jobs.create_job(
        provider=provider,
        entity=client.entity,
        internal_id=internal_id,
        payload=None if reason else payload,
        actor=actor,
        deadline=timedelta(seconds=pol.deadline_seconds),
        dispatch_grace=timedelta(seconds=pol.redispatch_seconds),
        invalid_reason=reason,
    )
    if created and publish and job.state == JobState.QUEUED:
        _publish(job, internal_id)
    log.info(
        "job=%s internal_id=%s provider=%s %s as %s",
        job.id,
        internal_id,
        provider,
        "accepted" if created else "already known",
        job.state,
    )
    return Enqueued(job, created)


def _publish(job: Job, internal_id: str) -> None:
    global _publish_skip_until
    with _publish_lock:
        skipping = time.monotonic() < _publish_skip_until
    if skipping:
        log.info("job=%s internal_id=%s not published (broker down); the sweep will pick it up", job.id, internal_id)
        return
    try:
        dispatch(job.id, JobState.QUEUED)
    except Exception as exc:  # the sweep will dispatch it from the database
        with _publish_lock:
            _publish_skip_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
        log.warning(
            "job=%s internal_id=%s publish failed (%s); the sweep will pick it up",
            job.id,
            internal_id,
            type(exc).__name__,
        )
