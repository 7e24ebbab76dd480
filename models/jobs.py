"""Intake and reading: a job is created with its payload and first event, and read back by id.

Creation is the only write here. Everything a worker writes afterwards goes through
`models.steps`, with a compare-and-set on the state it expects.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from models.database import Database, TransitionInfo
from models.schema import Artifact, Event, Job, Payload
from models.states import JobState, machine


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    pass


class Jobs:
    """Creating jobs and reading them, their payloads, events and artifacts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_job(
        self,
        *,
        provider: str,
        entity: str,
        internal_id: str,
        payload: bytes | None,
        actor: str,
        deadline: timedelta,
        dispatch_grace: timedelta,
        invalid_reason: str | None = None,
        kind: str = "invoice",
        state: str | None = None,
        parent_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a job with its payload and first event, or return the existing one for the same key.

        A valid job starts in its kind's first state (`queued` for an invoice) with
        `next_attempt_at` set `dispatch_grace` ahead: the producer publishes its message right after
        commit, and if that publish is lost the sweep picks the job up once the grace has passed.
        """
        now = self.db.clock()
        first = JobState.INVALID.value if invalid_reason else (state or JobState.QUEUED.value)
        machine(kind).check(None, first)
        job = Job(
            id=str(uuid.uuid4()),
            kind=kind,
            parent_id=parent_id,
            provider=provider,
            entity=entity,
            internal_id=internal_id,
            state=first,
            size_bytes=len(payload) if payload is not None else 0,
            adopted=False,
            attempts=0,
            polls=0,
            next_attempt_at=None if invalid_reason else now + dispatch_grace,
            deadline_at=now + deadline,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
        )
        if invalid_reason:
            job.error_class = "invalid"
            job.error_message = invalid_reason
        try:
            with self.db.session() as session:
                session.add(job)
                session.flush()
                if payload is not None and not invalid_reason:
                    session.add(
                        Payload(
                            job_id=job.id,
                            content=payload,
                            sha256=hashlib.sha256(payload).hexdigest(),
                            size_bytes=len(payload),
                        )
                    )
                session.execute(
                    sa.insert(Event).values(
                        job_id=job.id,
                        at=now,
                        kind="transition",
                        from_state=None,
                        to_state=first,
                        actor=actor,
                        error_class="invalid" if invalid_reason else None,
                        message=invalid_reason or "accepted",
                    )
                )
            self.db.notify([TransitionInfo(job.id, kind, provider, None, first, now, 0)])
            return job, True
        except IntegrityError:
            existing = self.find(provider=provider, entity=entity, internal_id=internal_id)
            if existing is None:
                raise
            return existing, False

    def find(self, *, provider: str, entity: str, internal_id: str) -> Job | None:
        with self.db.session() as session:
            return session.scalars(
                sa.select(Job).where(Job.provider == provider, Job.entity == entity, Job.internal_id == internal_id)
            ).one_or_none()

    def get(self, job_id: str) -> Job:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}")
            return job

    def resolve(self, ref: str) -> Job:
        """A job by its id or, failing that, by the ERP's internal id (which must then be unambiguous)."""
        with self.db.session() as session:
            job = session.get(Job, ref)
            if job is not None:
                return job
            matches = session.scalars(sa.select(Job).where(Job.internal_id == ref).limit(2)).all()
        if not matches:
            raise JobNotFound(f"no job with id or internal id {ref!r}")
        if len(matches) > 1:
            raise AmbiguousJob(f"internal id {ref!r} exists for several providers or entities; use the job id")
        return matches[0]

    def payload(self, job_id: str) -> bytes:
        with self.db.session() as session:
            content = session.scalar(sa.select(Payload.content).where(Payload.job_id == job_id))
        if content is None:
            raise JobNotFound(f"no payload for job {job_id}")
        return bytes(content)

    def events(self, job_id: str) -> list[Event]:
        with self.db.session() as session:
            return list(session.scalars(sa.select(Event).where(Event.job_id == job_id).order_by(Event.id)))

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.db.session() as session:
            return list(session.scalars(sa.select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.kind)))

    def children(self, job_id: str) -> list[Job]:
        with self.db.session() as session:
            return list(session.scalars(sa.select(Job).where(Job.parent_id == job_id).order_by(Job.created_at)))

    def list_jobs(
        self,
        *,
        state: str | None = None,
        provider: str | None = None,
        limit: int | None = None,
        kind: str | None = "invoice",
    ) -> list[Job]:
        query = sa.select(Job).order_by(Job.created_at, Job.id)
        if kind:
            query = query.where(Job.kind == kind)
        if state:
            query = query.where(Job.state == state)
        if provider:
            query = query.where(Job.provider == provider)
        if limit:
            query = query.limit(limit)
        with self.db.session() as session:
            return list(session.scalars(query))
