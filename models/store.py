"""The store: the only code that writes job state and events.

Every state change is a compare-and-set on the state the caller expects, written in the same
transaction as its event, so that a task delivered twice, or two workers racing for one job, leave
exactly one transition behind: the loser's update matches no row and it does nothing.

`next_attempt_at` is both the schedule and the safety net: whenever a job is handed to the broker,
its `next_attempt_at` moves a little into the future, so that if the message is lost (Redis flushed,
worker killed) the sweep finds the job due again and dispatches it once more.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.db import is_sqlite
from models.schema import Artifact, Event, Job, Payload, ProviderPause
from models.states import ACTIVE, JobState, check_transition
from models.webhooks import announce, announce_state

POLL_EVENT = "poll"
"""Event kind of a verify that found the document still being processed."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong, as stored on the job and in its event."""

    error_class: str
    message: str
    code: str | None = None


@dataclass(frozen=True)
class TransitionInfo:
    """What observers (metrics) learn of a committed transition, without another query."""

    provider: str
    from_state: str | None
    to_state: str
    created_at: datetime
    polls: int


@dataclass(frozen=True)
class Step:
    """One transition of a chain committed at once (see `Store.transition_chain`)."""

    to_state: JobState
    message: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    kind: str = "transition"


TransitionObserver = Callable[[TransitionInfo], None]


AUTH_PAUSE = "auth"
OUTAGE_PAUSE = "outage"


@dataclass(frozen=True)
class PauseInfo:
    """A provider pause as callers see it (see `models.schema.ProviderPause`)."""

    provider: str
    kind: str
    reason: str
    since: datetime
    until: datetime | None
    probes: int

    def blocks(self, now: datetime, *, probe: bool = False) -> bool:
        """Whether a call to the provider must not be made now.

        An auth pause blocks everything. An outage pause blocks until `until`, except the one
        probe the sweep lets through; once `until` has passed, whoever comes first is the probe.
        """
        if self.kind == AUTH_PAUSE:
            return True
        return not probe and self.until is not None and self.until > now


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    pass


class Store:
    """All reads and writes of jobs, payloads, events and artifacts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._skip_locked = not is_sqlite(engine)
        self.observers: list[TransitionObserver] = []

    def _notify(self, info: TransitionInfo) -> None:
        for observer in list(self.observers):
            observer(info)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # ----------------------------------------------------------------- creation

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
    ) -> tuple[Job, bool]:
        """Insert a job with its payload and first event, or return the existing one for the same key.

        A valid job starts `queued` with `next_attempt_at` set `dispatch_grace` ahead: the producer
        publishes its message right after commit, and if that publish is lost the sweep picks the job
        up once the grace has passed.
        """
        now = utcnow()
        state = JobState.INVALID if invalid_reason else JobState.QUEUED
        job = Job(
            id=str(uuid.uuid4()),
            provider=provider,
            entity=entity,
            internal_id=internal_id,
            state=state.value,
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
            with self.session() as session:
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
                session.add(
                    Event(
                        job_id=job.id,
                        at=now,
                        kind="transition",
                        from_state=None,
                        to_state=state.value,
                        actor=actor,
                        error_class="invalid" if invalid_reason else None,
                        message=invalid_reason or "accepted",
                    )
                )
                # --- webhooks outbox: announced in the transaction that creates the job
                session.flush()
                announce_state(session, job_id=job.id, entity=entity, to_state=state.value)
                # --- end webhooks outbox
            self._notify(TransitionInfo(provider, None, state.value, now, 0))
            return job, True
        except IntegrityError:
            existing = self.find(provider=provider, entity=entity, internal_id=internal_id)
            if existing is None:
                raise
            return existing, False

    # ------------------------------------------------------------------ reading

    def find(self, *, provider: str, entity: str, internal_id: str) -> Job | None:
        with self.session() as session:
            return session.scalars(
                sa.select(Job).where(Job.provider == provider, Job.entity == entity, Job.internal_id == internal_id)
            ).one_or_none()

    def get(self, job_id: str) -> Job:
        with self.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}")
            return job

    def resolve(self, ref: str) -> Job:
        """A job by its id or, failing that, by the ERP's internal id (which must then be unambiguous)."""
        with self.session() as session:
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
        with self.session() as session:
            content = session.scalar(sa.select(Payload.content).where(Payload.job_id == job_id))
        if content is None:
            raise JobNotFound(f"no payload for job {job_id}")
        return bytes(content)

    def events(self, job_id: str) -> list[Event]:
        with self.session() as session:
            return list(session.scalars(sa.select(Event).where(Event.job_id == job_id).order_by(Event.id)))

    def transition_path(self, job_id: str) -> list[tuple[JobState | None, JobState]]:
        """The job's transitions in order, for checking a history against the state machine."""
        return [
            (JobState(e.from_state) if e.from_state else None, JobState(e.to_state))
            for e in self.events(job_id)
            if e.kind in ("transition", "retry") and e.to_state is not None
        ]

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.session() as session:
            return list(session.scalars(sa.select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.kind)))

    def list_jobs(
        self, *, state: str | None = None, provider: str | None = None, limit: int | None = None
    ) -> list[Job]:
        query = sa.select(Job).order_by(Job.created_at, Job.id)
        if state:
            query = query.where(Job.state == state)
        if provider:
            query = query.where(Job.provider == provider)
        if limit:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.scalars(query))

    # ------------------------------------------------------------------ claims

    def claim(
        self,
        job_id: str,
        expected: JobState,
        lease: timedelta | Callable[[int], timedelta],
        *,
        count_attempt: bool = False,
    ) -> Job | None:
        """Take the job for one step, or None when it is not in `expected` or another worker holds it.

        The lease keeps the sweep and duplicate deliveries away while the step runs; if the worker
        dies, the lease runs out and the sweep dispatches the job again. `lease` may depend on the
        document's size (uploads take longer), read in the same transaction. `count_attempt` counts
        the provider call the step is about to make in the same statement, so a step costs one
        round trip to take its job instead of three.
        """
        now = utcnow()
        values: dict[str, Any] = {"updated_at": now}
        if count_attempt:
            values["attempts"] = Job.attempts + 1
        with self.session() as session:
            if callable(lease):
                size = session.scalar(sa.select(Job.size_bytes).where(Job.id == job_id))
                if size is None:
                    return None
                lease = lease(size)
            values.update(lease_until=now + lease, next_attempt_at=now + lease)
            return session.scalars(
                sa.update(Job)
                .where(
                    Job.id == job_id,
                    Job.state == expected.value,
                    sa.or_(Job.lease_until.is_(None), Job.lease_until < now),
                )
                .values(**values)
                .returning(Job)
                .execution_options(synchronize_session=False)
            ).one_or_none()

    # -------------------------------------------------------------- transitions

    def transition(
        self,
        job_id: str,
        from_state: JobState,
        to_state: JobState,
        *,
        actor: str,
        message: str | None = None,
        fields: Mapping[str, Any] | None = None,
        next_attempt_at: datetime | None = None,
        attempt: int | None = None,
        error: ErrorInfo | None = None,
        kind: str = "transition",
    ) -> bool:
        """Move the job from `from_state` to `to_state` if it is still in `from_state`; False if not."""
        values = dict(fields or {})
        if error is not None:
            values = {
                "error_class": error.error_class,
                "error_code": error.code,
                "error_message": error.message,
                **values,
            }
            message = error.message if message is None else message
        step = Step(to_state, message, values, error=error, kind=kind)
        return self.transition_chain(
            job_id, from_state, [step], actor=actor, attempt=attempt, next_attempt_at=next_attempt_at
        )

    def transition_chain(
        self,
        job_id: str,
        from_state: JobState,
        steps: Sequence[Step],
        *,
        actor: str,
        attempt: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Several transitions in one database transaction, or none; False if the job left `from_state`.

        A synchronous provider answers the submit with the finished document: recording
        queued -> submitted -> issued -> retrieved one commit at a time would leave, after a crash
        in between, a job waiting for a step that cannot be taken (there is nothing to poll).
        """
        current: JobState = from_state
        for step in steps:
            check_transition(current, step.to_state)
            current = step.to_state
        now = utcnow()
        values: dict[str, Any] = {
            "state": current.value,
            "state_changed_at": now,
            "updated_at": now,
            "lease_until": None,
            "next_attempt_at": next_attempt_at,
        }
        for step in steps:
            values.update(step.fields)
        with self.session() as session:
            row = session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.state == from_state.value)
                .values(**values)
                .returning(Job.provider, Job.created_at, Job.polls)
                .execution_options(synchronize_session=False)
            ).first()
            if row is None:
                return False
            previous = from_state
            for step in steps:
                _append_event(
                    session,
                    job_id=job_id,
                    at=now,
                    kind=step.kind,
                    from_state=previous.value,
                    to_state=step.to_state.value,
                    actor=actor,
                    attempt=attempt,
                    error_class=step.error.error_class if step.error else None,
                    provider_code=step.error.code if step.error else None,
                    message=step.message,
                )
                previous = step.to_state
            # --- webhooks outbox: every step announced in the transaction that records it
            entity = session.scalar(sa.select(Job.entity).where(Job.id == job_id))
            for step in steps:
                announce_state(session, job_id=job_id, entity=entity or "", to_state=step.to_state.value)
            # --- end webhooks outbox
        previous = from_state
        for step in steps:
            self._notify(TransitionInfo(row.provider, previous.value, step.to_state.value, row.created_at, row.polls))
            previous = step.to_state
        return True

    def record_error(
        self,
        job_id: str,
        state: JobState,
        error: ErrorInfo,
        *,
        actor: str,
        attempt: int,
        next_attempt_at: datetime | None,
    ) -> bool:
        """An error that does not change the state (transient, rate-limited, auth): event + reschedule."""
        when = f"; next attempt at {next_attempt_at.isoformat()}" if next_attempt_at else ""
        return self._update_in_state(
            job_id,
            state,
            {
                "lease_until": None,
                "next_attempt_at": next_attempt_at,
                "error_class": error.error_class,
                "error_code": error.code,
                "error_message": error.message,
            },
            event={
                "kind": "error",
                "actor": actor,
                "attempt": attempt,
                "error_class": error.error_class,
                "provider_code": error.code,
                "message": f"{error.message}{when}",
            },
        )

    def record_attempt(self, job_id: str, state: JobState) -> int:
        """Count one more call to the provider for this job's current step; returns the new count."""
        with self.session() as session:
            counted = session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.state == state.value)
                .values(attempts=Job.attempts + 1)
                .returning(Job.attempts)
                .execution_options(synchronize_session=False)
            ).scalar()
            if counted is None:
                counted = session.scalar(sa.select(Job.attempts).where(Job.id == job_id))
            return int(counted or 0)

    def record_poll(self, job_id: str, next_attempt_at: datetime | None, *, actor: str = "worker") -> bool:
        """A verify that found the document still pending: count the poll, schedule the next one.

        The poll is an event too: its time is the lower bound of the document's processing time
        that `processing_samples` gives the schedule of later documents. A readable answer ends any
        streak of failed calls, so `attempts` starts again from zero and the next error backs off
        from the base delay.
        """
        when = f"; next poll at {next_attempt_at.isoformat()}" if next_attempt_at else ""
        return self._update_in_state(
            job_id,
            JobState.SUBMITTED,
            {"polls": Job.polls + 1, "attempts": 0, "lease_until": None, "next_attempt_at": next_attempt_at},
            event={"kind": POLL_EVENT, "actor": actor, "message": f"still processing{when}"},
        )

    def record_links(
        self,
        job_id: str,
        state: JobState,
        links: Mapping[str, str],
        expires_at: datetime | None,
        *,
        actor: str,
        next_attempt_at: datetime | None,
        refresh: bool,
    ) -> bool:
        """Store fresh download links. The event says when they expire but never holds the URLs."""
        expiry = expires_at.isoformat() if expires_at else "unknown"
        values: dict[str, Any] = {
            "xml_url": links.get("xml"),
            "pdf_url": links.get("pdf"),
            "links_expires_at": expires_at,
            "links_refreshed_at": utcnow(),
        }
        if refresh:
            values.update(lease_until=None, next_attempt_at=next_attempt_at)
        event = {
            "kind": "links",
            "actor": actor,
            "message": f"links refreshed ({', '.join(sorted(links))}); expire at {expiry}",
        }
        return self._update_in_state(job_id, state, values, event=event if refresh else None)

    def record_artifact(self, job_id: str, *, kind: str, path: str, sha256: str, size: int, content_type: str) -> None:
        """Remember an archived file; a second download of the same kind replaces the first's record."""
        now = utcnow()
        with self.session() as session:
            session.execute(sa.delete(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))
            session.execute(
                sa.insert(Artifact).values(
                    job_id=job_id,
                    kind=kind,
                    path=path,
                    sha256=sha256,
                    size_bytes=size,
                    content_type=content_type,
                    created_at=now,
                )
            )

    def _update_in_state(
        self, job_id: str, state: JobState, values: Mapping[str, Any], *, event: Mapping[str, Any] | None = None
    ) -> bool:
        """Update the job if it is still in `state`, with an event of that state in the same transaction."""
        now = utcnow()
        with self.session() as session:
            result = session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.state == state.value)
                .values(updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                return False
            if event is not None:
                _append_event(session, job_id=job_id, at=now, from_state=state.value, to_state=state.value, **event)
        return True

    # ------------------------------------------------------------------ sweeps

    def take_due(
        self, *, limit: int, redispatch_after: timedelta, provider: str | None = None
    ) -> list[tuple[str, JobState]]:
        """Claim up to `limit` jobs whose next step is due and push their schedule `redispatch_after` on.

        `FOR UPDATE SKIP LOCKED` lets several beat sweeps (or a sweep and a CLI) run at once without
        taking the same rows. The pushed schedule means a job dispatched now is not dispatched again
        by the next sweep unless its message was lost. Jobs of paused providers are left alone
        (they stay due and go out once the pause ends), unless `provider` names one explicitly:
        that is how the sweep picks the probe of an outage.
        """
        now = utcnow()
        conditions = [
            Job.state.in_([s.value for s in ACTIVE]),
            Job.next_attempt_at <= now,
            sa.or_(Job.lease_until.is_(None), Job.lease_until < now),
        ]
        if provider is not None:
            conditions.append(Job.provider == provider)
        else:
            blocked = sa.select(ProviderPause.provider).where(
                sa.or_(ProviderPause.until.is_(None), ProviderPause.until > now)
            )
            conditions.append(Job.provider.not_in(blocked))
        query = sa.select(Job.id, Job.state).where(*conditions).order_by(Job.next_attempt_at).limit(limit)
        if self._skip_locked:
            query = query.with_for_update(of=Job, skip_locked=True)
        with self.session() as session:
            rows = session.execute(query).all()
            if not rows:
                return []
            session.execute(
                sa.update(Job)
                .where(Job.id.in_([row.id for row in rows]))
                .values(next_attempt_at=now + redispatch_after)
                .execution_options(synchronize_session=False)
            )
        return [(row.id, JobState(row.state)) for row in rows]

    # ---------------------------------------------------------- provider pauses

    def provider_pauses(self) -> list[PauseInfo]:
        with self.session() as session:
            rows = session.scalars(sa.select(ProviderPause).order_by(ProviderPause.provider)).all()
            return [_pause_info(row) for row in rows]

    def provider_pause(self, provider: str) -> PauseInfo | None:
        with self.session() as session:
            row = session.get(ProviderPause, provider)
            return _pause_info(row) if row is not None else None

    def pause_for_auth(self, provider: str, reason: str) -> bool:
        """Stop every call to `provider` until an operator resumes it; True if it was not so paused yet.

        An auth pause replaces an outage pause: a provider that refuses our credentials is up.
        """
        if self._insert_pause(provider, AUTH_PAUSE, reason, None):
            return True
        now = utcnow()
        with self.session() as session:
            result = session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=AUTH_PAUSE, reason=reason, since=now, until=None, probes=0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            # --- webhooks outbox
            if _rowcount(result) == 1:
                _announce_pause(session, "provider.paused", provider, AUTH_PAUSE, reason, now, None)
            # --- end webhooks outbox
            return _rowcount(result) == 1

    def pause_for_outage(self, provider: str, reason: str, until: datetime) -> bool:
        """Enter contingency for `provider` unless it is paused already; True if this call paused it."""
        return self._insert_pause(provider, OUTAGE_PAUSE, reason, until)

    def _insert_pause(self, provider: str, kind: str, reason: str, until: datetime | None) -> bool:
        now = utcnow()
        try:
            with self.session() as session:
                session.add(
                    ProviderPause(
                        provider=provider, kind=kind, reason=reason, since=now, until=until, probes=0, updated_at=now
                    )
                )
                # --- webhooks outbox
                session.flush()
                _announce_pause(session, "provider.paused", provider, kind, reason, now, until)
                # --- end webhooks outbox
        except IntegrityError:
            return False
        return True

    def claim_probe(self, provider: str, base: timedelta, cap: timedelta) -> bool:
        """Take the right to send one probe to a provider in outage whose wait is over.

        The wait is pushed on at once (compare-and-set on `until`), so concurrent sweeps and tasks
        see the provider blocked again while the probe is out.
        """
        now = utcnow()
        with self.session() as session:
            row = session.execute(
                sa.select(ProviderPause.probes).where(
                    ProviderPause.provider == provider,
                    ProviderPause.kind == OUTAGE_PAUSE,
                    ProviderPause.until <= now,
                )
            ).first()
            if row is None:
                return False
            result = session.execute(
                sa.update(ProviderPause)
                .where(
                    ProviderPause.provider == provider,
                    ProviderPause.kind == OUTAGE_PAUSE,
                    ProviderPause.until <= now,
                )
                .values(until=now + _probe_wait(base, cap, row.probes), updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    def probe_failed(self, provider: str, base: timedelta, cap: timedelta) -> None:
        """Wait longer before the next probe: the wait doubles with every failed probe, up to `cap`."""
        now = utcnow()
        with self.session() as session:
            row = session.get(ProviderPause, provider)
            if row is None or row.kind != OUTAGE_PAUSE:
                return
            row.probes += 1
            row.until = now + _probe_wait(base, cap, row.probes)
            row.updated_at = now

    def end_outage(self, provider: str) -> bool:
        """The provider answered again: lift its outage pause (never an auth pause)."""
        with self.session() as session:
            result = session.execute(
                sa.delete(ProviderPause).where(ProviderPause.provider == provider, ProviderPause.kind == OUTAGE_PAUSE)
            )
            # --- webhooks outbox
            if _rowcount(result) == 1:
                _announce_pause(
                    session, "provider.resumed", provider, OUTAGE_PAUSE, "provider answered", utcnow(), None
                )
            # --- end webhooks outbox
            return _rowcount(result) == 1

    def resume_provider(self, provider: str) -> PauseInfo | None:
        """An operator lifts whatever pause `provider` has; returns the pause that was lifted."""
        with self.session() as session:
            row = session.get(ProviderPause, provider)
            if row is None:
                return None
            info = _pause_info(row)
            session.delete(row)
            # --- webhooks outbox
            _announce_pause(session, "provider.resumed", provider, info.kind, "resumed by an operator", utcnow(), None)
            # --- end webhooks outbox
            return info

    # ----------------------------------------------------------- observability

    def count_by_state(self) -> list[tuple[str, str, int]]:
        with self.session() as session:
            rows = session.execute(
                sa.select(Job.provider, Job.state, sa.func.count()).group_by(Job.provider, Job.state)
            ).all()
        return [(provider, state, int(count)) for provider, state, count in rows]

    def oldest_due_seconds(self) -> dict[str, float]:
        """Per provider, how late the most overdue active job is (0 when nothing is overdue)."""
        now = utcnow()
        with self.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.next_attempt_at))
                .where(Job.state.in_([JobState.QUEUED.value, JobState.SUBMITTED.value, JobState.ISSUED.value]))
                .group_by(Job.provider)
            ).all()
        result: dict[str, float] = {}
        for provider, oldest in rows:
            if oldest is not None and oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            result[provider] = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        return result

    def oldest_in_state_seconds(self, state: JobState) -> dict[str, float]:
        """Per provider, how long the job that has waited longest in `state` has been in it.

        Unlike `oldest_due_seconds`, this grows while a job keeps being retried on schedule, so it
        catches work that is busy but never progresses (every submit failing, say).
        """
        now = utcnow()
        with self.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.state_changed_at))
                .where(Job.state == state.value)
                .group_by(Job.provider)
            ).all()
        return {provider: _seconds_since(now, oldest) for provider, oldest in rows if oldest is not None}

    def links_expiry_seconds(self) -> dict[str, float]:
        """Per provider, seconds until the soonest expiry among links still scheduled for refresh.

        Negative when links the service meant to keep fresh have already expired. Documents outside
        the refresh window have no refresh scheduled and are served from the archive, so they are left out.
        """
        now = utcnow()
        with self.session() as session:
            rows = session.execute(
                sa.select(Job.provider, sa.func.min(Job.links_expires_at))
                .where(
                    Job.state == JobState.RETRIEVED.value,
                    Job.next_attempt_at.is_not(None),
                    Job.links_expires_at.is_not(None),
                )
                .group_by(Job.provider)
            ).all()
        return {provider: -_seconds_since(now, soonest) for provider, soonest in rows if soonest is not None}

    def transition_counts(self) -> list[tuple[str, str | None, str | None, int]]:
        """(provider, from, to, count) over all transition events, for checking counters against history."""
        with self.session() as session:
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
        """
        with self.session() as session:
            rows = session.execute(
                sa.select(Job.id, Job.submitted_at, Job.issued_at, Job.size_bytes)
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
        for job_id, submitted, issued, size in rows:
            if submitted is None or issued is None:
                continue
            polled = pending.get(job_id)
            lower = max(0.0, _seconds(polled - submitted)) if polled is not None else None
            samples.append((size, lower, max(0.0, _seconds(issued - submitted))))
        return samples


def _seconds_since(now: datetime, then: datetime) -> float:
    """SQLite hands datetimes back without a zone; they were written in UTC."""
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (now - then).total_seconds()


# --- webhooks outbox
def _announce_pause(
    session: Session, event_type: str, provider: str, kind: str, reason: str, at: datetime, until: datetime | None
) -> None:
    body = {
        "provider": provider,
        "kind": kind,
        "reason": reason,
        "at": at.isoformat(),
        "until": until.isoformat() if until else None,
    }
    announce(session, job_id=None, entity=None, event_type=event_type, body=body)


# --- end webhooks outbox


def _pause_info(row: ProviderPause) -> PauseInfo:
    return PauseInfo(row.provider, row.kind, row.reason, row.since, row.until, row.probes)


def _probe_wait(base: timedelta, cap: timedelta, probes: int) -> timedelta:
    wait: timedelta = base * (2 ** min(probes, 20))
    return min(cap, wait)


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def _append_event(session: Session, **values: Any) -> None:
    """Insert one event with a plain INSERT: events are never read back or updated in the same
    transaction, so the ORM's unit of work (identity map, flush) would only add CPU per step."""
    session.execute(sa.insert(Event).values(**values))


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
