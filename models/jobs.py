"""Intake and reading: a job is created with its payload and first event, and read back by id.

Creation is the only write here. Everything a worker writes afterwards goes through
`models.steps`, with a compare-and-set on the state it expects.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.access import audit
from models.database import Database, TransitionInfo
from models.schema import Artifact, Event, Job, Payload, table
from models.states import JobState, machine
from models.webhooks import announce_state

JOB_PREFIX = "job:"
INTERNAL_PREFIX = "internal:"
"""Prefixes of a job reference (`Jobs.resolve`) that say whether it is a job id or the ERP's internal id."""


# Every intake runs these: built once (see models/steps.py).
_ADD_JOB = sa.insert(table(Job))
_ADD_PAYLOAD = sa.insert(table(Payload))
_COPY_CHUNK = 1 << 20
_COPY_PAYLOAD = "COPY payloads (job_id, sha256, size_bytes, content) FROM STDIN (FORMAT BINARY)"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_ADD_EVENT = sa.insert(table(Event))


def insert_payload(conn: Connection, job_id: str, payload: bytes, digest: str | None = None) -> None:
    """Store a document in the caller's transaction without a second copy of it in memory.

    A parameter of INSERT is copied whole into libpq's send buffer, so a 40 MB document sent that
    way costs the API 80 MB. On PostgreSQL the row goes through COPY in binary format instead, the
    document written in 1 MiB slices of the one copy the caller holds.
    """
    digest = digest or hashlib.sha256(payload).hexdigest()
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        conn.execute(_ADD_PAYLOAD, {"job_id": job_id, "content": payload, "sha256": digest, "size_bytes": len(payload)})
        return
    fields = [job_id.encode(), digest.encode()]
    driver = conn.connection.driver_connection
    assert driver is not None, "a connection inside a transaction has its driver connection"
    with driver.cursor() as cursor, cursor.copy(_COPY_PAYLOAD) as copy:
        copy.write(_COPY_HEADER + struct.pack("!h", 4))
        for field in fields:
            copy.write(struct.pack("!i", len(field)) + field)
        copy.write(struct.pack("!iqi", 8, len(payload), len(payload)))
        view = memoryview(payload)
        for start in range(0, len(payload), _COPY_CHUNK):
            copy.write(view[start : start + _COPY_CHUNK])
        copy.write(struct.pack("!h", -1))


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    pass


@dataclass(frozen=True)
class ChildJob:
    """Work created with its parent and in the same transaction, so neither exists without the other
    (an invoice's addenda). It has no schedule: the parent's step that enters the state the child
    waits for makes it due (`Change.wake_children`)."""

    kind: str
    state: str
    provider: str
    payload: bytes
    doc_extra: dict[str, str] | None = None


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
        child: ChildJob | None = None,
        provider_request_id: str | None = None,
        doc_extra: dict[str, str] | None = None,
        audit_action: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a job with its payload and first event, or return the existing one for the same key.

        A valid job starts in its kind's first state (`queued` for an invoice) with
        `next_attempt_at` set `dispatch_grace` ahead: the producer publishes its message right after
        commit, and if that publish is lost the sweep picks the job up once the grace has passed.
        `child` is created with it (not with an invalid job, which never gets anywhere). A job born
        in a final state (a download request SAT split at registration) has no schedule.
        `audit_action` records the caller's action on the new job in the same transaction (an API
        submit then commits once, not twice); a job that already existed is audited by the caller.
        """
        now = self.db.clock()
        first = JobState.INVALID.value if invalid_reason else (state or JobState.QUEUED.value)
        machine(kind).check(None, first)
        values = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "parent_id": parent_id,
            "provider": provider,
            "entity": entity,
            "internal_id": internal_id,
            "state": first,
            "size_bytes": len(payload) if payload is not None else 0,
            "adopted": False,
            "attempts": 0,
            "polls": 0,
            "next_attempt_at": None if invalid_reason or first not in machine(kind).active else now + dispatch_grace,
            "provider_request_id": provider_request_id,
            "doc_extra": doc_extra,
            "deadline_at": now + deadline,
            "created_at": now,
            "updated_at": now,
            "state_changed_at": now,
            "error_class": "invalid" if invalid_reason else None,
            "error_message": invalid_reason,
        }
        try:
            with self.db.connection() as conn:
                conn.execute(_ADD_JOB, values)
                if payload is not None and not invalid_reason:
                    insert_payload(conn, str(values["id"]), payload)
                announce_state(conn, job_id=str(values["id"]), entity=entity, to_state=first, kind=kind)
                conn.execute(
                    _ADD_EVENT,
                    {
                        "job_id": values["id"],
                        "at": now,
                        "kind": "transition",
                        "from_state": None,
                        "to_state": first,
                        "actor": actor,
                        "error_class": "invalid" if invalid_reason else None,
                        "message": invalid_reason or "accepted",
                    },
                )
                if audit_action is not None:
                    audit(conn, actor=actor, action=audit_action, target=str(values["id"]), outcome="created")
                job = Job(**values)
                notices = [TransitionInfo(job.id, kind, provider, None, first, now, 0)]
                if child is not None and not invalid_reason:
                    notices.append(_add_child(conn, job, child, actor, now))
        except IntegrityError:
            existing = self.find(provider=provider, entity=entity, internal_id=internal_id)
            if existing is None:
                raise
            return existing, False
        self.db.notify(notices)
        return job, True

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
        """A job by `job:<job id>`, `internal:<internal id>`, or a bare ref that names exactly one job.

        The ERP chooses its internal ids, so one may equal another job's id: a bare ref that is a job's
        id and another job's internal id is refused as ambiguous rather than silently showing one of
        them (and letting an operator retry the wrong one). The prefixes say which is meant.
        """
        by_id: str | None = ref
        by_internal: str | None = ref
        if ref.startswith(JOB_PREFIX):
            by_id, by_internal = ref.removeprefix(JOB_PREFIX), None
        elif ref.startswith(INTERNAL_PREFIX):
            by_id, by_internal = None, ref.removeprefix(INTERNAL_PREFIX)
        with self.db.session() as session:
            matches: list[Job] = []
            if by_id is not None and (job := session.get(Job, by_id)) is not None:
                matches.append(job)
            if by_internal is not None:
                # An invoice's addenda shares its internal id: the internal id names the invoice.
                query = (
                    sa.select(Job)
                    .where(Job.internal_id == by_internal, Job.parent_id.is_(None))
                    .order_by(Job.created_at, Job.id)
                )
                matches += [other for other in session.scalars(query.limit(5)) if other not in matches]
            # `job:` was written, but maybe as part of an internal id: say so instead of only "no job".
            prefixed_internal = (
                session.scalar(sa.select(Job.id).where(Job.internal_id == ref).limit(1))
                if not matches and by_internal is None
                else None
            )
        if len(matches) == 1:
            return matches[0]
        if matches:
            named = ", ".join(
                f"{job.id} ({'job id' if job.id == by_id else f'internal id at {job.provider}/{job.entity}'})"
                for job in matches
            )
            alternative = f" or {INTERNAL_PREFIX}{ref}" if len(matches) == 2 and matches[0].id == by_id else ""
            raise AmbiguousJob(f"{ref!r} names several jobs: {named}; write {JOB_PREFIX}<job id>{alternative}")
        if by_internal is None:
            hint = f"; {ref!r} is an internal id: write {INTERNAL_PREFIX}{ref}" if prefixed_internal else ""
            raise JobNotFound(f"no job with id {by_id!r}{hint}")
        if by_id is None:
            raise JobNotFound(f"no job with internal id {by_internal!r}")
        raise JobNotFound(f"no job with id or internal id {ref!r}")

    # --- intake

    def document_sha256(self, job_id: str) -> str | None:
        """The sha256 of the document the job keeps, to tell a repeat from another document under
        the same key; None for an invalid job, which keeps none."""
        with self.db.session() as session:
            return session.scalar(sa.select(Payload.sha256).where(Payload.job_id == job_id))

    def replace_invalid(
        self,
        job_id: str,
        *,
        payload: bytes,
        actor: str,
        deadline: timedelta,
        dispatch_grace: timedelta,
        invalid_reason: str | None = None,
        job_kind: str = "invoice",
        child: ChildJob | None = None,
    ) -> Job | None:
        """Give an invalid job the ERP's next document for the same key; None if the job is no longer invalid.

        A valid document puts the job back in the queue (`invalid -> queued`, a fresh deadline, the
        payload stored) in one transaction, like a new job. One that is still invalid only replaces
        the reason, recorded as an error event: the job stays invalid and keeps no document. The
        compare-and-set on `invalid` lets only one of two racing replacements win. `child` is
        created with a valid replacement, as with a new job (an invalid job never has one).
        """
        now = self.db.clock()
        digest = hashlib.sha256(payload).hexdigest()
        values: dict[str, Any] = {"updated_at": now, "error_class": "invalid", "error_message": invalid_reason}
        event: dict[str, Any] = {
            "kind": "error",
            "to_state": JobState.INVALID.value,
            "error_class": "invalid",
            "message": f"another document (sha256 {digest}), still invalid: {invalid_reason}",
        }
        if invalid_reason is None:
            machine(job_kind).check(JobState.INVALID, JobState.QUEUED)
            values = {
                "state": JobState.QUEUED.value,
                "size_bytes": len(payload),
                "next_attempt_at": now + dispatch_grace,
                "deadline_at": now + deadline,
                "state_changed_at": now,
                "updated_at": now,
                "error_class": None,
                "error_code": None,
                "error_message": None,
            }
            event = {
                "kind": "transition",
                "to_state": JobState.QUEUED.value,
                "message": f"corrected document (sha256 {digest}) replaces the invalid one",
            }
        notices: list[TransitionInfo] = []
        with self.db.session() as session:
            job = session.scalars(
                sa.update(Job)
                .where(Job.id == job_id, Job.state == JobState.INVALID.value)
                .values(**values)
                .returning(Job)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if job is None:
                return None
            if invalid_reason is None:
                announce_state(session, job_id=job_id, entity=job.entity, to_state=JobState.QUEUED, kind=job_kind)
                insert_payload(session.connection(), job_id, payload, digest)
                if child is not None:
                    notices.append(_add_child(session, job, child, actor, now))
            session.execute(
                sa.insert(Event).values(job_id=job_id, at=now, from_state=JobState.INVALID.value, actor=actor, **event)
            )
        if invalid_reason is None:
            self.db.notify(
                [
                    TransitionInfo(
                        job.id,
                        job.kind,
                        job.provider,
                        JobState.INVALID.value,
                        JobState.QUEUED.value,
                        job.created_at,
                        job.polls,
                    ),
                    *notices,
                ]
            )
        return job

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

    def addendas(self, parent_ids: list[str]) -> dict[str, Job]:
        """The addenda job of each of these invoices that has one, by invoice id."""
        if not parent_ids:
            return {}
        with self.db.session() as session:
            rows = session.scalars(sa.select(Job).where(Job.parent_id.in_(parent_ids), Job.kind == "addenda"))
            return {row.parent_id: row for row in rows if row.parent_id is not None}

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


def _add_child(conn: Connection | Session, parent: Job, child: ChildJob, actor: str, now: datetime) -> TransitionInfo:
    """The child's row, payload and first event, in the parent's transaction. It waits with no
    schedule: the parent's workflow wakes it (`Workflow.wakes_children_in`)."""
    machine(child.kind).check(None, child.state)
    child_id = str(uuid.uuid4())
    conn.execute(
        sa.insert(Job).values(
            id=child_id,
            kind=child.kind,
            parent_id=parent.id,
            provider=child.provider,
            entity=parent.entity,
            internal_id=parent.internal_id,
            state=child.state,
            size_bytes=len(child.payload),
            adopted=False,
            attempts=0,
            polls=0,
            next_attempt_at=None,
            deadline_at=parent.deadline_at,
            doc_extra=child.doc_extra,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
        )
    )
    insert_payload(conn if isinstance(conn, Connection) else conn.connection(), child_id, child.payload)
    conn.execute(
        sa.insert(Event).values(
            job_id=child_id,
            at=now,
            kind="transition",
            from_state=None,
            to_state=child.state,
            actor=actor,
            message="accepted",
        )
    )
    return TransitionInfo(child_id, child.kind, child.provider, None, child.state, now, 0)
