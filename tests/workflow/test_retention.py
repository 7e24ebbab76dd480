"""Payload retention: documents of jobs final for longer than the retention are emptied; the job,
its events and the payload's sha256 stay."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import sqlalchemy as sa

from models import JobState, Payload
from models.states import final_states
from tests.workflow.conftest import Flow

RETENTION = timedelta(days=90)


def _payload(flow: Flow, job_id: str) -> tuple[bytes, str]:
    with flow.store.db.connection() as conn:
        row = conn.execute(sa.select(Payload.content, Payload.sha256).where(Payload.job_id == job_id)).one()
    return bytes(row.content), row.sha256


def test_payloads_of_long_final_jobs_are_purged_and_their_checksum_kept(flow: Flow) -> None:
    old, recent, active = flow.enqueue("OLD", b"<old/>"), flow.enqueue("RECENT", b"<recent/>"), flow.enqueue("ACTIVE")
    flow.outbox.clear()
    assert flow.store.steps.transition(old.id, JobState.QUEUED, JobState.FAILED, actor="t")
    flow.clock.advance(RETENTION.total_seconds() - 3600)
    assert flow.store.steps.transition(recent.id, JobState.QUEUED, JobState.FAILED, actor="t")
    flow.clock.advance(2 * 3600)
    purged = flow.store.schedule.purge_payloads(final_states=final_states(), older_than=RETENTION, limit=100)
    assert purged == 1
    assert _payload(flow, old.id) == (b"", hashlib.sha256(b"<old/>").hexdigest())
    assert _payload(flow, recent.id)[0] == b"<recent/>"
    assert _payload(flow, active.id)[0] == b"<doc/>", "a job still at work keeps its document"
    assert [e.to_state for e in flow.store.jobs.events(old.id)] == ["queued", "failed"]
    assert flow.store.schedule.purge_payloads(final_states=final_states(), older_than=RETENTION, limit=100) == 0
