"""What a workflow step writes: one claim before it calls the provider, one record after.

Every state change is a compare-and-set on the state the step expects, written in the same
transaction as its events, so that a task delivered twice, or two workers racing for one job, leave
exactly one transition behind: the loser's update matches no row and it does nothing.

A step costs two transactions whatever it does: `claim` takes its jobs (and the payload, for a
submit), and `record` writes everything the step learnt about all of them: transitions, events,
archived files, links, the next schedule and the provider's breaker. The provider is called in
between, outside any transaction.

`next_attempt_at` is both the schedule and the safety net: a claimed job's `next_attempt_at` moves
to the end of its lease, so if the worker dies the sweep finds the job due again once the lease
has run out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from models.database import Database, TransitionInfo
from models.pauses import BreakerPolicy, Health, Pauses
from models.schema import Artifact, Event, Job, Payload, table
from models.states import active_states, machine
from models.webhooks import Audience, announce_state

POLL_EVENT = "poll"
"""Event kind of a verify that found the document still being processed."""

# Every step runs the statements below. They are built once, with bound parameters, because
# building a statement costs SQLAlchemy about four times what executing a built one does.
_JOBS = table(Job)
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
_LARGEST = sa.select(sa.func.max(_JOBS.c.size_bytes)).where(_JOBS.c.id.in_(_IDS))
_CLAIMABLE = (
    sa.select(_JOBS.c.id, _JOBS.c.size_bytes, _JOBS.c.kind, _JOBS.c.provider)
    .where(
        _JOBS.c.id.in_(_IDS),
        _JOBS.c.state == sa.bindparam("w_state"),
        sa.or_(_JOBS.c.lease_until.is_(None), _JOBS.c.lease_until < sa.bindparam("now")),
    )
    .with_for_update(skip_locked=True)
)
_GATHER = (
    sa.select(_JOBS.c.id, _JOBS.c.size_bytes)
    .where(
        _JOBS.c.kind == sa.bindparam("g_kind"),
        _JOBS.c.provider == sa.bindparam("g_provider"),
        _JOBS.c.state == sa.bindparam("w_state"),
        _JOBS.c.id.not_in(_IDS),
        _JOBS.c.next_attempt_at <= sa.bindparam("g_due_by"),
        _JOBS.c.size_bytes <= sa.bindparam("g_max_bytes"),
        sa.or_(_JOBS.c.lease_until.is_(None), _JOBS.c.lease_until < sa.bindparam("now")),
    )
    .order_by(_JOBS.c.next_attempt_at)
    .limit(sa.bindparam("g_limit"))
    .with_for_update(skip_locked=True)
)
_PAYLOAD = table(Payload)
_PAYLOADS = sa.select(_PAYLOAD.c.job_id, _PAYLOAD.c.content).where(_PAYLOAD.c.job_id.in_(_IDS))
_WAKE_CHILDREN = (
    sa.update(_JOBS)
    .where(
        _JOBS.c.parent_id == sa.bindparam("parent"),
        _JOBS.c.next_attempt_at.is_(None),
        _JOBS.c.state.in_(sorted(active_states())),
    )
    .values(next_attempt_at=sa.bindparam("now"), updated_at=sa.bindparam("now"))
)
_ARTIFACTS = table(Artifact)
_DROP_ARTIFACT = sa.delete(_ARTIFACTS).where(
    _ARTIFACTS.c.job_id == sa.bindparam("w_job"), _ARTIFACTS.c.kind == sa.bindparam("w_kind")
)
_ADD_ARTIFACT = sa.insert(_ARTIFACTS)
_ADD_EVENTS = sa.insert(table(Event))


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong, as stored on the job and in its event."""

    error_class: str
    message: str
    code: str | None = None


@dataclass(frozen=True)
class Step:
    """One transition of a chain committed at once."""

    to_state: str
    message: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    kind: str = "transition"


@dataclass(frozen=True)
class Note:
    """An event that leaves the state as it is: a poll, an error, a links refresh, a pause."""

    kind: str
    message: str
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """A file archived for a job, remembered with its checksum."""

    kind: str
    path: str
    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class Change:
    """Everything one step decided about one job: committed with the rest of its batch, or not at all.

    `steps` empty means the state stays (`note` then says why). `fields` are column updates (SQL
    expressions allowed, such as `Job.polls + 1`). `wake_children` makes the jobs that wait for
    this one (created with no schedule and `parent_id` set) due now, in the same transaction.
    """

    job_id: str
    from_state: str
    steps: tuple[Step, ...] = ()
    note: Note | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    next_attempt_at: datetime | None = None
    artifacts: tuple[ArtifactRecord, ...] = ()
    attempt: int | None = None
    kind: str = "invoice"
    wake_children: bool = False


@dataclass(frozen=True)
class Claimed:
    job: Job
    payload: bytes | None = None


Lease = timedelta | Callable[[int], timedelta]


@dataclass(frozen=True)
class Gather:
    """Also claim up to `limit` other jobs of the same kind and provider in the step's state whose
    message is due by `due_by` (their `next_attempt_at` is at most the redispatch grace past it),
    documents of at most `max_bytes`. Their own messages then find them taken and do nothing.

    `width`: the batch's calls go this many at a time after the first, so the lease, which must
    outlast the batch, covers one call's lease per round of calls.

    `provider` (with `kind`): gather that provider's jobs even when none of the claim's own jobs
    is claimable, or it names none (a doorbell's wake-up, `tasks.doorbell`).
    """

    limit: int
    due_by: datetime
    max_bytes: int
    width: int = 1
    kind: str = ""
    provider: str | None = None

    def lease(self, one_call: timedelta, jobs: int) -> timedelta:
        return one_call * (1 + math.ceil(max(0, jobs - 1) / max(1, self.width)))


class Steps:
    """Claims and records of workflow steps, and the operator's transitions."""

    def __init__(self, db: Database, pauses: Pauses) -> None:
        self.db = db
        self._pauses = pauses

    def claim(
        self,
        job_ids: Sequence[str],
        state: str,
        lease: Lease,
        *,
        count_attempt: bool = False,
        with_payload: bool = False,
        gather: Gather | None = None,
    ) -> list[Claimed]:
        """Take the jobs that are still in `state` and free; the others are someone else's.

        The lease keeps the sweep and duplicate deliveries away while the step runs; if the worker
        dies, the lease runs out and the sweep dispatches the job again. `lease` may depend on the
        documents' sizes (uploads take longer). `count_attempt` counts the provider call the step
        is about to make in the same statement. `gather` adds waiting jobs to a lone one's batch.
        """
        if not job_ids and (gather is None or gather.provider is None):
            return []
        now = self.db.clock()
        ids = list(job_ids)
        with self.db.connection() as conn:
            if gather is not None:
                largest, ids = _gathered(conn, ids, state, now, gather)
                if largest is None:
                    return []
                lease = gather.lease(lease(largest) if callable(lease) else lease, len(ids))
            elif callable(lease):
                found = conn.execute(_LARGEST, {"ids": ids}).scalar()
                if found is None:
                    return []
                lease = lease(int(found))
            until = now + lease
            bound = {"ids": ids, "w_state": state, "now": now, "until": until}
            rows = conn.execute(_claim_statement(count_attempt), bound)
            jobs = [Job(**row._mapping) for row in rows]
            payloads: dict[str, bytes] = {}
            if with_payload and jobs:
                found = conn.execute(_PAYLOADS, {"ids": [j.id for j in jobs]})
                payloads = {job_id: bytes(content) for job_id, content in found}
        order = {job_id: i for i, job_id in enumerate(job_ids)}
        jobs.sort(key=lambda j: order.get(j.id, 0))
        return [Claimed(job, payloads.get(job.id)) for job in jobs]

    def record(
        self,
        changes: Sequence[Change],
        *,
        actor: str,
        health: Sequence[Health] = (),
        breaker: BreakerPolicy | None = None,
    ) -> list[bool]:
        """Write a batch of changes and the provider's health in one transaction.

        Returns, per change, whether it applied (False: the job left `from_state` meanwhile). The
        breaker is written in the same transaction, so a crash can never count a failure whose
        error event was lost, nor the other way round.
        """
        for change in changes:
            current: str | None = change.from_state
            for step in change.steps:
                machine(change.kind).check(current, step.to_state)
                current = step.to_state
        now = self.db.clock()
        applied: list[bool] = []
        notices: list[TransitionInfo] = []
        events: list[dict[str, Any]] = []
        artifacts: list[dict[str, Any]] = []
        with self.db.connection() as conn:
            audience = Audience(conn)
            for change in changes:
                row = _set_job(conn, change, _values(change, now))
                applied.append(row is not None)
                if row is None:
                    continue
                events.extend(_events(change, actor, now))
                if change.wake_children:
                    # Work that waited for this job (an invoice's addenda) becomes due with it.
                    conn.execute(_WAKE_CHILDREN, {"parent": change.job_id, "now": now})
                previous = change.from_state
                for step in change.steps:
                    # The outbox row commits with the transition it announces, or not at all.
                    announce_state(
                        conn,
                        job_id=change.job_id,
                        entity=row.entity,
                        to_state=step.to_state,
                        kind=change.kind,
                        audience=audience,
                    )
                    notices.append(
                        TransitionInfo(
                            change.job_id, change.kind, row.provider, previous, step.to_state, row.created_at, row.polls
                        )
                    )
                    previous = step.to_state
                artifacts.extend(_artifact_rows(change, now))
            if artifacts:
                # A step that redoes a retrieve replaces the files it archived before, and of two
                # files of one kind in a change (an answer that carried one inline, then the link's
                # copy) the later one is kept.
                latest = list({(a["job_id"], a["kind"]): a for a in artifacts}.values())
                conn.execute(_DROP_ARTIFACT, [{"w_job": a["job_id"], "w_kind": a["kind"]} for a in latest])
                conn.execute(_ADD_ARTIFACT, latest)
            if events:
                conn.execute(_ADD_EVENTS, events)
            for item in health:
                self._pauses.apply(conn, item, breaker or _DEFAULT_BREAKER)
        self.db.notify(notices)
        return applied

    def transition(
        self,
        job_id: str,
        from_state: str,
        to_state: str,
        *,
        actor: str,
        message: str | None = None,
        fields: Mapping[str, Any] | None = None,
        next_attempt_at: datetime | None = None,
        attempt: int | None = None,
        error: ErrorInfo | None = None,
        kind: str = "transition",
        job_kind: str = "invoice",
    ) -> bool:
        """Move one job from `from_state` to `to_state` if it is still there; False if not."""
        step = Step(to_state, error.message if error and message is None else message, {}, error=error, kind=kind)
        change = Change(
            job_id,
            from_state,
            steps=(step,),
            fields=dict(fields or {}),
            next_attempt_at=next_attempt_at,
            attempt=attempt,
            kind=job_kind,
        )
        return self.record([change], actor=actor)[0]


_DEFAULT_BREAKER = BreakerPolicy(open_after_failures=6, probe_base=timedelta(seconds=5), probe_cap=timedelta(60))


def _error_fields(error: ErrorInfo | None) -> dict[str, Any]:
    if error is None:
        return {}
    return {"error_class": error.error_class, "error_code": error.code, "error_message": error.message}


def _values(change: Change, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"updated_at": now, "lease_until": None, "next_attempt_at": change.next_attempt_at}
    if change.steps:
        values.update(state=change.steps[-1].to_state, state_changed_at=now)
    for step in change.steps:
        values.update(_error_fields(step.error))
        values.update(step.fields)
    if change.note is not None:
        values.update(_error_fields(change.note.error))
    values.update(change.fields)
    return values


def _gathered(
    conn: sa.Connection, ids: list[str], state: str, now: datetime, gather: Gather
) -> tuple[int | None, list[str]]:
    """(the largest document among the jobs, the claimable ones of `ids` and the gathered ones);
    None when there is none. Without a provider to gather for, a message whose jobs another batch
    took costs one statement and gathers nothing (the next message still waiting does).

    Every row is locked before the claim's update, skipping those another claim holds: two claims
    that each gathered the other's job would otherwise wait for each other (a deadlock).
    """
    own = conn.execute(_CLAIMABLE, {"ids": ids, "w_state": state, "now": now}).all() if ids else []
    if own:
        kind, provider = str(own[0].kind), str(own[0].provider)
    elif gather.provider is not None:
        kind, provider = gather.kind, gather.provider
    else:
        return None, ids
    ids = [str(row.id) for row in own]
    bound = {
        "ids": ids,
        "g_kind": kind,
        "g_provider": provider,
        "w_state": state,
        "g_due_by": gather.due_by,
        "g_max_bytes": gather.max_bytes,
        "now": now,
        "g_limit": gather.limit,
    }
    extra = conn.execute(_GATHER, bound).all()
    if not own and not extra:
        return None, ids
    return max(int(row.size_bytes) for row in [*own, *extra]), ids + [str(e.id) for e in extra]


@functools.cache
def _claim_statement(count_attempt: bool) -> sa.Update:
    values: dict[str, Any] = {"updated_at": sa.bindparam("now"), "lease_until": sa.bindparam("until")}
    values["next_attempt_at"] = sa.bindparam("until")
    if count_attempt:
        values["attempts"] = _JOBS.c.attempts + 1
    return (
        sa.update(_JOBS)
        .where(
            _JOBS.c.id.in_(_IDS),
            _JOBS.c.state == sa.bindparam("w_state"),
            sa.or_(_JOBS.c.lease_until.is_(None), _JOBS.c.lease_until < sa.bindparam("now")),
        )
        .values(values)
        .returning(*_JOBS.columns)
    )


def _record_statement(columns: tuple[str, ...], expressions: Mapping[str, Any] | None = None) -> sa.Update:
    """The compare-and-set of one job: the columns are bound by name (`v_<column>`), except
    `expressions`, which are SQL (`Job.polls + 1`) and make a statement of their own."""
    values: dict[str, Any] = {name: sa.bindparam(f"v_{name}") for name in columns}
    values.update(expressions or {})
    return (
        sa.update(_JOBS)
        .where(
            _JOBS.c.id == sa.bindparam("w_id"),
            _JOBS.c.state == sa.bindparam("w_from"),
            _JOBS.c.kind == sa.bindparam("w_kind"),
        )
        .values(values)
        .returning(_JOBS.c.provider, _JOBS.c.entity, _JOBS.c.created_at, _JOBS.c.polls)
    )


_cached_record_statement = functools.lru_cache(maxsize=512)(_record_statement)


def _set_job(conn: sa.Connection, change: Change, values: Mapping[str, Any]) -> sa.Row[Any] | None:
    expressions = {k: v for k, v in values.items() if isinstance(v, sa.ClauseElement)}
    bound = {f"v_{k}": v for k, v in values.items() if k not in expressions}
    bound.update(w_id=change.job_id, w_from=change.from_state, w_kind=change.kind)
    columns = tuple(sorted(k for k in values if k not in expressions))
    statement = _record_statement(columns, expressions) if expressions else _cached_record_statement(columns)
    return conn.execute(statement, bound).first()


def _artifact_rows(change: Change, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "job_id": change.job_id,
            "kind": artifact.kind,
            "path": artifact.path,
            "sha256": artifact.sha256,
            "size_bytes": artifact.size,
            "content_type": artifact.content_type,
            "created_at": now,
        }
        for artifact in change.artifacts
    ]


def _events(change: Change, actor: str, now: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    previous = change.from_state
    for step in change.steps:
        rows.append(_event(change, actor, now, step.kind, previous, step.to_state, step.message, step.error))
        previous = step.to_state
    if change.note is not None:
        note = change.note
        rows.append(_event(change, actor, now, note.kind, previous, previous, note.message, note.error))
    return rows


def _event(
    change: Change,
    actor: str,
    now: datetime,
    kind: str,
    from_state: str | None,
    to_state: str,
    message: str | None,
    error: ErrorInfo | None,
) -> dict[str, Any]:
    return {
        "job_id": change.job_id,
        "at": now,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "actor": actor,
        "attempt": change.attempt,
        "error_class": error.error_class if error else None,
        "provider_code": error.code if error else None,
        "message": message,
    }
