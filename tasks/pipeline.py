"""The workflow steps: submit, verify, retrieve, refresh links, and the sweep that dispatches due work.

Each step claims its job with a compare-and-set on the state it expects, calls the provider, and
records the outcome through the store. A step that finds the job in another state, or leased by
another worker, returns without doing anything: every message may be delivered twice.

Only job ids travel through the broker. Waits longer than a few minutes are kept in the database
(`next_attempt_at`) and turned into messages by the sweep, never held as broker countdowns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import shared_task

from models import ErrorInfo, Job, JobState, utcnow
from providers import get_provider
from providers.base import (
    AuthError,
    DocumentIds,
    PermanentError,
    Provider,
    ProviderError,
    RateLimitedError,
    VerifyStatus,
)
from tasks import archive
from tasks.context import policy, processing_model, store
from tasks.policy import Policy, at, first_poll_delay, next_poll_delay, retry_delay

log = logging.getLogger("einvoice.tasks")

ACTOR = "worker"
SUBMIT, VERIFY, RETRIEVE, REFRESH = (
    "einvoice.submit",
    "einvoice.verify",
    "einvoice.retrieve",
    "einvoice.refresh_links",
)
STEP_FOR_STATE = {
    JobState.QUEUED: SUBMIT,
    JobState.SUBMITTED: VERIFY,
    JobState.ISSUED: RETRIEVE,
    JobState.RETRIEVED: REFRESH,
}
QUEUE_FOR_TASK = {SUBMIT: "submit", VERIFY: "poll", RETRIEVE: "poll", REFRESH: "poll"}


def _log(job: Job, message: str, *args: Any, level: int = logging.INFO) -> None:
    log.log(level, "job=%s internal_id=%s provider=%s " + message, job.id, job.internal_id, job.provider, *args)


def dispatch(job_id: str, state: JobState, delay: float = 0.0) -> None:
    """Publish the step for a job in `state`; only the id travels, and never with a long countdown."""
    from celery import current_app

    task = STEP_FOR_STATE[state]
    countdown = max(0.0, min(delay, policy().max_countdown_seconds))
    current_app.send_task(task, args=[job_id], queue=QUEUE_FOR_TASK[task], countdown=countdown or None)


def _schedule(job_id: str, state: JobState, delay: float, pol: Policy) -> datetime:
    """Hand a short wait to the broker and a long one to the sweep; returns the job's next_attempt_at.

    When a message is sent, next_attempt_at is set past its countdown by the redispatch grace, so
    the sweep touches the job only if that message is lost.
    """
    now = utcnow()
    if delay <= pol.max_countdown_seconds:
        return at(now, delay + pol.redispatch_seconds)
    return at(now, delay)


def _publish_if_short(job_id: str, state: JobState, delay: float, pol: Policy) -> None:
    if delay <= pol.max_countdown_seconds:
        dispatch(job_id, state, delay)


def _error_info(exc: ProviderError) -> ErrorInfo:
    return ErrorInfo(error_class=exc.error_class.value, message=str(exc), code=exc.code)


def _handle_error(job: Job, state: JobState, exc: ProviderError, attempt: int, pol: Policy) -> str:
    """Permanent errors fail the job; everything else waits and tries again, until the deadline."""
    st = store()
    info = _error_info(exc)
    now = utcnow()
    if isinstance(exc, PermanentError) and state in (JobState.QUEUED, JobState.SUBMITTED):
        st.transition(job.id, state, JobState.FAILED, actor=ACTOR, attempt=attempt, error=info)
        _log(job, "failed: %s", exc.error_class.value, level=logging.WARNING)
        return "failed"
    if isinstance(exc, AuthError):
        delay = pol.auth_pause_seconds
    elif isinstance(exc, RateLimitedError):
        delay = max(pol.rate_limited_min_seconds, retry_delay(pol, attempt, exc.retry_after))
    else:
        delay = retry_delay(pol, attempt, exc.retry_after)
    if state in (JobState.QUEUED, JobState.SUBMITTED) and job.deadline_at and at(now, delay) > job.deadline_at:
        st.transition(
            job.id,
            state,
            JobState.EXPIRED,
            actor=ACTOR,
            attempt=attempt,
            error=info,
            message=f"no final answer before the deadline; last error: {info.message}",
        )
        return "expired"
    next_at = _schedule(job.id, state, delay, pol)
    if st.record_error(job.id, state, info, actor=ACTOR, attempt=attempt, next_attempt_at=next_at):
        _publish_if_short(job.id, state, delay, pol)
    _log(
        job,
        "%s error on attempt %d; retry in %.1fs",
        exc.error_class.value,
        attempt,
        delay,
        level=logging.WARNING,
    )
    return exc.error_class.value


def _expire_if_overdue(job: Job, state: JobState) -> bool:
    if job.deadline_at is not None and utcnow() > job.deadline_at:
        return store().transition(
            job.id,
            state,
            JobState.EXPIRED,
            actor=ACTOR,
            error=ErrorInfo("deadline", "no final answer before the deadline"),
        )
    return False


def _document_fields(doc: DocumentIds | None) -> dict[str, Any]:
    if doc is None:
        return {}
    return {"doc_guid": doc.guid, "doc_year": doc.year, "doc_batch": doc.batch, "doc_serial": doc.serial}


def _archive_files(job: Job, files: Mapping[str, bytes], pol: Policy) -> None:
    st = store()
    for kind, content in files.items():
        saved = archive.write_bytes(Path(pol.archive_dir), job, kind, content)
        st.record_artifact(
            job.id,
            kind=kind,
            path=str(saved.path),
            sha256=saved.sha256,
            size=saved.size,
            content_type=saved.content_type,
        )


def _links_next_refresh(job: Job, expires_at: datetime | None, pol: Policy) -> datetime | None:
    """The next refresh, while the document is inside the refresh window; afterwards the archive serves."""
    if expires_at is None:
        return None
    when = expires_at - timedelta(seconds=pol.links_refresh_before_seconds)
    issued = job.issued_at or job.created_at
    if when > issued + timedelta(seconds=pol.links_refresh_window_seconds):
        return None
    return max(when, utcnow())


# ---------------------------------------------------------------------------------------- steps


@shared_task(name=SUBMIT, acks_late=True, ignore_result=True)
def submit(job_id: str) -> str:
    pol, st = policy(), store()
    job = st.claim(job_id, JobState.QUEUED, pol.lease_for, count_attempt=True)
    if job is None:
        return "skipped"
    if _expire_if_overdue(job, JobState.QUEUED):
        return "expired"
    provider = get_provider(job.provider)
    attempt = job.attempts
    try:
        result = provider.submit(st.payload(job.id), job.internal_id, attempt=attempt)
    except ProviderError as exc:
        return _handle_error(job, JobState.QUEUED, exc, attempt, pol)
    now = utcnow()
    message = (
        f"provider already had this document; adopted request {result.request_id}"
        if result.adopted
        else f"accepted as request {result.request_id}"
    )
    fields = {"provider_request_id": result.request_id, "adopted": result.adopted, "submitted_at": now}
    if result.issued is not None:
        # Synchronous service: the answer is the finished document.
        if not st.transition(
            job.id,
            JobState.QUEUED,
            JobState.SUBMITTED,
            actor=ACTOR,
            attempt=attempt,
            message=message,
            fields=fields,
        ):
            return "lost-race"
        return _issue(st.get(job.id), result.issued, result.files, pol, polls=0)
    delay = first_poll_delay(pol, job.size_bytes, processing_model(job.provider))
    next_at = _schedule(job.id, JobState.SUBMITTED, delay, pol)
    if not st.transition(
        job.id,
        JobState.QUEUED,
        JobState.SUBMITTED,
        actor=ACTOR,
        attempt=attempt,
        message=message,
        fields=fields,
        next_attempt_at=next_at,
    ):
        return "lost-race"
    _publish_if_short(job.id, JobState.SUBMITTED, delay, pol)
    _log(job, "submitted (adopted=%s); first poll in %.1fs", result.adopted, delay)
    return "submitted"


def _issue(job: Job, doc: DocumentIds, files: Mapping[str, bytes], pol: Policy, polls: int) -> str:
    """submitted -> issued, archive what came inline, then retrieve (or finish when nothing is left)."""
    st = store()
    now = utcnow()
    fields = {**_document_fields(doc), "issued_at": now, "polls": polls}
    next_at = _schedule(job.id, JobState.ISSUED, 0.0, pol)
    if not st.transition(
        job.id,
        JobState.SUBMITTED,
        JobState.ISSUED,
        actor=ACTOR,
        fields=fields,
        next_attempt_at=next_at,
        message=f"issued as {doc.guid or 'document'}",
    ):
        return "lost-race"
    if files:
        job = st.get(job.id)
        _archive_files(job, files, pol)
    if files and {"xml", "pdf"} <= set(files):
        st.transition(
            job.id,
            JobState.ISSUED,
            JobState.RETRIEVED,
            actor=ACTOR,
            message="files received inline and archived",
        )
        _log(job, "issued and retrieved inline")
        return "retrieved"
    _log(job, "issued")
    # Retrieve at once in this task rather than through another message: same queue, one task
    # fewer per invoice. If this worker dies here, the job is `issued` and due, and the sweep
    # dispatches the retrieve step.
    return str(retrieve.run(job.id))


@shared_task(name=VERIFY, acks_late=True, ignore_result=True)
def verify(job_id: str) -> str:
    pol, st = policy(), store()
    job = st.claim(job_id, JobState.SUBMITTED, pol.lease_for(0))
    if job is None:
        return "skipped"
    if _expire_if_overdue(job, JobState.SUBMITTED):
        return "expired"
    provider = get_provider(job.provider)
    assert job.provider_request_id is not None
    try:
        result = provider.verify(job.provider_request_id)
    except ProviderError as exc:
        return _handle_error(job, JobState.SUBMITTED, exc, job.polls + 1, pol)
    polls = job.polls + 1
    if result.status is VerifyStatus.PENDING:
        elapsed = (utcnow() - job.submitted_at).total_seconds() if job.submitted_at else None
        delay = next_poll_delay(pol, job.size_bytes, processing_model(job.provider), polls, elapsed=elapsed)
        if job.deadline_at and at(utcnow(), delay) > job.deadline_at:
            delay = max(0.0, (job.deadline_at - utcnow()).total_seconds())
        next_at = _schedule(job.id, JobState.SUBMITTED, delay, pol)
        if st.record_poll(job.id, next_at):
            _publish_if_short(job.id, JobState.SUBMITTED, delay, pol)
        return "pending"
    if result.status is VerifyStatus.FAILED:
        info = ErrorInfo("rejected", result.error_message or "rejected by the provider", result.error_code)
        st.transition(job.id, JobState.SUBMITTED, JobState.FAILED, actor=ACTOR, error=info, fields={"polls": polls})
        _log(job, "rejected by the provider", level=logging.WARNING)
        return "failed"
    return _issue(job, result.document or DocumentIds(), result.files, pol, polls=polls)


@shared_task(name=RETRIEVE, acks_late=True, ignore_result=True)
def retrieve(job_id: str) -> str:
    pol, st = policy(), store()
    job = st.claim(job_id, JobState.ISSUED, pol.lease_for, count_attempt=True)
    if job is None:
        return "skipped"
    provider = get_provider(job.provider)
    attempt = job.attempts
    try:
        result = provider.retrieve(job.provider_request_id or job.id)
        st.record_links(
            job.id,
            JobState.ISSUED,
            result.links,
            result.expires_at,
            actor=ACTOR,
            next_attempt_at=None,
            refresh=False,
        )
        _archive_links(job, result.links, provider, pol)
        if result.files:
            _archive_files(job, result.files, pol)
    except ProviderError as exc:
        return _handle_error(job, JobState.ISSUED, exc, attempt, pol)
    expiry = result.expires_at.isoformat() if result.expires_at else "none"
    st.transition(
        job.id,
        JobState.ISSUED,
        JobState.RETRIEVED,
        actor=ACTOR,
        attempt=attempt,
        next_attempt_at=_links_next_refresh(job, result.expires_at, pol),
        message=f"files archived; links expire at {expiry}",
    )
    _log(job, "retrieved")
    return "retrieved"


def _archive_links(job: Job, links: Mapping[str, str], provider: Provider, pol: Policy) -> None:
    st = store()
    for kind, url in links.items():
        saved = archive.download(Path(pol.archive_dir), job, kind, url, provider)
        st.record_artifact(
            job.id,
            kind=kind,
            path=str(saved.path),
            sha256=saved.sha256,
            size=saved.size,
            content_type=saved.content_type,
        )


@shared_task(name=REFRESH, acks_late=True, ignore_result=True)
def refresh_links(job_id: str, actor: str = ACTOR) -> str:
    """Ask for new links before the old ones expire (each provider call issues fresh ones)."""
    pol, st = policy(), store()
    job = st.claim(job_id, JobState.RETRIEVED, pol.lease_for(0))
    if job is None:
        return "skipped"
    provider = get_provider(job.provider)
    try:
        result = provider.retrieve(job.provider_request_id or job.id)
    except ProviderError as exc:
        return _handle_error(job, JobState.RETRIEVED, exc, 1, pol)
    st.record_links(
        job.id,
        JobState.RETRIEVED,
        result.links,
        result.expires_at,
        actor=actor,
        next_attempt_at=_links_next_refresh(job, result.expires_at, pol),
        refresh=True,
    )
    _log(job, "links refreshed")
    return "refreshed"


@shared_task(name="einvoice.sweep", ignore_result=True)
def sweep() -> int:
    """Dispatch every job whose next step is due: polls, retries, lost messages, links to refresh."""
    pol, st = policy(), store()
    total = 0
    while True:
        due = st.take_due(limit=pol.sweep_batch, redispatch_after=timedelta(seconds=pol.redispatch_seconds))
        for job_id, state in due:
            dispatch(job_id, state)
        total += len(due)
        if len(due) < pol.sweep_batch:
            break
    if total:
        log.info("sweep dispatched %d jobs", total)
    return total
