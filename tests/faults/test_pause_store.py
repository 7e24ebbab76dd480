"""The store's side of provider pauses and of atomic transition chains, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import JobState, Step, Store, utcnow
from models.states import is_valid_path

pytestmark = pytest.mark.faults

SECOND = timedelta(seconds=1)


def _job(store: Store, internal_id: str, provider: str = "mysuite") -> str:
    job, _ = store.create_job(
        provider=provider,
        entity="E",
        internal_id=internal_id,
        payload=b"<x/>",
        actor="test",
        deadline=timedelta(hours=1),
        dispatch_grace=timedelta(0),
    )
    return job.id


def _due(store: Store) -> set[str]:
    return {job_id for job_id, _ in store.take_due(limit=100, redispatch_after=timedelta(0))}


def test_auth_pause_hides_the_provider_from_the_sweep_until_resumed(store: Store) -> None:
    mine, other = _job(store, "A-1"), _job(store, "H-1", provider="hacienda")
    assert store.pause_for_auth("mysuite", "credentials refused")
    assert not store.pause_for_auth("mysuite", "again"), "already paused"
    assert _due(store) == {other}
    pause = store.provider_pause("mysuite")
    assert pause is not None and pause.kind == "auth" and pause.until is None
    assert pause.blocks(utcnow()) and pause.blocks(utcnow(), probe=True)
    assert not store.end_outage("mysuite"), "only an operator lifts an auth pause"
    lifted = store.resume_provider("mysuite")
    assert lifted is not None and lifted.reason == "credentials refused"
    assert store.provider_pauses() == []
    assert _due(store) == {mine, other}


def test_outage_lets_one_probe_through_with_a_growing_wait(store: Store) -> None:
    ids = {_job(store, f"O-{n}") for n in range(3)}
    base, cap = timedelta(milliseconds=200), timedelta(milliseconds=800)
    assert store.pause_for_outage("mysuite", "down", utcnow() + timedelta(hours=1))
    assert not store.pause_for_outage("mysuite", "down", utcnow()), "one pause at a time"
    assert _due(store) == set()
    assert not store.claim_probe("mysuite", base, cap), "the wait is not over"
    store.resume_provider("mysuite")
    assert store.pause_for_outage("mysuite", "down", utcnow() - SECOND)
    assert store.claim_probe("mysuite", base, cap)
    assert not store.claim_probe("mysuite", base, cap), "one probe per wait"
    probe = store.take_due(limit=1, redispatch_after=timedelta(minutes=1), provider="mysuite")
    assert len(probe) == 1 and probe[0][0] in ids
    assert _due(store) == set(), "the others wait while the probe is out"
    waits = []
    for _ in range(4):
        store.probe_failed("mysuite", base, cap)
        pause = store.provider_pause("mysuite")
        assert pause is not None and pause.until is not None
        waits.append((pause.until - utcnow()).total_seconds())
    assert waits[0] < waits[1] and max(waits) <= cap.total_seconds()
    assert store.end_outage("mysuite")
    assert store.provider_pause("mysuite") is None


def test_auth_replaces_outage(store: Store) -> None:
    store.pause_for_outage("mysuite", "down", utcnow())
    assert store.pause_for_auth("mysuite", "refused")
    pause = store.provider_pause("mysuite")
    assert pause is not None and (pause.kind, pause.until) == ("auth", None)


def test_transition_chain_is_all_or_nothing(store: Store) -> None:
    job_id = _job(store, "S-1")
    steps = [
        Step(JobState.SUBMITTED, "accepted", {"provider_request_id": "R"}),
        Step(JobState.ISSUED, "issued", {"doc_guid": "G"}),
        Step(JobState.RETRIEVED, "inline"),
    ]
    assert store.transition_chain(job_id, JobState.QUEUED, steps, actor="test")
    job = store.get(job_id)
    assert (job.state, job.provider_request_id, job.doc_guid) == ("retrieved", "R", "G")
    path = store.transition_path(job_id)
    assert is_valid_path(path) and [to for _, to in path] == ["queued", "submitted", "issued", "retrieved"]
    assert not store.transition_chain(job_id, JobState.QUEUED, steps, actor="test"), "a second run does nothing"
    assert len(store.transition_path(job_id)) == 4
