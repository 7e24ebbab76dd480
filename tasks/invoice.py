"""The invoice's steps: submit, verify (batched), retrieve, refresh links.

Each step calls its provider and concludes with an outcome; it never writes to the database.
Files are archived before the outcome is recorded (idempotently, under the step's lease), so a
crash leaves either the old state, which the step redoes, or the new one with its files; never a
job whose files only a lost answer had.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from models import ArtifactRecord, Claimed, ErrorInfo, Job, JobState, Note, Step
from models.steps import POLL_EVENT
from providers.base import (
    DocumentIds,
    ProviderError,
    RetrieveResult,
    TransientError,
    VerifyResult,
    VerifyStatus,
    unanswered,
)
from tasks import archive
from tasks.outcomes import Crashed, Errored, Moved, Outcome, Stayed
from tasks.policy import first_poll_delay, next_poll_delay, retry_delay
from tasks.workflow import StepContext, one_by_one, side_by_side

log = logging.getLogger("einvoice.tasks")

BOTH_FILES = frozenset({"xml", "pdf"})


def document_fields(doc: DocumentIds) -> dict[str, Any]:
    return {
        "doc_guid": doc.guid,
        "doc_year": doc.year,
        "doc_batch": doc.batch,
        "doc_serial": doc.serial,
        "doc_fiscal_id": doc.fiscal,
        "doc_extra": dict(doc.extra) or None,
    }


def _with_document(job: Job, doc: DocumentIds) -> Job:
    """A detached copy of the job carrying the fiscal ids, so archived files are named by them
    even when they are written before the transition that stores the ids."""
    copy = Job(**{column.key: getattr(job, column.key) for column in Job.__table__.columns})
    for name, value in document_fields(doc).items():
        setattr(copy, name, value)
    return copy


def _record(saved: archive.Archived) -> ArtifactRecord:
    return ArtifactRecord(saved.kind, str(saved.path), saved.sha256, saved.size, saved.content_type)


def _archive_files(ctx: StepContext, job: Job, files: Mapping[str, bytes]) -> tuple[ArtifactRecord, ...]:
    return tuple(
        _record(archive.write_bytes(ctx.services.archive_dir, job, kind, data)) for kind, data in files.items()
    )


def _links_next_refresh(ctx: StepContext, job: Job, expires_at: datetime | None) -> float | None:
    """Seconds to the next refresh while the document is inside the refresh window; afterwards the
    archive serves the files and nothing is scheduled."""
    if expires_at is None:
        return None
    pol = ctx.policy
    when = expires_at - timedelta(seconds=pol.links_refresh_before_seconds)
    issued = job.issued_at or ctx.now
    if when > issued + timedelta(seconds=pol.links_refresh_window_seconds):
        return None
    return max(0.0, (when - ctx.now).total_seconds())


def _link_fields(ctx: StepContext, result: RetrieveResult) -> dict[str, Any]:
    return {
        "xml_url": result.links.get("xml"),
        "pdf_url": result.links.get("pdf"),
        "links_expires_at": result.expires_at,
        "links_refreshed_at": ctx.now,
    }


def _fetch(ctx: StepContext, job: Job) -> tuple[RetrieveResult, tuple[ArtifactRecord, ...]]:
    """Ask for the links and archive the files they point at (and any sent inline)."""
    provider = ctx.provider(job.provider)
    result = provider.retrieve(job.provider_request_id or job.id)
    root = ctx.services.archive_dir
    saved = [archive.download(root, job, kind, url, provider) for kind, url in result.links.items()]
    saved += [archive.write_bytes(root, job, kind, data) for kind, data in result.files.items()]
    return result, tuple(_record(s) for s in saved)


def _retrieved(ctx: StepContext, job: Job, result: RetrieveResult, artifacts: tuple[ArtifactRecord, ...]) -> Step:
    expiry = result.expires_at.isoformat() if result.expires_at else "none"
    return Step(JobState.RETRIEVED, f"files archived; links expire at {expiry}", _link_fields(ctx, result))


class FetchGate:
    """Shared by the fetches of one poll batch, which run side by side: the first goes alone, and
    once one gets no answer at all the provider looks down, so the fetches not started yet are
    not sent into the outage (their retrieve step tries again later)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first_done = threading.Event()
        self._first_taken = False
        self._shut: ProviderError | None = None

    @contextlib.contextmanager
    def passage(self) -> Iterator[None]:
        with self._lock:
            first, self._first_taken = not self._first_taken, True
        if not first:
            self._first_done.wait()
        if self._shut is not None:
            raise self._shut
        try:
            yield
        except ProviderError as exc:
            if unanswered(exc):
                self._shut = exc
            raise
        finally:
            if first:
                self._first_done.set()


def _poll_due(ctx: StepContext, polls: int) -> datetime | None:
    """When the poll that saw the document issued was due, if a poll saw it and that is known."""
    if not polls or ctx.due_at is None:
        return None
    return min(ctx.now, ctx.due_at)


def _issue(
    ctx: StepContext,
    job: Job,
    doc: DocumentIds,
    files: Mapping[str, bytes],
    lead: list[Step],
    polls: int,
    gate: FetchGate | None = None,
) -> Outcome:
    """An issued document: archive what came inline, fetch the rest now, and move in one record.

    Retrieving in the step that saw the document issued saves a message, a claim and a record per
    invoice. If the fetch fails (or `gate` holds it back), the job still moves to `issued` with its
    fiscal ids, and the retrieve step takes over on the usual backoff.
    """
    named = _with_document(job, doc)
    artifacts = _archive_files(ctx, named, files)
    observations = doc.extra.get("observations")
    issued = Step(
        JobState.ISSUED,
        f"issued as {doc.fiscal or 'document'}" + (f"; observations: {observations}" if observations else ""),
        {**document_fields(doc), "issued_at": ctx.now, "polls": polls, "poll_due_at": _poll_due(ctx, polls)},
    )
    steps = [*lead, issued]
    if set(files) >= BOTH_FILES or (files and ctx.provider(job.provider).retrieve_in_verify):
        steps.append(Step(JobState.RETRIEVED, "files received inline and archived"))
        return Moved(tuple(steps), next_in=None, artifacts=artifacts)
    try:
        with gate.passage() if gate is not None else contextlib.nullcontext():
            result, fetched = _fetch(ctx, named)
    except ProviderError as exc:
        message = f"{issued.message}; files not retrieved yet: {exc}"
        steps[-1] = Step(JobState.ISSUED, message, issued.fields)
        # A fetch that got no answer says the provider is down now, whatever the poll before it
        # said: this outcome must not close the breaker that other steps are opening.
        delay = retry_delay(ctx.policy, 1, exc.retry_after)
        return Moved(tuple(steps), next_in=delay, artifacts=artifacts, answered=not unanswered(exc))
    steps.append(_retrieved(ctx, named, result, fetched))
    return Moved(
        tuple(steps), next_in=_links_next_refresh(ctx, named, result.expires_at), artifacts=artifacts + fetched
    )


@one_by_one
def submit(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Send the document with the provider's own idempotency key; adopt a duplicate answer."""
    job = claimed.job
    if claimed.payload is None:
        return Crashed(LookupError(f"no payload stored for job {job.id}"))
    provider = ctx.provider(job.provider)
    result = provider.submit(claimed.payload, job.internal_id, attempt=job.attempts)
    message = (
        f"provider already had this document; adopted request {result.request_id}"
        if result.adopted
        else f"accepted as request {result.request_id}"
    )
    fields = {"provider_request_id": result.request_id, "adopted": result.adopted, "submitted_at": ctx.now}
    submitted = Step(JobState.SUBMITTED, message, fields)
    if result.issued is not None:
        # Synchronous service: the answer is the finished document.
        return _issue(ctx, job, result.issued, result.files, [submitted], 0)
    delay = first_poll_delay(ctx.policy, job.size_bytes, ctx.processing_model(job.provider))
    return Moved((submitted,), next_in=delay)


def verify(ctx: StepContext, jobs: Sequence[Claimed]) -> dict[str, Outcome]:
    """Ask for the status of a batch of one provider's documents in as few calls as it allows."""
    by_provider: dict[str, list[Claimed]] = {}
    for claimed in jobs:
        by_provider.setdefault(claimed.job.provider, []).append(claimed)
    outcomes: dict[str, Outcome] = {}
    for name, group in by_provider.items():
        provider = ctx.provider(name)
        ids = [c.job.provider_request_id or c.job.id for c in group]
        try:
            answers = provider.verify_many(ids)
        except ProviderError as exc:
            outcomes.update({c.job.id: Errored(exc) for c in group})
            continue
        # An issued document's files are fetched here, side by side (see `FetchGate`).
        pairs = [(claimed, answers.get(request_id)) for claimed, request_id in zip(group, ids, strict=True)]
        conclude = functools.partial(_conclude_verify, ctx, FetchGate())
        concluded = side_by_side(conclude, pairs, ctx.policy.calls_at_once)
        outcomes.update((claimed.job.id, outcome) for (claimed, _), outcome in zip(pairs, concluded, strict=True))
    return outcomes


def _conclude_verify(
    ctx: StepContext, gate: FetchGate, pair: tuple[Claimed, VerifyResult | ProviderError | None]
) -> Outcome:
    claimed, answer = pair
    if answer is None:
        return Errored(TransientError("the status answer left this document out"))
    if isinstance(answer, ProviderError):
        return Errored(answer)
    try:
        return _verified(ctx, claimed.job, answer, gate)
    except ProviderError as exc:
        return Errored(exc)
    except Exception as exc:
        return Crashed(exc)


def _verified(ctx: StepContext, job: Job, answer: Any, gate: FetchGate) -> Outcome:
    polls = job.polls + 1
    if answer.status is VerifyStatus.PENDING:
        elapsed = (ctx.now - job.submitted_at).total_seconds() if job.submitted_at else None
        model = ctx.processing_model(job.provider)
        delay = next_poll_delay(ctx.policy, job.size_bytes, model, polls, elapsed=elapsed)
        if job.deadline_at is not None:
            delay = min(delay, max(0.0, (job.deadline_at - ctx.now).total_seconds()))
        note = Note(POLL_EVENT, f"still processing; next poll in {delay:.1f}s")
        return Stayed(note, next_in=delay, fields={"polls": polls, "attempts": 0})
    if answer.status is VerifyStatus.FAILED:
        error = ErrorInfo("rejected", answer.error_message or "rejected by the provider", answer.error_code)
        return Moved((Step(JobState.FAILED, error.message, {"polls": polls}, error=error),))
    return _issue(ctx, job, answer.document or DocumentIds(), answer.files, [], polls, gate)


@one_by_one
def retrieve(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Fetch links and files of an issued document (when the verify that saw it issued could not)."""
    job = claimed.job
    kept = {a.kind for a in ctx.services.store.jobs.artifacts(job.id)}
    if kept >= BOTH_FILES:
        # A previous run archived both files and died before recording it: nothing to fetch again.
        return Moved((Step(JobState.RETRIEVED, "files already archived"),), answered=False)
    result, artifacts = _fetch(ctx, job)
    step = _retrieved(ctx, job, result, artifacts)
    return Moved((step,), next_in=_links_next_refresh(ctx, job, result.expires_at), artifacts=artifacts)


@one_by_one
def refresh_links(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Ask for new links before the old ones expire (each provider call issues fresh ones)."""
    job = claimed.job
    result = ctx.provider(job.provider).retrieve(job.provider_request_id or job.id)
    expiry = result.expires_at.isoformat() if result.expires_at else "unknown"
    note = Note("links", f"links refreshed ({', '.join(sorted(result.links))}); expire at {expiry}")
    return Stayed(note, next_in=_links_next_refresh(ctx, job, result.expires_at), fields=_link_fields(ctx, result))
