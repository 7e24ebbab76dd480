"""The steps of a SAT bulk-download request (kind `download_request`) through MYSuite Descarga Masiva.

A request is registered once (`register`, from the producer or from a split), then:

- `registered`: polled on the long schedule (SAT answers in minutes to days) until it is ready,
  empty, rejected, failed, expired, or too large, in which case its period is halved and the halves
  are registered as child requests;
- `ready`: each package is downloaded once and verified; `download_packages.downloads` is counted
  before the call, because SAT counts the link we ask for whether or not our copy survives, and a
  package counted but missing on disk is left to an operator rather than spending SAT's last download;
- `downloaded`: each package is streamed into the `cfdi` table, in one transaction per package that
  also marks it indexed, so a crash re-indexes at most one package (the merge is idempotent).

SAT's limits are spent here and nowhere else: no step registers a period a second time on its own
(a lost answer is resent only through the 5005 adoption of the request that is still active).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from models import DownloadState, ErrorInfo, Job, Note, Step, Store
from models.cfdi import DownloadPackage
from models.steps import POLL_EVENT, Claimed
from providers.base import PermanentError, TransientError
from providers.mysuite.descarga import (
    CannotSplit,
    DescargaOutcome,
    Direction,
    DocumentStatus,
    DownloadQuery,
    PackageError,
    Period,
    RequestKind,
    Service,
    TaxIdRole,
    TooManyResults,
    split_period,
    verify_zip,
)
from providers.mysuite.descarga.records import parse_time
from tasks.cfdi_index import index_package
from tasks.outcomes import Moved, Outcome, Stayed
from tasks.services import DescargaService
from tasks.workflow import StepContext, one_by_one

log = logging.getLogger("einvoice.tasks")

KIND = "download_request"
PROVIDER = "mysuite"
ACTOR = "worker"

DEFAULT_POLL_SECONDS = (60.0, 300.0, 900.0, 3600.0)
"""Waits before the first, second, third and every later poll: SAT answers within minutes for a
small period and within days for a large one, so polling thins out to hourly."""
DEFAULT_MAX_AGE_HOURS = 96.0
"""SAT keeps a request's packages for 72 hours after it finishes; a request unanswered for longer
than this is given up (`expired`)."""

MIN_SPLIT_SECONDS = 3600
"""A period shorter than this is not halved again: no taxpayer receives SAT's 200,000 CFDI within
an hour, so a 5003 that persists this far down is refused rather than registered thousands of times."""

LISTED, DOWNLOADED, INDEXED = "listed", "downloaded", "indexed"
"""States of a `download_packages` row."""

# doc_extra keys
FROM, TO, DIRECTION, REQUEST_KIND, SERVICE = "from", "to", "direction", "kind", "service"
SAT_ID, SAT_STATE, CFDI_COUNT, INDEXED_COUNT = "sat_request_id", "sat_state", "cfdi_count", "indexed"
STATUS = "document_status"

_ROLE_DIRECTION = {TaxIdRole.EMISOR: Direction.ISSUED, TaxIdRole.RECEPTOR: Direction.RECEIVED}


def poll_schedule(environ: Mapping[str, str] | None = None) -> tuple[float, ...]:
    """`EINVOICE_DOWNLOAD_POLL_SECONDS` (comma-separated waits), or the long schedule."""
    text = (os.environ if environ is None else environ).get("EINVOICE_DOWNLOAD_POLL_SECONDS", "").strip()
    if not text:
        return DEFAULT_POLL_SECONDS
    values = tuple(float(item) for item in text.split(","))
    if not values or any(value <= 0 for value in values):
        raise ValueError("EINVOICE_DOWNLOAD_POLL_SECONDS must list positive seconds")
    return values


def max_age(environ: Mapping[str, str] | None = None) -> timedelta:
    """`EINVOICE_DOWNLOAD_MAX_AGE_HOURS`, or 96 hours."""
    text = (os.environ if environ is None else environ).get("EINVOICE_DOWNLOAD_MAX_AGE_HOURS", "").strip()
    hours = float(text) if text else DEFAULT_MAX_AGE_HOURS
    if hours <= 0:
        raise ValueError("EINVOICE_DOWNLOAD_MAX_AGE_HOURS must be positive")
    return timedelta(hours=hours)


def poll_delay(polls: int, schedule: Sequence[float] | None = None) -> float:
    """The wait after `polls` pending answers."""
    waits = poll_schedule() if schedule is None else schedule
    return waits[min(polls, len(waits) - 1)]


# -- registration ----------------------------------------------------------------------------


@dataclass
class Registered:
    """What one registration produced: the jobs to poll, the split parents, and the refusals."""

    jobs: list[Job] = field(default_factory=list)
    split: list[Job] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _extra(query: DownloadQuery, direction: Direction | None) -> dict[str, str]:
    start, end = query.period.wire()
    return {
        FROM: start,
        TO: end,
        DIRECTION: direction.value if direction else "both",
        REQUEST_KIND: query.kind.value,
        SERVICE: query.service.value,
        STATUS: query.status.value,
    }


def _narrowed(query: DownloadQuery, service: str | None, kind: str | None, role: str | None) -> DownloadQuery:
    """The query of one SAT request of a call that registered several (AMBOS expands)."""
    services = {item.value.lower(): item for item in Service}
    kinds = {item.value.lower(): item for item in RequestKind}
    roles = {item.value.lower(): item for item in TaxIdRole}
    return replace(
        query,
        service=services.get((service or "").lower(), query.service),
        kind=kinds.get((kind or "").lower(), query.kind),
        role=roles.get((role or "").lower(), query.role),
    )


def request_key(request_id: str) -> str:
    """The internal id of a registered request: MYSuite's id, or its digest if too long to fit."""
    key = f"dm:{request_id}"
    return key if len(key) <= 50 else "dm:" + hashlib.sha256(request_id.encode()).hexdigest()[:40]


def split_key(query: DownloadQuery) -> str:
    """A stable internal id for a period SAT refused as too large: no MYSuite id exists for it."""
    text = "|".join((query.rfc, *query.period.wire(), query.service, query.kind, query.role))
    return "dm:split:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def register(
    store: Store,
    client: DescargaService,
    query: DownloadQuery,
    *,
    now: datetime,
    actor: str,
    parent_id: str | None = None,
    first_poll: float | None = None,
) -> Registered:
    """Register `query` once and keep one job per SAT request MYSuite reports.

    A request refused as too large (5003) is recorded as a `split` job whose halves are registered
    in turn, as its children. Other refusals (5002, SAT's own) are returned, not retried: registering
    the same period again would spend SAT's limit for nothing.
    """
    result = Registered()
    wait = timedelta(seconds=poll_delay(0) if first_poll is None else first_poll)
    for record in client.register(query, now=now):
        sub = _narrowed(query, record.service, record.kind, record.role)
        if record.period is not None:
            sub = replace(sub, period=record.period)
        direction = _ROLE_DIRECTION.get(sub.role)
        label = f"{sub.service}/{sub.kind}/{sub.role} {' - '.join(sub.period.wire())}"
        if record.error is None and record.request_id is not None:
            extra = _extra(sub, direction)
            if record.sat_request_id:
                extra[SAT_ID] = record.sat_request_id
            job, _ = store.jobs.create_job(
                provider=PROVIDER,
                entity=query.rfc,
                internal_id=request_key(record.request_id),
                payload=None,
                actor=actor,
                deadline=max_age(),
                dispatch_grace=wait,
                kind=KIND,
                state=DownloadState.REGISTERED,
                parent_id=parent_id,
                provider_request_id=record.request_id,
                doc_extra=extra,
            )
            result.jobs.append(job)
            continue
        if isinstance(record.error, TooManyResults):
            try:
                halves = halve(record.error.period or sub.period)
            except CannotSplit as exc:
                result.refused.append(f"{label}: {record.error} and {exc}")
                continue
            parent, _ = store.jobs.create_job(
                provider=PROVIDER,
                entity=query.rfc,
                internal_id=split_key(sub),
                payload=None,
                actor=actor,
                deadline=max_age(),
                dispatch_grace=wait,
                kind=KIND,
                state=DownloadState.SPLIT,
                parent_id=parent_id,
                doc_extra={**_extra(sub, direction), "split_into": _halves_text(halves)},
            )
            result.split.append(parent)
            for half in halves:
                inner = register(
                    store,
                    client,
                    replace(sub, period=half),
                    now=now,
                    actor=actor,
                    parent_id=parent.id,
                    first_poll=wait.total_seconds(),
                )
                result.jobs += inner.jobs
                result.split += inner.split
                result.refused += inner.refused
            continue
        code = f" ({record.code})" if record.code else ""
        result.refused.append(f"{label}: {record.error or 'no request id'}{code}")
    return result


def halve(period: Period) -> tuple[Period, Period]:
    """`split_period`, refused below `MIN_SPLIT_SECONDS`."""
    if period.seconds < MIN_SPLIT_SECONDS:
        raise CannotSplit(f"a period shorter than {MIN_SPLIT_SECONDS} seconds is not split further")
    return split_period(period)


def _halves_text(halves: tuple[Period, Period]) -> str:
    return "; ".join(" - ".join(half.wire()) for half in halves)


# -- packages ----------------------------------------------------------------------------------


def packages(store: Store, job_id: str) -> list[DownloadPackage]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(DownloadPackage).where(DownloadPackage.job_id == job_id).order_by(DownloadPackage.package_id)
        )
        return [DownloadPackage(**row._mapping) for row in rows]


def _list_packages(store: Store, job_id: str, package_ids: Sequence[str], now: datetime) -> None:
    """Remember the packages of a ready request, once: a poll delivered twice adds nothing."""
    with store.engine.begin() as conn:
        known = set(conn.scalars(sa.select(DownloadPackage.package_id).where(DownloadPackage.job_id == job_id)))
        for package_id in package_ids:
            if package_id not in known:
                conn.execute(
                    sa.insert(DownloadPackage).values(
                        job_id=job_id, package_id=package_id, state=LISTED, downloads=0, created_at=now, updated_at=now
                    )
                )


def _update_package(store: Store, row_id: int, expected: str, **values: object) -> bool:
    with store.engine.begin() as conn:
        done = conn.execute(
            sa.update(DownloadPackage)
            .where(DownloadPackage.id == row_id, DownloadPackage.state == expected)
            .values(**values)
        )
        return bool(done.rowcount)


def package_path(archive_dir: Path, job: Job, package_id: str) -> Path:
    """Where a package is archived: one stable name per package, so a download whose record was
    lost is found again instead of fetched again."""
    return archive_dir / "downloads" / job.entity / f"{package_id}.zip"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _failed(message: str, *, code: str | None = None, error_class: str = "permanent", answered: bool = True) -> Moved:
    info = ErrorInfo(error_class, message[:2000], code)
    return Moved((Step(DownloadState.FAILED, info.message, error=info),), answered=answered)


# -- steps -------------------------------------------------------------------------------------


@one_by_one
def poll(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Ask MYSuite where SAT is with the request; a pending answer waits on the long schedule."""
    job = claimed.job
    if job.provider_request_id is None:
        return _failed("the download request has no MYSuite request id", answered=False)
    client = ctx.services.descarga()
    status = client.get_request(job.provider_request_id, rfc=job.entity)
    extra = {**(job.doc_extra or {}), SAT_STATE: str(int(status.sat_state)), CFDI_COUNT: str(status.cfdi_count)}
    if status.sat_request_id:
        extra[SAT_ID] = status.sat_request_id
    fields = {"doc_extra": extra}
    outcome = status.outcome
    said = f" ({status.message})" if status.message else ""
    if outcome is DescargaOutcome.PENDING:
        polls = job.polls + 1
        note = Note(POLL_EVENT, f"SAT state {status.sat_state.name.lower()}{said}")
        return Stayed(note, next_in=poll_delay(polls), fields={**fields, "polls": polls, "attempts": 0})
    if outcome is DescargaOutcome.READY:
        _list_packages(ctx.services.store, job.id, status.package_ids, ctx.now)
        message = f"{len(status.package_ids)} packages of {status.cfdi_count} CFDI ready"
        return Moved((Step(DownloadState.READY, message),), next_in=0.0, fields=fields)
    code = None if status.request_code is None else str(status.request_code)
    if outcome is DescargaOutcome.EMPTY:
        return Moved((Step(DownloadState.EMPTY, f"SAT found no documents in the period{said}"),), fields=fields)
    if outcome is DescargaOutcome.REJECTED:
        info = ErrorInfo("rejected", f"SAT rejected the request{said}", code)
        return Moved((Step(DownloadState.REJECTED, info.message, error=info),), fields=fields)
    if outcome is DescargaOutcome.EXPIRED:
        info = ErrorInfo("expired", f"SAT expired the request{said}", code)
        return Moved((Step(DownloadState.EXPIRED, info.message, error=info),), fields=fields)
    if outcome is DescargaOutcome.TOO_MANY:
        return _split(ctx, job, fields)
    info = ErrorInfo("permanent", f"SAT could not complete the request{said}", code)
    return Moved((Step(DownloadState.FAILED, info.message, error=info),), fields=fields)


def _split(ctx: StepContext, job: Job, fields: dict[str, dict[str, str]]) -> Outcome:
    """Halve a request SAT found too large and register the halves as this job's children.

    A retry after a crash here re-registers the same halves and meets 5005 with the active requests'
    ids, which are adopted, and the same internal ids, so no request and no job is made twice.
    """
    extra = job.doc_extra or {}
    query = query_of(job)
    try:
        halves = halve(query.period)
    except CannotSplit as exc:
        return _failed(f"SAT found the period too large (5003) and {exc}", code="5003")
    result = Registered()
    for half in halves:
        inner = register(
            ctx.services.store,
            ctx.services.descarga(),
            replace(query, period=half),
            now=ctx.now,
            actor=ACTOR,
            parent_id=job.id,
        )
        result.jobs += inner.jobs
        result.split += inner.split
        result.refused += inner.refused
    text = _halves_text(halves)
    refused = f"; refused: {'; '.join(result.refused)}" if result.refused else ""
    message = f"split into {text} ({len(result.jobs)} requests){refused}"
    return Moved(
        (Step(DownloadState.SPLIT, message[:2000]),),
        fields={"doc_extra": {**fields["doc_extra"], **extra, "split_into": text}},
    )


def query_of(job: Job) -> DownloadQuery:
    """The query a job stands for, rebuilt from what it keeps."""
    extra = job.doc_extra or {}
    start, end = parse_time(extra.get(FROM)), parse_time(extra.get(TO))
    if start is None or end is None:
        raise PermanentError("the download request keeps no readable period")
    direction = extra.get(DIRECTION, "both")
    role = {"issued": TaxIdRole.EMISOR, "received": TaxIdRole.RECEPTOR}.get(direction, TaxIdRole.AMBOS)
    return DownloadQuery(
        rfc=job.entity,
        period=Period(start, end),
        role=role,
        kind=RequestKind(extra.get(REQUEST_KIND, RequestKind.CFDI.value)),
        service=Service(extra.get(SERVICE, Service.CFDIS.value)),
        status=DocumentStatus(extra.get(STATUS, DocumentStatus.VIGENTE.value)),
    )


@one_by_one
def fetch(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Download every package not yet downloaded, once each, and keep its sha256.

    The download is counted before the link is asked for, and the link kept as soon as it is given:
    a crash after that resumes from the kept link (or finds the copy already archived), and only a
    download counted with no link kept is left to an operator.
    """
    job = claimed.job
    store = ctx.services.store
    if job.provider_request_id is None:
        return _failed("the download request has no MYSuite request id", answered=False)
    client = ctx.services.descarga()
    called = False
    for row in packages(store, job.id):
        if row.state != LISTED:
            continue
        dest = package_path(ctx.services.archive_dir, job, row.package_id)
        link = row.link
        if dest.exists():
            try:
                verify_zip(dest)
            except TransientError as exc:
                return _failed(f"package {row.package_id}: the archived copy is damaged ({exc})", answered=called)
            size, digest = dest.stat().st_size, _sha256(dest)
            log.info("job=%s package=%s found archived after an unrecorded download", job.id, row.package_id)
        else:
            if link is None and row.downloads > 0:
                return _failed(
                    f"package {row.package_id} was asked for before and its link was not kept; SAT allows "
                    "two downloads of a package, so whether to spend the second is an operator's decision",
                    answered=called,
                )
            if link is None:
                if not _update_package(store, row.id, LISTED, downloads=row.downloads + 1, updated_at=ctx.now):
                    continue
                called = True
                link = client.package_link(job.provider_request_id, row.package_id, rfc=job.entity)
                _update_package(store, row.id, LISTED, link=link, updated_at=ctx.now)
            dest.parent.mkdir(parents=True, exist_ok=True)
            called = True
            saved = client.fetch_package(row.package_id, link, dest)
            size, digest = saved.size, saved.sha256
        _update_package(
            store, row.id, LISTED, state=DOWNLOADED, path=str(dest), sha256=digest, size_bytes=size, updated_at=ctx.now
        )
    done = packages(store, job.id)
    return Moved(
        (Step(DownloadState.DOWNLOADED, f"{len(done)} packages downloaded and verified"),), next_in=0.0, answered=called
    )


@one_by_one
def index(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Index every downloaded package into the `cfdi` table, one transaction per package."""
    job = claimed.job
    store = ctx.services.store
    direction = {"issued": Direction.ISSUED, "received": Direction.RECEIVED}.get(
        (job.doc_extra or {}).get(DIRECTION, "")
    )
    if direction is None:
        return _failed("the download request has no single direction to index under", answered=False)
    records = skipped = 0
    for row in packages(store, job.id):
        if row.state == INDEXED:
            records += row.cfdi_count or 0
            skipped += row.skipped_count or 0
            continue
        if row.state != DOWNLOADED or row.path is None:
            return _failed(f"package {row.package_id} is {row.state}, not downloaded", answered=False)
        try:
            with store.engine.begin() as conn:
                result = index_package(conn, Path(row.path), direction, now=ctx.now)
                conn.execute(
                    sa.update(DownloadPackage)
                    .where(DownloadPackage.id == row.id, DownloadPackage.state == DOWNLOADED)
                    .values(state=INDEXED, cfdi_count=result.records, skipped_count=result.skipped, updated_at=ctx.now)
                )
        except (PackageError, OSError) as exc:
            return _failed(f"package {row.package_id} cannot be indexed: {exc}", answered=False)
        records += result.records
        skipped += result.skipped
        if result.skip_reasons:
            log.warning("job=%s package=%s skipped: %s", job.id, row.package_id, "; ".join(result.skip_reasons[:5]))
    extra = {**(job.doc_extra or {}), INDEXED_COUNT: str(records)}
    message = f"{records} CFDI indexed, {skipped} entries skipped"
    return Moved((Step(DownloadState.INDEXED, message),), fields={"doc_extra": extra}, answered=False)


# -- views -------------------------------------------------------------------------------------


def download_view(store: Store, job: Job) -> dict[str, Any]:
    """`downloads status --json`: the request as the interface contract shows it."""
    extra = job.doc_extra or {}
    count = extra.get(CFDI_COUNT)
    error = None
    if job.error_message:
        error = {"class": job.error_class, "code": job.error_code, "message": job.error_message}
    return {
        "id": job.id,
        "rfc": job.entity,
        "period": {"from": extra.get(FROM), "to": extra.get(TO)},
        "direction": extra.get(DIRECTION),
        "kind": extra.get(REQUEST_KIND),
        "service": extra.get(SERVICE),
        "state": job.state,
        "parent_id": job.parent_id,
        "provider_request_id": job.provider_request_id,
        "sat_request_id": extra.get(SAT_ID),
        "sat_state": int(extra[SAT_STATE]) if SAT_STATE in extra else None,
        "cfdi_count": int(count) if count is not None else None,
        "indexed": int(extra[INDEXED_COUNT]) if INDEXED_COUNT in extra else None,
        "split_into": extra.get("split_into"),
        "packages": [
            {"id": row.package_id, "state": row.state, "sha256": row.sha256} for row in packages(store, job.id)
        ],
        "error": error,
    }
