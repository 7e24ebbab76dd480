"""The store's side of provider pauses and of atomic transition chains, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import BreakerPolicy, Change, Health, JobState, Step, Store, utcnow
from models.states import is_valid_path
from tests.harness import transition_path

pytestmark = pytest.mark.faults

SECOND = timedelta(seconds=1)
BREAKER = BreakerPolicy(open_after_failures=3, probe_base=timedelta(milliseconds=200), probe_cap=timedelta(seconds=1))


def _job(store: Store, internal_id: str, provider: str = "mysuite") -> str:
    job, _ = store.jobs.create_job(
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
    return {due.job_id for due in store.schedule.take_due(limit=100, redispatch_after=timedelta(0))}


def _health(store: Store, *items: Health) -> None:
    store.steps.record([], actor="test", health=items, breaker=BREAKER)


def test_auth_pause_hides_the_provider_from_the_sweep_until_resumed(store: Store) -> None:
    mine, other = _job(store, "A-1"), _job(store, "H-1", provider="hacienda")
    assert store.pauses.pause_for_auth("mysuite", "credentials refused")
    assert not store.pauses.pause_for_auth("mysuite", "again"), "already paused"
    assert _due(store) == {other}
    pause = store.pauses.provider_pause("mysuite")
    assert pause is not None and pause.kind == "auth" and pause.until is None
    assert pause.blocks(utcnow()) and pause.blocks(utcnow(), probe=True)
    _health(store, Health("mysuite", "answered"))
    assert store.pauses.provider_pause("mysuite") is not None, "only an operator lifts an auth pause"
    lifted = store.pauses.resume_provider("mysuite")
    assert lifted is not None and lifted.reason == "credentials refused"
    assert store.pauses.provider_pauses() == []
    assert _due(store) == {mine, other}


def test_consecutive_failures_open_the_breaker_and_an_answer_resets_the_count(store: Store) -> None:
    _health(store, Health("mysuite", "failed", "timeout"))
    _health(store, Health("mysuite", "failed", "timeout"))
    assert store.pauses.breakers(fresh=True)["mysuite"].failures == 2
    _health(store, Health("mysuite", "answered"))
    assert store.pauses.breakers(fresh=True)["mysuite"].failures == 0
    for _ in range(3):
        _health(store, Health("mysuite", "failed", "timeout"))
    pause = store.pauses.provider_pause("mysuite")
    assert pause is not None and pause.kind == "outage" and "3 consecutive failures" in pause.reason


def test_outage_lets_one_probe_through_with_a_growing_wait(store: Store) -> None:
    ids = {_job(store, f"O-{n}") for n in range(3)}
    assert store.pauses.pause_for_outage("mysuite", "down", utcnow() + timedelta(hours=1))
    assert not store.pauses.pause_for_outage("mysuite", "down", utcnow()), "one pause at a time"
    assert _due(store) == set()
    assert not store.pauses.claim_probe("mysuite", BREAKER), "the wait is not over"
    store.pauses.resume_provider("mysuite")
    assert store.pauses.pause_for_outage("mysuite", "down", utcnow() - SECOND)
    assert _due(store) == ids, "once the wait is over the jobs go out, to race for the probe"
    assert store.pauses.claim_probe("mysuite", BREAKER)
    assert not store.pauses.claim_probe("mysuite", BREAKER), "one probe per wait"
    waits = []
    for _ in range(4):
        _health(store, Health("mysuite", "failed", "still down"))
        pause = store.pauses.provider_pause("mysuite")
        assert pause is not None and pause.until is not None
        waits.append((pause.until - utcnow()).total_seconds())
    assert waits[0] < waits[1] and max(waits) <= BREAKER.probe_cap.total_seconds()
    _health(store, Health("mysuite", "answered"))
    assert store.pauses.provider_pause("mysuite") is None


def test_auth_replaces_outage(store: Store) -> None:
    store.pauses.pause_for_outage("mysuite", "down", utcnow())
    assert store.pauses.pause_for_auth("mysuite", "refused")
    pause = store.pauses.provider_pause("mysuite")
    assert pause is not None and (pause.kind, pause.until) == ("auth", None)


def test_transition_chain_is_all_or_nothing(store: Store) -> None:
    job_id = _job(store, "S-1")
    steps = (
        Step(JobState.SUBMITTED, "accepted", {"provider_request_id": "R"}),
        Step(JobState.ISSUED, "issued", {"doc_guid": "G"}),
        Step(JobState.RETRIEVED, "inline"),
    )
    change = Change(job_id, JobState.QUEUED, steps=steps)
    assert store.steps.record([change], actor="test") == [True]
    job = store.jobs.get(job_id)
    assert (job.state, job.provider_request_id, job.doc_guid) == ("retrieved", "R", "G")
    path = transition_path(store, job_id)
    assert is_valid_path(path) and [to for _, to in path] == ["queued", "submitted", "issued", "retrieved"]
    assert store.steps.record([change], actor="test") == [False], "a second run does nothing"
    assert len(transition_path(store, job_id)) == 4
