"""The sweep's side of the schedule: hand out due jobs, once each, in one statement.

Jobs whose next step is due are taken with `FOR UPDATE SKIP LOCKED` (several beat sweeps, or a
sweep and a CLI, never take the same rows) and their schedule is pushed `redispatch_after` on in
the same statement, so a job dispatched now is not dispatched again by the next sweep unless its
message was lost. When nothing is due, a sweep costs exactly this one statement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from models.database import Database
from models.pauses import AUTH_PAUSE, OUTAGE_PAUSE, QUOTA_PAUSE
from models.schema import Job, Payload, ProviderPause, table, take_due_statement
from models.states import active_states


@dataclass(frozen=True)
class Due:
    job_id: str
    kind: str
    state: str
    provider: str
    size_bytes: int = 0


@functools.cache
def _take_due_statement(skip_locked: bool) -> sa.Update:
    """Built once per dialect: every sweep runs it, mostly to find nothing."""
    jobs = table(Job)
    pauses = table(ProviderPause)
    now: sa.BindParameter[datetime] = sa.bindparam("now")
    blocked = sa.select(pauses.c.provider).where(
        sa.or_(
            pauses.c.kind == AUTH_PAUSE,
            sa.and_(pauses.c.kind.in_([OUTAGE_PAUSE, QUOTA_PAUSE]), pauses.c.until > now),
        )
    )
    conditions = [
        jobs.c.state.in_(sorted(active_states())),
        jobs.c.next_attempt_at <= now,
        sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
        jobs.c.provider.not_in(blocked),
    ]
    returning = [jobs.c.id, jobs.c.kind, jobs.c.state, jobs.c.provider, jobs.c.size_bytes]
    return take_due_statement(jobs, conditions, returning, skip_locked=skip_locked)


class Schedule:
    def __init__(self, db: Database) -> None:
        self.db = db

    def take_due(self, *, limit: int, redispatch_after: timedelta) -> list[Due]:
        """Claim up to `limit` due jobs, oldest first, skipping providers that are paused now.

        A provider in outage whose wait is over is not skipped: its jobs go out, and the first
        step to claim the probe (`Pauses.claim_probe`) is the one that calls it.
        """
        now = self.db.clock()
        bound = {"now": now, "until": now + redispatch_after, "limit": limit}
        with self.db.connection() as conn:
            rows = conn.execute(_take_due_statement(self.db.skip_locked), bound).all()
        return [Due(row.id, row.kind, row.state, row.provider, int(row.size_bytes or 0)) for row in rows]

    def purge_payloads(self, *, final_states: frozenset[str], older_than: timedelta, limit: int) -> int:
        """Drop the document bytes of jobs that reached a final state long ago; the job, its events
        and the payload's sha256 stay. Returns how many payloads were emptied."""
        cutoff = self.db.clock() - older_than
        done = (
            sa.select(Job.id)
            .where(Job.state.in_(sorted(final_states)), Job.state_changed_at < cutoff, Job.next_attempt_at.is_(None))
            .scalar_subquery()
        )
        kept = (
            sa.select(Payload.job_id)
            .where(Payload.job_id.in_(done), sa.func.length(Payload.content) > 0)
            .limit(limit)
            .scalar_subquery()
        )
        with self.db.session() as session:
            result = session.execute(
                sa.update(Payload)
                .where(Payload.job_id.in_(kept))
                .values(content=b"")
                .execution_options(synchronize_session=False)
            )
        return int(getattr(result, "rowcount", 0) or 0)
