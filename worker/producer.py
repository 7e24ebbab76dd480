"""The producer API used by ERPs: validate, store, then publish the job id.

The job row and its payload are committed in one transaction before anything is published, and
only the job id travels through the broker (claim check), so a lost message loses nothing: the sweep
re-dispatches the job from the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from models import AddendaState, ChildJob, Job, JobState, Store
from providers import get_provider, provider_names
from providers.base import InvalidPayload, internal_id_problem
from providers.mysuite.descarga import (
    DocumentStatus,
    DownloadQuery,
    Period,
    RequestKind,
    Service,
    TaxIdRole,
    check_query,
)
from providers.mysuite.descarga.records import MEXICO_CITY
from tasks.downloads import Registered
from tasks.downloads import register as register_download
from tasks.pipeline import dispatch
from tasks.policy import Policy
from tasks.services import DescargaService, mysuite_descarga
from worker.app import app as _app  # noqa: F401  (makes our app current for dispatch)

log = logging.getLogger("einvoice.producer")

# After a failed publish, skip publishing for this long: each attempt against a dead broker costs
# its retries (about half a second), and the jobs are safe in the database, where the sweep finds
# them once the grace has passed. A batch of thousands must not crawl while Redis is down.
PUBLISH_BACKOFF_SECONDS = 5.0
_publish_lock = threading.Lock()
_publish_skip_until = 0.0

# Hard ceiling on what is accepted at all: the largest document any provider takes (MYSuite
# production, 40 MB) plus a little room for encodings. Larger input is refused, not stored.
MAX_PAYLOAD_BYTES = 40 * 1024 * 1024


class InvalidInput(ValueError):
    """Input refused: no job is created or changed (no usable key, not bytes, or too large to keep)."""


class ConflictingDocument(InvalidInput):
    """The key already names a job with another document.

    Answering "already known" would drop the new document silently, and the ERP would believe a
    corrected invoice went out when the first one did. Only an invalid job's document may be
    replaced (see `enqueue`).
    """

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


@dataclass(frozen=True)
class Enqueued:
    job: Job
    created: bool
    replaced: bool = False
    """The document took the place of an invalid job's (which may still be invalid, for a new reason)."""

    @property
    def state(self) -> str:
        return self.job.state


def check_internal_id(internal_id: str) -> str:
    problem = internal_id_problem(internal_id)
    if problem:
        raise InvalidInput(problem)
    return internal_id


def _too_large(size: str) -> InvalidInput:
    return InvalidInput(f"document is {size} bytes; the largest accepted is {MAX_PAYLOAD_BYTES:,} bytes (40 MB)")


def read_document(path: Path) -> bytes:
    """A document from a file, never reading more than the largest document we accept.

    A regular file larger than that is refused by its size, unread. Anything else (/dev/zero, a pipe,
    a file still growing) says nothing true about its size, so at most one byte beyond the limit is
    read: enough to know it is too large without holding an endless stream in memory.
    """
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_PAYLOAD_BYTES:
                raise _too_large(f"{info.st_size:,}")
            content = file.read(MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(content) > MAX_PAYLOAD_BYTES:
        raise _too_large(f"over {MAX_PAYLOAD_BYTES:,}")
    return content


def enqueue(
    store: Store,
    payload: bytes | bytearray | memoryview,
    internal_id: str,
    *,
    provider: str = "mysuite",
    policy: Policy | None = None,
    actor: str = "producer",
    publish: bool = True,
    addenda: tuple[str, bytes] | None = None,
    audit_action: str | None = None,
) -> Enqueued:
    """Accept one document. The same (provider, entity, internal id) with the same document again
    returns the existing job.

    Raises InvalidInput when there is nothing to key a job on or the payload is not bytes or too
    large to keep, and ConflictingDocument when the key already names a job with another document.
    A document that is merely wrong (not XML, DOCTYPE, wrong root...) becomes an `invalid` job so
    that the ERP can see why, and is never sent; the corrected document sent under the same key
    then replaces it.

    `addenda` (type, data) asks for a retailer's addenda on the stamped CFDI: checked now (an
    unknown type or unusable data refuses the whole submission) and stored with the invoice.
    `audit_action`: see `Jobs.create_job`.
    """
    pol = policy or Policy()
    if provider not in provider_names():
        raise InvalidInput(f"unknown provider {provider!r}; known: {', '.join(provider_names())}")
    if isinstance(payload, bytearray | memoryview):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise InvalidInput(f"the document must be bytes, not {type(payload).__name__}")
    check_internal_id(internal_id)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _too_large(f"{len(payload):,}")
    child = addenda_request(*addenda) if addenda is not None else None
    client = get_provider(provider)
    reason: str | None = None
    try:
        client.validate(payload, internal_id)
    except InvalidPayload as exc:
        reason = exc.message
    deadline = timedelta(seconds=pol.deadline_seconds)
    grace = timedelta(seconds=pol.redispatch_seconds)
    job, created = store.jobs.create_job(
        provider=provider,
        entity=client.entity,
        internal_id=internal_id,
        payload=None if reason else payload,
        actor=actor,
        deadline=deadline,
        dispatch_grace=grace,
        invalid_reason=reason,
        child=child,
        audit_action=audit_action,
    )
    replaced = False
    if not created:
        job, replaced = _repeat(store, job, payload, reason, actor=actor, deadline=deadline, grace=grace, child=child)
    if (created or replaced) and publish and job.state == JobState.QUEUED:
        _publish(job, internal_id)
    log.info(
        "job=%s internal_id=%s provider=%s %s as %s",
        job.id,
        internal_id,
        provider,
        "accepted" if created else "replaced" if replaced else "already known",
        job.state,
    )
    return Enqueued(job, created, replaced)


def _repeat(
    store: Store,
    job: Job,
    payload: bytes,
    reason: str | None,
    *,
    actor: str,
    deadline: timedelta,
    grace: timedelta,
    child: ChildJob | None = None,
) -> tuple[Job, bool]:
    """A key seen before: (the job, whether this document replaced its previous one).

    The same document is the same job. An invalid job keeps no document, so there is nothing to
    compare: a valid document replaces it, and an invalid one replaces only the reason, when it
    differs (the job is then described by nothing else). Another document under the key of a job
    that is not invalid is refused. If a concurrent replacement moves the job out of `invalid`
    first, this document is compared with the winner's.
    """
    digest = hashlib.sha256(payload).hexdigest()
    for _ in range(3):
        if job.state != JobState.INVALID:
            stored = store.jobs.document_sha256(job.id)
            if stored == digest:
                return job, False
            kept = f"sha256 {stored[:12]}…" if stored else "no document"
            raise ConflictingDocument(
                f"internal id {job.internal_id!r} already names job {job.id} ({job.state}) with another "
                f"document ({kept}; this one is sha256 {digest[:12]}…); only an invalid job's document "
                "can be replaced: send a new document under a new internal id",
                job,
            )
        if reason is not None and reason == job.error_message:
            return job, False
        moved = store.jobs.replace_invalid(
            job.id,
            payload=payload,
            actor=actor,
            deadline=deadline,
            dispatch_grace=grace,
            invalid_reason=reason,
            child=child,
        )
        if moved is not None:
            return moved, True
        job = store.jobs.get(job.id)
    raise InvalidInput(f"job {job.id} kept changing state while its document was being replaced; send it again")


def addenda_request(addenda_type: str, datos: bytes) -> ChildJob:
    """The addenda job to create with the invoice, or InvalidInput (the known types are listed)."""
    from providers.prodigia import check_request
    from providers.prodigia.client import PROVIDER

    try:
        found, text = check_request(addenda_type, datos)
    except InvalidPayload as exc:
        raise InvalidInput(exc.message) from None
    return ChildJob(
        kind="addenda",
        state=AddendaState.WAITING,
        provider=PROVIDER,
        payload=text.encode("utf-8"),
        doc_extra={"addenda_type": found.code},
    )


def _publish(job: Job, internal_id: str) -> None:
    global _publish_skip_until
    with _publish_lock:
        skipping = time.monotonic() < _publish_skip_until
    if skipping:
        log.info("job=%s internal_id=%s not published (broker down); the sweep will pick it up", job.id, internal_id)
        return
    try:
        dispatch(job.id, JobState.QUEUED, provider=job.provider, size_bytes=job.size_bytes)
    except Exception as exc:  # the sweep will dispatch it from the database
        with _publish_lock:
            _publish_skip_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
        log.warning(
            "job=%s internal_id=%s publish failed (%s); the sweep will pick it up",
            job.id,
            internal_id,
            type(exc).__name__,
        )


DIRECTIONS = {"issued": TaxIdRole.EMISOR, "received": TaxIdRole.RECEPTOR, "both": TaxIdRole.AMBOS}
REQUEST_KINDS = {"cfdi": RequestKind.CFDI, "metadata": RequestKind.METADATA, "both": RequestKind.AMBOS}
SERVICES = {"cfdis": Service.CFDIS, "retenciones": Service.RETENCIONES, "both": Service.AMBOS}


def wall_time(text: str) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` (or a date) as SAT reads it: Mexico City wall time, unless it names its offset.

    The CLI and the API both take periods in this form, so they must read them alike.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{text!r} is not YYYY-MM-DD HH:MM:SS") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=MEXICO_CITY)


def request_download(
    store: Store,
    *,
    rfc: str,
    start: datetime,
    end: datetime,
    direction: str,
    kind: str,
    service: str = "cfdis",
    client: DescargaService | None = None,
) -> Registered:
    """Register a SAT bulk download with MYSuite and keep one job per request it reports.

    SAT's v1.5 rules are checked first (`RuleViolation`, naming the rule, and nothing is sent).
    Issued documents are asked for in every status, cancelled ones included; received CFDI (XML)
    can only be asked for as Vigente, so a query that includes them asks for Vigente. The call is
    made once: a refusal (5002, SAT's own) is returned in `Registered.refused`, never resent. The
    jobs are due for their first poll after the schedule's first wait; the sweep sends them.
    """
    try:
        role, request_kind, svc = DIRECTIONS[direction], REQUEST_KINDS[kind], SERVICES[service]
    except KeyError as exc:
        raise InvalidInput(f"unknown value {exc.args[0]!r} for direction, kind or service") from None
    query = DownloadQuery(rfc=rfc.strip().upper(), period=Period(start, end), role=role, kind=request_kind, service=svc)
    if query.includes_received_xml:
        query = replace(query, status=DocumentStatus.VIGENTE)
    else:
        query = replace(query, status=DocumentStatus.TODOS)
    now = store.db.clock()
    check_query(query, now)
    return register_download(store, client or mysuite_descarga(), query, now=now, actor="producer")
