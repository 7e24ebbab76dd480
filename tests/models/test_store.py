"""The store on both backends: idempotent creation, compare-and-set transitions, leases, sweeps."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models import Change, ErrorInfo, IllegalTransition, JobState, Note, Store
from models.access import audit_entries
from models.states import is_valid_path
from models.steps import Gather
from tests.harness import transition_path

DAY = timedelta(days=1)
NOW = timedelta(0)


def new_job(store: Store, internal_id: str = "INV-1", payload: bytes = b"<x/>", **kwargs):
    return store.jobs.create_job(
        provider="mysuite",
        entity="JES900109Q90",
        internal_id=internal_id,
        payload=payload,
        actor="test",
        deadline=DAY,
        dispatch_grace=NOW,
        **kwargs,
    )


def test_a_new_jobs_audit_row_commits_with_it_and_a_repeat_writes_none(store: Store) -> None:
    job, created = new_job(store, audit_action="invoice.submit")
    again, created_again = new_job(store, audit_action="invoice.submit")
    assert created and not created_again and again.id == job.id
    with store.db.session() as session:
        rows = [(e.actor, e.action, e.target, e.outcome) for e in audit_entries(session)]
    assert rows == [("test", "invoice.submit", job.id, "created")]


def test_a_gathered_claim_holds_its_batch_for_one_lease_per_round_of_calls(store: Store) -> None:
    jobs = [new_job(store, f"G-{n}")[0] for n in range(5)]
    busy = new_job(store, "BUSY")[0]
    assert store.steps.claim([busy.id], JobState.QUEUED, timedelta(minutes=5))
    before = datetime.now(UTC)
    gather = Gather(limit=9, due_by=before + DAY, max_bytes=1024, width=2)
    claimed = store.steps.claim([jobs[0].id], JobState.QUEUED, timedelta(seconds=60), gather=gather)
    assert sorted(c.job.id for c in claimed) == sorted(job.id for job in jobs), "the leased one is not taken"
    lease = {c.job.lease_until for c in claimed}
    assert len(lease) == 1
    [until] = lease
    assert until is not None
    held = (until.replace(tzinfo=UTC) if until.tzinfo is None else until) - before
    assert timedelta(seconds=179) < held < timedelta(seconds=185), "60 s x (first alone + 2 rounds of 2)"


def test_a_gathering_claim_waits_for_no_row_another_claim_holds(store: Store) -> None:
    """Two claims that each gathered the other's job deadlocked; a claim now skips locked rows."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time and no row locks")
    held, free, other = (new_job(store, name)[0] for name in ("HELD", "FREE", "OTHER"))
    gather = Gather(limit=9, due_by=datetime.now(UTC) + DAY, max_bytes=1024)
    with store.engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": held.id})
        results: list[list[str]] = []

        def claim(job_id: str) -> None:
            claimed = store.steps.claim([job_id], JobState.QUEUED, timedelta(seconds=60), gather=gather)
            results.append(sorted(c.job.id for c in claimed))

        for job_id in (held.id, free.id):
            thread = threading.Thread(target=claim, args=(job_id,), daemon=True)
            thread.start()
            thread.join(timeout=10)
            assert not thread.is_alive(), "the claim waited for a row another transaction holds"
        holder.rollback()
    assert results == [[], sorted([free.id, other.id])]


def test_same_key_twice_is_one_job(store: Store) -> None:
    first, created = new_job(store)
    second, created_again = new_job(store, payload=b"<other/>")
    assert created and not created_again
    assert first.id == second.id
    assert store.jobs.payload(first.id) == b"<x/>"
    assert len(store.jobs.events(first.id)) == 1


def test_transition_is_compare_and_set(store: Store) -> None:
    job, _ = new_job(store)
    assert store.steps.transition(
        job.id, JobState.QUEUED, JobState.SUBMITTED, actor="a", fields={"provider_request_id": "r1"}
    )
    assert not store.steps.transition(job.id, JobState.QUEUED, JobState.SUBMITTED, actor="b")
    with pytest.raises(IllegalTransition):
        store.steps.transition(job.id, JobState.SUBMITTED, JobState.QUEUED, actor="c")
    events = store.jobs.events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, "queued"), ("queued", "submitted")]
    assert store.jobs.get(job.id).provider_request_id == "r1"


def test_invalid_job_keeps_reason_and_no_payload(store: Store) -> None:
    job, _ = new_job(store, invalid_reason="not XML")
    assert job.state == "invalid"
    assert store.jobs.get(job.id).error_message == "not XML"
    assert store.jobs.events(job.id)[0].to_state == "invalid"
    with pytest.raises(LookupError):
        store.jobs.payload(job.id)


def test_claim_excludes_a_second_worker_until_the_lease_ends(store: Store) -> None:
    held, _ = new_job(store, "HELD")
    assert store.steps.claim([held.id], JobState.QUEUED, timedelta(minutes=5))
    assert not store.steps.claim([held.id], JobState.QUEUED, timedelta(minutes=5))
    lapsed, _ = new_job(store, "LAPSED")
    assert store.steps.claim([lapsed.id], JobState.QUEUED, timedelta(seconds=-1))  # its worker died
    assert store.steps.claim([lapsed.id], JobState.QUEUED, timedelta(minutes=5))


def test_concurrent_transitions_leave_exactly_one_event(store: Store) -> None:
    job, _ = new_job(store)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        wins.append(store.steps.transition(job.id, JobState.QUEUED, JobState.SUBMITTED, actor="racer"))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert [e.to_state for e in store.jobs.events(job.id)] == ["queued", "submitted"]


def test_errors_are_events_and_do_not_change_state(store: Store) -> None:
    job, _ = new_job(store)
    info = ErrorInfo("transient", "read timeout", code=None)
    change = Change(job.id, JobState.QUEUED, note=Note("error", info.message, info), attempt=3)
    assert store.steps.record([change], actor="w") == [True]
    event = store.jobs.events(job.id)[-1]
    assert (event.kind, event.from_state, event.to_state, event.attempt) == ("error", "queued", "queued", 3)
    assert store.jobs.get(job.id).state == "queued"


def test_take_due_dispatches_each_job_once_until_redispatch(store: Store) -> None:
    ids = {new_job(store, f"INV-{n}")[0].id for n in range(5)}
    first = store.schedule.take_due(limit=100, redispatch_after=timedelta(minutes=1))
    assert {due.job_id for due in first} == ids
    assert store.schedule.take_due(limit=100, redispatch_after=timedelta(minutes=1)) == []


def test_full_history_is_a_valid_path(store: Store) -> None:
    job, _ = new_job(store)
    for a, b in [("queued", "submitted"), ("submitted", "issued"), ("issued", "retrieved")]:
        assert store.steps.transition(job.id, JobState(a), JobState(b), actor="w")
    assert is_valid_path(transition_path(store, job.id))


def test_resolve_by_job_id_or_internal_id(store: Store) -> None:
    job, _ = new_job(store, "ERP-77")
    assert store.jobs.resolve(job.id).id == job.id
    assert store.jobs.resolve("ERP-77").id == job.id
    with pytest.raises(LookupError):
        store.jobs.resolve("nope")
