"""The workflow steps: submit, verify, retrieve, refresh links, and the sweep that dispatches due work.

Each step claims its job with a compare-and-set on the state it expects, calls the provider, and
records the outcome through the store. A step that finds the job in another state, or leased by
another worker, returns without doing anything: every message may be delivered twice.

Only job ids travel through the broker. Waits longer than a few minutes are kept in the database
(`next_attempt_at`) and turned into messages by the sweep, never held as broker countdowns.

A provider that refuses our credentials, or keeps failing, is paused for every worker at once (a row
in `provider_pauses`): steps check the pause before calling and leave their job where it is, and
the sweep stops dispatching that provider's jobs. Credentials refused: until an operator resumes
it. Provider down (contingency): one probe per wait, and the first success lets everything go out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import shared_task

from models import OUTAGE_PAUSE, ErrorInfo, Job, JobState, PauseInfo, Step, utcnow
from providers import get_provider
from providers.base import (
    AuthError,
    DocumentIds,
    PermanentError,
    Provider,
    ProviderError,
    RateLimitedError,
    TransientError,
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


def dispatch(job_id: str, state: JobState, delay: float = 0.0, *, probe: bool = False) -> None:
    """Publish the step for a job in `state`; only the id travels, and never with a long countdown.

    `probe` marks the one message allowed through a provider's outage pause.
    """
    from celery import current_app

    task = STEP_FOR_STATE[state]
    countdown = max(0.0, min(delay, policy().max_countdown_seconds))
    current_app.send_task(
        task,
        args=[job_id],
        kwargs={"probe": True} if probe else None,
        queue=QUEUE_FOR_TASK[task],
        countdown=countdown or None,
    )


def _schedule(delay: float, pol: Policy) -> datetime:
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


# Consecutive failed calls per provider in this process; any answer from the provider resets it.
_failures: dict[str, int] = {}
_failures_lock = threading.Lock()


def _gate(job: Job, state: JobState, probe: bool) -> tuple[bool, PauseInfo | None]:
    """Check the provider's pause before calling it: (may call now, the pause the call goes through).

    A blocked job keeps its state and gets an error event; it stays due, so the sweep sends it
    as soon as the pause ends. A call that goes through an outage pause is its probe.
    """
    st = store()
    pause = st.provider_pause(job.provider)
    if pause is None or not pause.blocks(utcnow(), probe=probe):
        return True, pause
    info = ErrorInfo("paused", f"not sent: provider {job.provider} is paused ({pause.kind}): {pause.reason}")
    st.record_error(job.id, state, info, actor=ACTOR, attempt=job.attempts, next_attempt_at=utcnow())
    _log(job, "not sent: provider paused (%s)", pause.kind, level=logging.WARNING)
    return False, pause


def _provider_answered(provider: str, pause: PauseInfo | None) -> None:
    """The provider answered (even with a refusal): it is up, so any contingency for it ends."""
    with _failures_lock:
        _failures[provider] = 0
    if pause is not None and pause.kind == OUTAGE_PAUSE and store().end_outage(provider):
        log.warning("provider=%s answers again; contingency over, pending jobs go out now", provider)


def _provider_failed(provider: str, pause: PauseInfo | None, exc: ProviderError, pol: Policy) -> None:
    """Count a failed call; enough in a row pause the provider for everyone (contingency)."""
    st = store()
    base = timedelta(seconds=pol.outage_probe_seconds)
    cap = timedelta(seconds=pol.outage_probe_cap_seconds)
    if pause is not None and pause.kind == OUTAGE_PAUSE:
        st.probe_failed(provider, base, cap)  # only a probe gets through an outage pause
        return
    with _failures_lock:
        failures = _failures[provider] = _failures.get(provider, 0) + 1
    if failures < pol.outage_after_failures:
        return
    reason = f"{failures} consecutive failed calls; last: {exc.message}"
    if st.pause_for_outage(provider, reason[:300], utcnow() + base):
        log.error(
            "provider=%s unreachable (%d consecutive failed calls); contingency: calls paused, "
            "one probe every %.0f-%.0fs until it answers",
            provider,
            failures,
            pol.outage_probe_seconds,
            pol.outage_probe_cap_seconds,
        )


def _error_info(exc: ProviderError) -> ErrorInfo:
    return ErrorInfo(error_class=exc.error_class.value, message=str(exc), code=exc.code)


def _handle_error(
    job: Job, state: JobState, exc: ProviderError, attempt: int, pol: Policy, pause: PauseInfo | None
) -> str:
    """Permanent errors fail the job; auth pauses the provider; the rest waits and tries again.

    A transient failure of a submit leaves it unknown whether the provider acted on it, so the
    resend waits at least `resend_after_seconds`: by then the first request has surely finished
    and the provider's idempotency check (or our lookup before a synchronous resend) sees it.
    """
    st = store()
    info = _error_info(exc)
    now = utcnow()
    if isinstance(exc, AuthError):
        return _auth_refused(job, state, exc, attempt)
    if isinstance(exc, TransientError):
        _provider_failed(job.provider, pause, exc, pol)
    elif not isinstance(exc, RateLimitedError):
        _provider_answered(job.provider, pause)
    if isinstance(exc, PermanentError) and state in (JobState.QUEUED, JobState.SUBMITTED):
        st.transition(job.id, state, JobState.FAILED, actor=ACTOR, attempt=attempt, error=info)
        _log(job, "failed: %s", exc.error_class.value, level=logging.WARNING)
        return "failed"
    if isinstance(exc, RateLimitedError):
        delay = max(pol.rate_limited_min_seconds, retry_delay(pol, attempt, exc.retry_after))
    else:
        delay = retry_delay(pol, attempt, exc.retry_after)
    if state is JobState.QUEUED and isinstance(exc, TransientError):
        delay = max(delay, pol.resend_after_seconds)
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
    next_at = _schedule(delay, pol)
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


def _auth_refused(job: Job, state: JobState, exc: AuthError, attempt: int) -> str:
    """Credentials refused: pause the provider for every worker and alert; never retry blindly.

    Some providers lock an account after a few bad logins, so nothing calls the provider again
    until an operator has fixed the credentials and run `einvoice resume PROVIDER`. The job keeps
    its state (with an error event) and goes out after the resume.
    """
    st = store()
    newly = st.pause_for_auth(job.provider, f"credentials refused: {exc}"[:300])
    st.record_error(job.id, state, _error_info(exc), actor=ACTOR, attempt=attempt, next_attempt_at=utcnow())
    log.error(
        "provider=%s refused our credentials (job=%s internal_id=%s: %s); %s until `einvoice resume %s`",
        job.provider,
        job.id,
        job.internal_id,
        exc.message,
        "every call to it is now paused" if newly else "it stays paused",
        job.provider,
    )
    return "auth"


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


def _with_document(job: Job, doc: DocumentIds) -> Job:
    """A detached copy of the job carrying the fiscal ids, so archived files are named by them
    even when they are written before the transition that stores the ids."""
    copy = Job(**{column.key: getattr(job, column.key) for column in Job.__table__.columns})
    for name, value in _document_fields(doc).items():
        setattr(copy, name, value)
    return copy


def _remember(job: Job, saved: archive.Archived) -> None:
    store().record_artifact(
        job.id,
        kind=saved.kind,
        path=str(saved.path),
        sha256=saved.sha256,
        size=saved.size,
        content_type=saved.content_type,
    )


def _archive_files(job: Job, files: Mapping[str, bytes], pol: Policy) -> None:
    for kind, content in files.items():
        _remember(job, archive.write_bytes(Path(pol.archive_dir), job, kind, content))


def _links_next_refresh(job: Job, expires_at: datetime | None, pol: Policy) -> datetime | None:
    """The next refresh, while the document is inside the refresh window; afterwards the archive serves."""
    if expires_at is None:
        return None
    when = expires_at - timedelta(seconds=pol.links_refresh_before_seconds)
    issued = job.issued_at or job.created_at
    if when > issued + timedelta(seconds=pol.links_refresh_window_seconds):
        return None
    return max(when, utcnow())


def _open(
    job_id: str,
    state: JobState,
    lease: timedelta | Callable[[int], timedelta],
    probe: bool,
    *,
    count_attempt: bool = False,
    deadline: bool = False,
) -> tuple[Job | None, PauseInfo | None, str]:
    """Start a step: claim the job, expire it if overdue, and pass the provider's pause.

    Returns (job, pause, "") when the step may call the provider, else (None, None, outcome).
    """
    job = store().claim(job_id, state, lease, count_attempt=count_attempt)
    if job is None:
        return None, None, "skipped"
    if deadline and _expire_if_overdue(job, state):
        return None, None, "expired"
    allowed, pause = _gate(job, state, probe)
    if not allowed:
        return None, None, "paused"
    return job, pause, ""


# ---------------------------------------------------------------------------------------- steps


@shared_task(name=SUBMIT, acks_late=True, ignore_result=True)
def submit(job_id: str, probe: bool = False) -> str:
    pol, st = policy(), store()
    job, pause, outcome = _open(job_id, JobState.QUEUED, pol.lease_for, probe, count_attempt=True, deadline=True)
    if job is None:
        return outcome
    provider = get_provider(job.provider)
    attempt = job.attempts
    try:
        result = provider.submit(st.payload(job.id), job.internal_id, attempt=attempt)
    except ProviderError as exc:
        return _handle_error(job, JobState.QUEUED, exc, attempt, pol, pause)
    _provider_answered(job.provider, pause)
    now = utcnow()
    message = (
        f"provider already had this document; adopted request {result.request_id}"
        if result.adopted
        else f"accepted as request {result.request_id}"
    )
    fields = {"provider_request_id": result.request_id, "adopted": result.adopted, "submitted_at": now}
    if result.issued is not None:
        # Synchronous service: the answer is the finished document.
        return _issue(
            job, JobState.QUEUED, result.issued, result.files, pol, [Step(JobState.SUBMITTED, message, fields)], 0
        )
    delay = first_poll_delay(pol, job.size_bytes, processing_model(job.provider))
    next_at = _schedule(delay, pol)
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


def _issue(
    job: Job,
    from_state: JobState,
    doc: DocumentIds,
    files: Mapping[str, bytes],
    pol: Policy,
    lead: list[Step],
    polls: int,
) -> str:
    """Record an issued document: archive what came inline, then commit every transition at once.

    The files are written first (under the step's lease, idempotently), so a crash leaves either
    the old state, which the step redoes, or the final one; never an `issued` job whose files only
    the lost answer had. With both files inline there is nothing left to retrieve.
    """
    st = store()
    if files:
        _archive_files(_with_document(job, doc), files, pol)
    steps = [
        *lead,
        Step(
            JobState.ISSUED,
            f"issued as {doc.guid or 'document'}",
            {**_document_fields(doc), "issued_at": utcnow(), "polls": polls},
        ),
    ]
    complete = bool(files) and {"xml", "pdf"} <= set(files)
    if complete:
        steps.append(Step(JobState.RETRIEVED, "files received inline and archived"))
    next_at = None if complete else _schedule(0.0, pol)
    if not st.transition_chain(job.id, from_state, steps, actor=ACTOR, next_attempt_at=next_at):
        return "lost-race"
    if complete:
        _log(job, "issued and retrieved inline")
        return "retrieved"
    _log(job, "issued")
    # Retrieve at once in this task rather than through another message: same queue, one task
    # fewer per invoice. If this worker dies here, the job is `issued` and due, and the sweep
    # dispatches the retrieve step.
    return str(retrieve.run(job.id))


@shared_task(name=VERIFY, acks_late=True, ignore_result=True)
def verify(job_id: str, probe: bool = False) -> str:
    pol, st = policy(), store()
    job, pause, outcome = _open(job_id, JobState.SUBMITTED, pol.lease_for(0), probe, deadline=True)
    if job is None:
        return outcome
    provider = get_provider(job.provider)
    assert job.provider_request_id is not None
    try:
        result = provider.verify(job.provider_request_id)
    except ProviderError as exc:
        # `attempts` counts failed calls since the last readable answer, so the backoff grows.
        return _handle_error(job, JobState.SUBMITTED, exc, st.record_attempt(job.id, JobState.SUBMITTED), pol, pause)
    _provider_answered(job.provider, pause)
    polls = job.polls + 1
    if result.status is VerifyStatus.PENDING:
        elapsed = (utcnow() - job.submitted_at).total_seconds() if job.submitted_at else None
        delay = next_poll_delay(pol, job.size_bytes, processing_model(job.provider), polls, elapsed=elapsed)
        if job.deadline_at and at(utcnow(), delay) > job.deadline_at:
            delay = max(0.0, (job.deadline_at - utcnow()).total_seconds())
        next_at = _schedule(delay, pol)
        if st.record_poll(job.id, next_at):
            _publish_if_short(job.id, JobState.SUBMITTED, delay, pol)
        return "pending"
    if result.status is VerifyStatus.FAILED:
        info = ErrorInfo("rejected", result.error_message or "rejected by the provider", result.error_code)
        st.transition(job.id, JobState.SUBMITTED, JobState.FAILED, actor=ACTOR, error=info, fields={"polls": polls})
        _log(job, "rejected by the provider", level=logging.WARNING)
        return "failed"
    return _issue(job, JobState.SUBMITTED, result.document or DocumentIds(), result.files, pol, [], polls)


@shared_task(name=RETRIEVE, acks_late=True, ignore_result=True)
def retrieve(job_id: str, probe: bool = False) -> str:
    pol, st = policy(), store()
    job, pause, outcome = _open(job_id, JobState.ISSUED, pol.lease_for, probe, count_attempt=True)
    if job is None:
        return outcome
    if {"xml", "pdf"} <= {artifact.kind for artifact in st.artifacts(job.id)}:
        # A previous run archived both files and died before recording it: nothing to fetch again.
        st.transition(
            job.id,
            JobState.ISSUED,
            JobState.RETRIEVED,
            actor=ACTOR,
            next_attempt_at=_links_next_refresh(job, job.links_expires_at, pol),
            message="files already archived",
        )
        return "retrieved"
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
        return _handle_error(job, JobState.ISSUED, exc, attempt, pol, pause)
    _provider_answered(job.provider, pause)
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
    for kind, url in links.items():
        _remember(job, archive.download(Path(pol.archive_dir), job, kind, url, provider))


@shared_task(name=REFRESH, acks_late=True, ignore_result=True)
def refresh_links(job_id: str, actor: str = ACTOR, probe: bool = False) -> str:
    """Ask for new links before the old ones expire (each provider call issues fresh ones)."""
    pol, st = policy(), store()
    job, pause, outcome = _open(job_id, JobState.RETRIEVED, pol.lease_for(0), probe)
    if job is None:
        return outcome
    provider = get_provider(job.provider)
    try:
        result = provider.retrieve(job.provider_request_id or job.id)
    except ProviderError as exc:
        return _handle_error(job, JobState.RETRIEVED, exc, st.record_attempt(job.id, JobState.RETRIEVED), pol, pause)
    _provider_answered(job.provider, pause)
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
    """Dispatch every job whose next step is due: polls, retries, lost messages, links to refresh.

    Jobs of paused providers stay where they are; for a provider in outage whose wait is over,
    one due job goes out as the probe.
    """
    pol, st = policy(), store()
    total = 0
    redispatch = timedelta(seconds=pol.redispatch_seconds)
    now = utcnow()
    for pause in st.provider_pauses():
        if pause.kind != OUTAGE_PAUSE or (pause.until is not None and pause.until > now):
            continue
        base = timedelta(seconds=pol.outage_probe_seconds)
        cap = timedelta(seconds=pol.outage_probe_cap_seconds)
        if st.claim_probe(pause.provider, base, cap):
            for job_id, state in st.take_due(limit=1, redispatch_after=redispatch, provider=pause.provider):
                dispatch(job_id, state, probe=True)
                total += 1
    while True:
        due = st.take_due(limit=pol.sweep_batch, redispatch_after=redispatch)
        for job_id, state in due:
            dispatch(job_id, state)
        total += len(due)
        if len(due) < pol.sweep_batch:
            break
    if total:
        log.info("sweep dispatched %d jobs", total)
    return total
