"""Processing history for the poll schedule: pending polls are events that bracket the ready time."""

from __future__ import annotations

from datetime import timedelta

from models import POLL_EVENT, Change, JobState, Note, Store, utcnow


def _job(store: Store, internal_id: str, size: int) -> str:
    job, _ = store.jobs.create_job(
        provider="mysuite",
        entity="JES900109Q90",
        internal_id=internal_id,
        payload=b"<x>" + b"a" * size + b"</x>",
        actor="test",
        deadline=timedelta(days=1),
        dispatch_grace=timedelta(0),
    )
    assert store.steps.transition(
        job.id, JobState.QUEUED, JobState.SUBMITTED, actor="t", fields={"submitted_at": utcnow()}
    )
    return job.id


def test_processing_samples_bracket_the_ready_time_with_the_last_pending_poll(store: Store) -> None:
    polled = _job(store, "POLLED", 2000)
    at_once = _job(store, "AT-ONCE", 1000)
    poll = Note(POLL_EVENT, "still processing")
    for job_id in (polled, polled, "no-such-job"):
        applied = store.steps.record([Change(job_id, JobState.SUBMITTED, note=poll)], actor="t")
        assert applied == [job_id != "no-such-job"]
    for job_id, polls in ((polled, 3), (at_once, 1)):
        assert store.steps.transition(
            job_id, JobState.SUBMITTED, JobState.ISSUED, actor="t", fields={"issued_at": utcnow(), "polls": polls}
        )
    samples = {size: (lower, upper) for size, lower, upper in store.stats.processing_samples("mysuite")}
    lower, upper = samples[store.jobs.get(polled).size_bytes]
    assert lower is not None and 0 <= lower <= upper
    assert samples[store.jobs.get(at_once).size_bytes][0] is None
    poll_events = [e for e in store.jobs.events(polled) if e.kind == "poll"]
    assert len(poll_events) == 2 and all(e.from_state == e.to_state == "submitted" for e in poll_events)
    assert store.stats.processing_samples("hacienda") == []
