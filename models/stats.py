"""Read-only figures for gauges and for the schedule: counts by state, lateness, processing times."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from models.database import Database, as_utc
from models.schema import Event, Job
from models.states import JobState
from models.steps import POLL_EVENT


class Stats:
    def __init__(self, db: Database) -> None:
        self.db = db

    def count_by_state(self) -> list[tuple[str, str, int]]:
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.provider, Job.state, sa.func.count()).group_by(Job.provider, Job.state)
            ).all()
        return [(provider, state, int(count)) for provider, state, count in rows]

    def oldest_due_seconds(self) -> dict[str, float]:
        """Per provider, how late the most overdue active job is (0 when nothing is overdue)."""
        now = self.db.clock()
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.next_attempt_at))
                .where(Job.state.in_([JobState.QUEUED.value, JobState.SUBMITTED.value, JobState.ISSUED.value]))
                .group_by(Job.provider)
            ).all()
        return {provider: max(0.0, _since(now, oldest)) if oldest else 0.0 for provider, oldest in rows}

    def oldest_in_state_seconds(self, state: JobState) -> dict[str, float]:
        """Per provider, how long the job that has waited longest in `state` has been in it.

        Unlike `oldest_due_seconds`, this grows while a job keeps being retried on schedule, so it
        catches work that is busy but never progresses (every submit failing, say).
        """
        now = self.db.clock()
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.state_changed_at))
                .where(Job.state == state.value)
                .group_by(Job.provider)
            ).all()
        return {provider: _since(now, oldest) for provider, oldest in rows if oldest is not None}

    def links_expiry_seconds(self) -> dict[str, float]:
        """Per provider, seconds until the soonest expiry among links still scheduled for refresh.

        Negative when links the service meant to keep fresh have already expired. Documents outside
        the refresh window have no refresh scheduled and are served from the archive, so they are left out.
        """
        now = self.db.clock()
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.links_expires_at))
                .where(
                    Job.state == JobState.RETRIEVED.value,
                    Job.next_attempt_at.is_not(None),
                    Job.links_expires_at.is_not(None),
                )
                .group_by(Job.provider)
            ).all()
        return {provider: -_since(now, soonest) for provider, soonest in rows if soonest is not None}

    def transition_counts(self) -> list[tuple[str, str | None, str | None, int]]:
        """(provider, from, to, count) over all transition events, for checking counters against history."""
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.provider, Event.from_state, Event.to_state, sa.func.count())
                .join(Job, Job.id == Event.job_id)
                .where(Event.kind.in_(["transition", "retry"]))
                .group_by(Job.provider, Event.from_state, Event.to_state)
            ).all()
        return [(p, f, t, int(n)) for p, f, t, n in rows]

    def processing_samples(self, provider: str, *, sample: int = 50) -> list[tuple[int, float | None, float]]:
        """(size, lower, upper) seconds of processing for the provider's recent issued documents.

        `upper` is from submission to the poll that found the document done; `lower` is from
        submission to the last poll that found it still pending (None when the first poll found it
        done). The true processing time lies between them, which is what the first poll of a new
        document is scheduled from.

        A poll that ran late (the workers were behind) counts from when it was due. The bound is
        then optimistic, not certain; but counted from when it ran, the workers' own backlog would
        pass for processing time, push the next first polls later and leave finished documents
        waiting once the backlog is gone. An estimate too low costs a first poll that finds the
        document pending, and that poll brackets it again.
        """
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Job.id, Job.submitted_at, Job.issued_at, Job.poll_due_at, Job.size_bytes)
                .where(
                    Job.provider == provider,
                    Job.issued_at.is_not(None),
                    Job.submitted_at.is_not(None),
                    Job.size_bytes > 0,
                    Job.polls > 0,
                )
                .order_by(Job.issued_at.desc())
                .limit(sample)
            ).all()
            if not rows:
                return []
            pending = dict(
                session.execute(
                    sa.select(Event.job_id, sa.func.max(Event.at))
                    .where(Event.job_id.in_([row.id for row in rows]), Event.kind == POLL_EVENT)
                    .group_by(Event.job_id)
                ).all()
            )
        samples: list[tuple[int, float | None, float]] = []
        for job_id, submitted, issued, due, size in rows:
            if submitted is None or issued is None:
                continue
            polled = pending.get(job_id)
            lower = max(0.0, (polled - submitted).total_seconds()) if polled is not None else None
            seen = min(issued, due) if due is not None else issued
            samples.append((size, lower, max(0.0, (seen - submitted).total_seconds())))
        return samples


def _since(now: datetime, then: datetime) -> float:
    return (now - as_utc(then)).total_seconds()
