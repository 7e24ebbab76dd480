"""Download requests in-process: every SAT outcome, the split of a period too large, and packages
that are downloaded once whatever crashes.

The Descarga Masiva service is a small scripted SAT: requests follow a timeline of states, periods
above a document threshold answer 5003, and packages are real ZIPs of generated CFDI 4.0 that the
real indexer reads.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import DownloadState, Job
from models.cfdi import Cfdi
from providers.base import TransientError
from providers.mysuite.descarga import (
    Direction,
    DocumentStatus,
    DownloadQuery,
    PackageFile,
    Period,
    Registration,
    RequestKind,
    RequestStatus,
    RuleViolation,
    SatState,
    TaxIdRole,
    TooManyResults,
)
from providers.mysuite.descarga.wire import registration_error
from sandbox.mysuite.cfdigen import period_count, period_documents, write_package
from tasks import downloads
from tests.workflow.conftest import Flow
from worker.producer import request_download

RFC = "JES900109Q90"
START = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
PER_DAY = 3


@dataclass
class SatRequest:
    query: DownloadQuery
    timeline: list[tuple[int, int | None]]
    polls: int = 0

    @property
    def documents(self) -> int:
        period = self.query.period
        return period_count(period.start.timestamp(), period.end.timestamp(), PER_DAY)


@dataclass
class ScriptedSat:
    """SAT behind MYSuite, scripted: a timeline of (state, request code) per new request, 5003
    above `max_cfdi` documents, 5005 for an identical active request, packages generated on demand."""

    timeline: list[tuple[int, int | None]] = field(default_factory=lambda: [(1, None), (3, 5000)])
    max_cfdi: int = 10_000
    requests: dict[str, SatRequest] = field(default_factory=dict)
    registrations: list[DownloadQuery] = field(default_factory=list)
    links: Counter[str] = field(default_factory=Counter)
    fetches: Counter[str] = field(default_factory=Counter)
    after_download: Callable[[Path], None] | None = None
    on_link: Callable[[], None] | None = None
    refuse_with: int | None = None

    def register(self, query: DownloadQuery, *, now: datetime | None = None) -> list[Registration]:
        from providers.mysuite.descarga import check_query

        check_query(query, now or datetime.now(UTC))
        self.registrations.append(query)
        if self.refuse_with is not None:
            return [self._record(None, query, self.refuse_with)]
        for request_id, known in self.requests.items():
            if known.query == query and known.timeline[min(known.polls, len(known.timeline) - 1)][0] in (1, 2):
                return [self._record(request_id, query, 5005)]
        request = SatRequest(query, list(self.timeline))
        if request.documents > self.max_cfdi:
            return [self._record(None, query, 5003)]
        request_id = f"R{len(self.requests) + 1:04d}"
        self.requests[request_id] = request
        return [self._record(request_id, query, 5000)]

    def _record(self, request_id: str | None, query: DownloadQuery, code: int) -> Registration:
        error = None if code in (5000, 5005) else registration_error(code, "scripted", query.period)
        return Registration(
            request_id=request_id,
            sat_request_id=None if request_id is None else f"sat-{request_id}",
            service=query.service.value,
            kind=query.kind.value,
            role=query.role.value,
            period=query.period,
            code=str(code),
            message="scripted",
            adopted=code == 5005,
            error=error,
        )

    def get_request(self, request_id: str, *, rfc: str | None = None) -> RequestStatus:
        request = self.requests[request_id]
        state, code = request.timeline[min(request.polls, len(request.timeline) - 1)]
        request.polls += 1
        finished = state == 3 and code in (None, 5000)
        return RequestStatus(
            request_id=request_id,
            sat_request_id=f"sat-{request_id}",
            sat_state=SatState(state),
            status_code=5000,
            request_code=code,
            cfdi_count=request.documents if finished else 0,
            package_ids=(f"{request_id}_01",) if finished else (),
            message=None if code in (None, 5000) else f"code {code}",
        )

    def package_link(self, request_id: str, package_id: str, *, rfc: str | None = None) -> str:
        self.links[package_id] += 1
        if self.on_link is not None:
            self.on_link()
        return f"https://sat.example/{request_id}/{package_id}"

    def fetch_package(self, package_id: str, url: str, dest: Path, *, max_bytes: int = 0) -> PackageFile:
        self.fetches[package_id] += 1
        request_id = url.rsplit("/", 2)[-2]
        period = self.requests[request_id].query.period
        docs = period_documents(0, RFC, True, period.start.timestamp(), period.end.timestamp(), PER_DAY)
        entries = write_package(dest, docs, "cfdi")
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if self.after_download is not None:
            self.after_download(dest)
        return PackageFile(package_id, dest, digest, dest.stat().st_size, entries)


@pytest.fixture
def sat(flow: Flow) -> ScriptedSat:
    scripted = ScriptedSat()
    flow.services.descarga = lambda: scripted
    return scripted


def query(days: int = 2) -> DownloadQuery:
    period = Period(START, START + timedelta(days=days) - timedelta(seconds=1))
    return DownloadQuery(rfc=RFC, period=period, role=TaxIdRole.RECEPTOR, kind=RequestKind.CFDI)


def start(flow: Flow, sat: ScriptedSat, days: int = 2) -> downloads.Registered:
    return downloads.register(flow.store, sat, query(days), now=flow.clock(), actor="test")


def drive(flow: Flow, *, hours: float = 3.0, step: float = 60.0) -> None:
    """Let time pass a minute at a time, with the sweep and every message it sends delivered."""
    for _ in range(int(hours * 3600 / step)):
        flow.clock.advance(step)
        flow.sweep()
        flow.deliver()
        if not flow.store.jobs.list_jobs(kind=downloads.KIND, state=None) or all(
            job.state not in ("registered", "ready", "downloaded")
            for job in flow.store.jobs.list_jobs(kind=downloads.KIND)
        ):
            return


def indexed_uuids(flow: Flow) -> list[str]:
    with flow.store.engine.connect() as conn:
        return list(conn.scalars(sa.select(Cfdi.uuid)))


def test_a_ready_request_is_downloaded_once_and_indexed(flow: Flow, sat: ScriptedSat) -> None:
    sat.timeline = [(1, None), (2, None), (3, 5000)]
    (job,) = start(flow, sat).jobs
    assert job.state == "registered" and job.provider_request_id == "R0001" and job.internal_id == "dm:R0001"
    assert job.next_attempt_at == flow.clock() + timedelta(seconds=60)
    drive(flow)
    done = flow.job(job.id)
    assert done.state == DownloadState.INDEXED, flow.kinds(job.id)
    assert [kind for kind, _, _ in flow.kinds(job.id)].count("poll") == 2
    assert (done.doc_extra or {})["cfdi_count"] == str(2 * PER_DAY)
    (package,) = downloads.packages(flow.store, job.id)
    assert package.state == "indexed" and package.downloads == 1 and package.cfdi_count == 2 * PER_DAY
    assert package.sha256 == hashlib.sha256(Path(package.path or "").read_bytes()).hexdigest()
    assert sat.links == {"R0001_01": 1}
    uuids = indexed_uuids(flow)
    assert len(uuids) == len(set(uuids)) == 2 * PER_DAY


def test_pending_polls_follow_the_long_schedule(flow: Flow, sat: ScriptedSat) -> None:
    sat.timeline = [(1, None)] * 10
    (job,) = start(flow, sat).jobs
    waits = []
    for _ in range(5):
        due = flow.job(job.id).next_attempt_at
        assert due is not None
        waits.append(round((due - flow.clock()).total_seconds()))
        flow.clock.now = due
        flow.sweep()
        flow.outbox.clear()
        flow.run("einvoice.download_poll", [job.id])
    assert waits[0] == 60 and waits[1] >= 300 and waits[2] >= 900 and waits[3] == waits[4] == 3600


@pytest.mark.parametrize(
    ("timeline", "state", "code"),
    [
        ([(1, None), (3, 5004)], DownloadState.EMPTY, None),
        ([(1, None), (5, 5004)], DownloadState.EMPTY, None),
        ([(1, None), (5, 5001)], DownloadState.REJECTED, "5001"),
        ([(1, None), (4, None)], DownloadState.FAILED, None),
        ([(1, None), (6, None)], DownloadState.EXPIRED, None),
    ],
)
def test_each_end_of_a_request(
    flow: Flow, sat: ScriptedSat, timeline: list[tuple[int, int | None]], state: str, code: str | None
) -> None:
    sat.timeline = timeline
    (job,) = start(flow, sat).jobs
    drive(flow)
    done = flow.job(job.id)
    assert done.state == state, flow.kinds(job.id)
    assert done.error_code == code
    assert not sat.links and not downloads.packages(flow.store, job.id)


def test_no_answer_within_the_maximum_age_expires(
    flow: Flow, sat: ScriptedSat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EINVOICE_DOWNLOAD_MAX_AGE_HOURS", "2")
    sat.timeline = [(1, None)]
    (job,) = start(flow, sat).jobs
    drive(flow, hours=4)
    done = flow.job(job.id)
    assert done.state == DownloadState.EXPIRED and done.error_class == "deadline"
    assert sat.requests["R0001"].polls == 4  # after 1, 6, 21 and 81 minutes; the next is past 2 h


def test_a_period_too_large_at_registration_is_split_into_children(flow: Flow, sat: ScriptedSat) -> None:
    sat.max_cfdi = 2 * PER_DAY
    result = start(flow, sat, days=4)
    assert len(result.split) == 1 and len(result.jobs) == 2 and not result.refused
    (parent,) = result.split
    assert parent.state == DownloadState.SPLIT and parent.next_attempt_at is None
    assert {job.parent_id for job in result.jobs} == {parent.id}
    drive(flow)
    assert {flow.job(job.id).state for job in result.jobs} == {DownloadState.INDEXED}
    uuids = indexed_uuids(flow)
    assert len(uuids) == len(set(uuids)) == 4 * PER_DAY
    assert set(sat.links.values()) == {1} and len(sat.links) == 2
    # each half once, the refused whole once: no period was registered twice
    periods = [q.period for q in sat.registrations]
    assert len(periods) == len(set(periods)) == 3


def test_a_request_sat_finds_too_large_is_split_by_the_poll(flow: Flow, sat: ScriptedSat) -> None:
    sat.timeline = [(1, None), (3, 5003)]
    issued = replace(query(4), role=TaxIdRole.EMISOR, status=DocumentStatus.TODOS)
    (job,) = downloads.register(flow.store, sat, issued, now=flow.clock(), actor="test").jobs
    sat.timeline = [(1, None), (3, 5000)]
    drive(flow)
    done = flow.job(job.id)
    assert done.state == DownloadState.SPLIT and (done.doc_extra or {})["split_into"], flow.kinds(job.id)
    children = flow.store.jobs.children(job.id)
    assert len(children) == 2 and {child.state for child in children} == {DownloadState.INDEXED}
    assert [(q.role, q.status) for q in sat.registrations] == [(TaxIdRole.EMISOR, DocumentStatus.TODOS)] * 3
    assert (flow.store.jobs.events(job.id)[-1].message or "").startswith("split into 2026-")
    assert len(set(indexed_uuids(flow))) == 4 * PER_DAY


def test_a_package_is_never_downloaded_twice_after_a_crash_before_the_record(flow: Flow, sat: ScriptedSat) -> None:
    crashes = []

    def crash(_: Path) -> None:
        crashes.append(1)
        sat.after_download = None
        raise RuntimeError("worker died after the download")

    sat.after_download = crash
    (job,) = start(flow, sat).jobs
    drive(flow)
    done = flow.job(job.id)
    assert crashes and done.state == DownloadState.INDEXED, flow.kinds(job.id)
    assert "unexpected" in [kind for kind, _, _ in flow.kinds(job.id)] or any(
        e.error_class == "unexpected" for e in flow.store.jobs.events(job.id)
    )
    assert sat.links == {"R0001_01": 1} and sat.fetches == {"R0001_01": 1}
    assert len(set(indexed_uuids(flow))) == 2 * PER_DAY


def test_a_transfer_cut_short_resumes_from_the_kept_link(flow: Flow, sat: ScriptedSat) -> None:
    def cut(path: Path) -> None:
        path.unlink()
        sat.after_download = None
        raise TransientError("connection reset while reading the package")

    sat.after_download = cut
    (job,) = start(flow, sat).jobs
    drive(flow)
    assert flow.job(job.id).state == DownloadState.INDEXED, flow.kinds(job.id)
    assert sat.links == {"R0001_01": 1} and sat.fetches == {"R0001_01": 2}
    assert len(set(indexed_uuids(flow))) == 2 * PER_DAY


def test_a_download_counted_without_its_link_is_left_to_an_operator(flow: Flow, sat: ScriptedSat) -> None:
    def die() -> None:
        sat.on_link = None
        raise RuntimeError("worker died while asking for the link")

    sat.on_link = die
    (job,) = start(flow, sat).jobs
    drive(flow)
    done = flow.job(job.id)
    assert done.state == DownloadState.FAILED and "operator" in (done.error_message or "")
    assert sat.links == {"R0001_01": 1} and not sat.fetches


def test_request_download_checks_the_rules_and_adopts_an_active_request(flow: Flow, sat: ScriptedSat) -> None:
    later = START + timedelta(days=1)
    with pytest.raises(RuleViolation) as refused:
        request_download(flow.store, rfc=RFC, start=later, end=START, direction="received", kind="cfdi", client=sat)
    assert refused.value.rule.value == "period_order" and not sat.registrations
    sat.timeline = [(1, None)]
    first = request_download(flow.store, rfc=RFC, start=START, end=later, direction="received", kind="cfdi", client=sat)
    again = request_download(flow.store, rfc=RFC, start=START, end=later, direction="received", kind="cfdi", client=sat)
    assert [job.id for job in first.jobs] == [job.id for job in again.jobs] and len(sat.requests) == 1
    assert (first.jobs[0].doc_extra or {})["direction"] == Direction.RECEIVED


def test_a_refused_registration_is_reported_not_retried(flow: Flow, sat: ScriptedSat) -> None:
    sat.refuse_with = 5002
    result = start(flow, sat, days=1)
    assert result.jobs == [] and result.split == [] and "5002" in result.refused[0]
    assert len(sat.registrations) == 1
    assert flow.store.jobs.list_jobs(kind=downloads.KIND) == []


def test_splitting_stops_at_the_smallest_period(flow: Flow, sat: ScriptedSat) -> None:
    sat.max_cfdi = -1
    result = start(flow, sat, days=1)
    assert (
        result.jobs == []
        and len(result.refused) == 32
        and len(result.split) == 31
        and all(isinstance(job, Job) for job in result.split)
    )
    assert all(q.period.seconds >= downloads.MIN_SPLIT_SECONDS / 2 for q in sat.registrations)
    assert isinstance(registration_error(5003, None, None), TooManyResults)


def test_a_split_cut_short_registers_each_half_once(flow: Flow, sat: ScriptedSat) -> None:
    sat.timeline = [(1, None), (3, 5003)]
    (job,) = start(flow, sat, days=4).jobs
    sat.timeline = [(1, None)] * 3 + [(3, 5000)]
    register = sat.register
    calls: list[int] = []

    def flaky(query: DownloadQuery, *, now: datetime | None = None) -> list[Registration]:
        calls.append(1)
        if len(calls) == 2:  # the second half of the first split attempt: the answer is lost
            raise TransientError("connection reset after REGISTRAR")
        return register(query, now=now)

    sat.register = flaky  # type: ignore[method-assign]
    drive(flow)
    assert flow.job(job.id).state == DownloadState.SPLIT, flow.kinds(job.id)
    children = flow.store.jobs.children(job.id)
    assert len(children) == 2 and {child.state for child in children} == {DownloadState.INDEXED}
    # the whole, then the first half twice (the second time adopted through 5005), the second half once
    assert len(sat.requests) == 3 and len(calls) == 4
    assert len(set(indexed_uuids(flow))) == 4 * PER_DAY
