"""Webhook subscriptions and their deliveries: the outbox, written in the transaction it announces.

`announce` inserts one delivery per matching subscription inside the caller's transaction, so a
transition that commits is always announced and one that rolls back never is, whatever crashes
afterwards. Deliveries carry their own schedule (`next_attempt_at`), like jobs: the sweep claims the
due ones, a worker posts them, and a delivery whose worker died is simply due again once its claim
runs out. The body is a snapshot of the job row taken in that transaction, so the receiver sees the
job as the transition left it even when the delivery goes out hours later.
"""

from __future__ import annotations

import base64
import enum
import functools
import json
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.access import ServerSecret, audit
from models.schema import Base, Job, Timestamp, table, take_due_statement

EVENT_TYPES = (
    "invoice.submitted",
    "invoice.issued",
    "invoice.retrieved",
    "invoice.failed",
    "invoice.invalid",
    "invoice.expired",
    "addenda.attached",
    "addenda.failed",
    "download.ready",
    "download.failed",
    "provider.paused",
    "provider.resumed",
)

# Job states whose arrival is announced; `queued` (accepted, or put back by a retry) is not an event
# of the contract.
STATE_EVENTS: Mapping[tuple[str, str], str] = {
    ("invoice", "submitted"): "invoice.submitted",
    ("invoice", "issued"): "invoice.issued",
    ("invoice", "retrieved"): "invoice.retrieved",
    ("invoice", "failed"): "invoice.failed",
    ("invoice", "invalid"): "invoice.invalid",
    ("invoice", "expired"): "invoice.expired",
    ("addenda", "attached"): "addenda.attached",
    ("addenda", "failed"): "addenda.failed",
    ("download_request", "ready"): "download.ready",
    ("download_request", "failed"): "download.failed",
    ("download_request", "rejected"): "download.failed",
    ("download_request", "expired"): "download.failed",
}
"""The contract's event for a job of a kind entering a state; other transitions announce nothing."""

SECRET_PREFIX = "whsec_"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookSubscription(Base):
    """Where to post which events. `secret` is the whsec_ signing secret, encrypted (see models.access)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    url: Mapped[str] = mapped_column(sa.Text)
    events: Mapped[str] = mapped_column(sa.Text)
    entity: Mapped[str | None] = mapped_column(sa.String(64))
    secret: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp())
    created_by: Mapped[str] = mapped_column(sa.String(64))
    disabled_at: Mapped[datetime | None] = mapped_column(Timestamp())
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)

    @property
    def event_types(self) -> list[str]:
        return self.events.split(",")


class WebhookDelivery(Base):
    """One message to one subscription. Its id is the `webhook-id` header: the same on every retry,
    so the receiver can drop duplicates of an at-least-once delivery."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_subscription", "subscription_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(sa.String(36))
    event_type: Mapped[str] = mapped_column(sa.String(32))
    body: Mapped[str] = mapped_column(sa.Text)
    occurred_at: Mapped[datetime] = mapped_column(Timestamp())
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp())
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp())
    last_status: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.Text)


Body = Mapping[str, Any] | Callable[[], Mapping[str, Any]]

# Read and written by every step's record: built once (see models/steps.py).
_SUBSCRIPTIONS = table(WebhookSubscription)
_LIVE = sa.select(_SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.entity, _SUBSCRIPTIONS.c.events).where(
    _SUBSCRIPTIONS.c.disabled_at.is_(None)
)
_QUEUE_DELIVERIES = sa.insert(table(WebhookDelivery))


class Audience:
    """The live subscriptions, read at most once per transaction however many events it announces:
    a step's record announces one event per transition, and usually nobody listens."""

    def __init__(self, session_or_connection: Session | Connection) -> None:
        self._conn = session_or_connection
        self._rows: list[tuple[str, str | None, frozenset[str]]] | None = None

    def targets(self, event_type: str, entity: str | None) -> list[str]:
        """Subscriptions to `event_type`; with `entity`, only those of that entity or of all entities."""
        if self._rows is None:
            self._rows = [(r.id, r.entity, frozenset(r.events.split(","))) for r in self._conn.execute(_LIVE)]
        return [
            sid
            for sid, owner, events in self._rows
            if event_type in events and (entity is None or owner is None or owner == entity)
        ]


def announce(
    session_or_connection: Session | Connection,
    *,
    job_id: str | None,
    entity: str | None,
    event_type: str,
    body: Body,
    audience: Audience | None = None,
) -> int:
    """Queue `event_type` for every live subscription to it, in the caller's transaction; returns how many.

    `entity` None (provider events) reaches every subscription of the type; otherwise only those of
    that entity or of all entities. `body` may be a callable: it is evaluated only when someone
    listens. Pass the transaction's `audience` when announcing several events in it.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    targets = (audience or Audience(session_or_connection)).targets(event_type, entity)
    if not targets:
        return 0
    data = body() if callable(body) else body
    text = json.dumps(data, separators=(",", ":"), default=str)
    now = datetime.now(UTC)
    session_or_connection.execute(
        _QUEUE_DELIVERIES,
        [
            {
                "id": "msg_" + uuid.uuid4().hex,
                "subscription_id": target,
                "job_id": job_id,
                "event_type": event_type,
                "body": text,
                "occurred_at": now,
                "state": DeliveryState.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
            }
            for target in targets
        ],
    )
    return len(targets)


def job_snapshot(session_or_connection: Session | Connection, job_id: str) -> dict[str, Any]:
    """The job row as JSON-able column values, read inside the announcing transaction."""
    row = session_or_connection.execute(sa.select(Job.__table__).where(Job.__table__.c.id == job_id)).mappings().one()
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def job_from_snapshot(data: Mapping[str, Any]) -> Job:
    """A detached Job equal to the snapshotted row, for rendering the status JSON of that moment."""
    columns = Job.__table__.columns
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in columns:
            continue
        if isinstance(columns[key].type, Timestamp) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        values[key] = value
    return Job(**values)


def announce_state(
    session_or_connection: Session | Connection,
    *,
    job_id: str,
    entity: str,
    to_state: str,
    kind: str = "invoice",
    audience: Audience | None = None,
) -> int:
    """Announce a job's arrival in `to_state`, if the contract has an event for it."""
    event_type = STATE_EVENTS.get((kind, to_state))
    if event_type is None:
        return 0
    return announce(
        session_or_connection,
        job_id=job_id,
        entity=entity,
        event_type=event_type,
        body=lambda: job_snapshot(session_or_connection, job_id),
        audience=audience,
    )


# ---------------------------------------------------------------- subscriptions


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def add_subscription(
    session: Session,
    secret: ServerSecret,
    *,
    url: str,
    events: Sequence[str],
    entity: str | None,
    actor: str,
) -> tuple[WebhookSubscription, str]:
    """A new subscription and its signing secret (returned once, stored encrypted)."""
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown or not events:
        raise ValueError(f"unknown events {', '.join(unknown) or '(none given)'}; known: {', '.join(EVENT_TYPES)}")
    signing = new_signing_secret()
    row = WebhookSubscription(
        id="wh_" + secrets.token_hex(6),
        url=url,
        events=",".join(dict.fromkeys(events)),
        entity=entity or None,
        secret=secret.seal(signing),
        created_at=datetime.now(UTC),
        created_by=actor,
    )
    session.add(row)
    audit(
        session, actor=actor, action="webhook.add", target=row.id, detail=f"events={row.events} entity={entity or '*'}"
    )
    return row, signing


def list_subscriptions(session: Session) -> list[WebhookSubscription]:
    return list(session.scalars(sa.select(WebhookSubscription).order_by(WebhookSubscription.created_at)))


def remove_subscription(session: Session, subscription_id: str, *, actor: str) -> bool:
    """Delete a subscription and its deliveries; False when there is none with that id."""
    session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id))
    result = session.execute(sa.delete(WebhookSubscription).where(WebhookSubscription.id == subscription_id))
    removed = _rowcount(result) == 1
    audit(
        session, actor=actor, action="webhook.remove", target=subscription_id, outcome="ok" if removed else "not_found"
    )
    return removed


def list_deliveries(session: Session, *, failed: bool = False, limit: int = 100) -> list[WebhookDelivery]:
    """Newest first; `failed`: dead letters and deliveries that have failed at least once."""
    query = sa.select(WebhookDelivery).order_by(WebhookDelivery.occurred_at.desc(), WebhookDelivery.id).limit(limit)
    if failed:
        query = query.where(
            sa.or_(
                WebhookDelivery.state == DeliveryState.DEAD.value,
                sa.and_(WebhookDelivery.state == DeliveryState.PENDING.value, WebhookDelivery.attempts > 0),
            )
        )
    return list(session.scalars(query))


class ReplayRefused(ValueError):
    pass


def replay(session: Session, delivery_id: str, *, actor: str) -> WebhookDelivery:
    """Send a delivery again now, with its original id and body (a dead letter, or one a receiver lost)."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        raise LookupError(f"no delivery {delivery_id}")
    sub = session.get(WebhookSubscription, row.subscription_id)
    if sub is None or sub.disabled_at is not None:
        reason = sub.disabled_reason if sub else "removed"
        raise ReplayRefused(f"subscription {row.subscription_id} is disabled ({reason}); add it again")
    row.state = DeliveryState.PENDING.value
    row.attempts = 0
    row.next_attempt_at = datetime.now(UTC)
    row.last_error = None
    audit(session, actor=actor, action="webhook.replay", target=delivery_id)
    return row


# ------------------------------------------------------------------- delivering


@dataclass(frozen=True)
class Outgoing:
    """What a worker needs to post one delivery."""

    id: str
    subscription_id: str
    url: str
    sealed_secret: str
    job_id: str | None
    event_type: str
    body: str
    occurred_at: datetime
    attempts: int


# The statements every sweep and every batch runs, built once with bound parameters (see
# models/steps.py): building one costs SQLAlchemy more than executing it.
_DELIVERIES = table(WebhookDelivery)
_PENDING = DeliveryState.PENDING.value


@functools.cache
def _take_due_statement(skip_locked: bool) -> sa.Update:
    conditions = [_DELIVERIES.c.state == _PENDING, _DELIVERIES.c.next_attempt_at <= sa.bindparam("now")]
    returning = [_DELIVERIES.c.id, _DELIVERIES.c.subscription_id]
    return take_due_statement(_DELIVERIES, conditions, returning, skip_locked=skip_locked)


_OUTGOING = (
    sa.select(
        _DELIVERIES.c.id,
        _SUBSCRIPTIONS.c.id,
        _SUBSCRIPTIONS.c.url,
        _SUBSCRIPTIONS.c.secret,
        _DELIVERIES.c.job_id,
        _DELIVERIES.c.event_type,
        _DELIVERIES.c.body,
        _DELIVERIES.c.occurred_at,
        _DELIVERIES.c.attempts,
    )
    .join_from(_DELIVERIES, _SUBSCRIPTIONS, _SUBSCRIPTIONS.c.id == _DELIVERIES.c.subscription_id)
    .where(
        _DELIVERIES.c.id.in_(sa.bindparam("ids", expanding=True)),
        _DELIVERIES.c.state == _PENDING,
        _SUBSCRIPTIONS.c.disabled_at.is_(None),
    )
)
_RECORD_DELIVERED = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("w_id"), _DELIVERIES.c.state == _PENDING)
    .values(
        state=DeliveryState.DELIVERED.value,
        attempts=_DELIVERIES.c.attempts + 1,
        delivered_at=sa.bindparam("now"),
        next_attempt_at=None,
        last_status=sa.bindparam("v_status"),
        last_error=None,
    )
)
_RECORD_FAILED = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("w_id"), _DELIVERIES.c.state == _PENDING)
    .values(
        state=sa.bindparam("v_state"),
        attempts=_DELIVERIES.c.attempts + 1,
        next_attempt_at=sa.bindparam("v_next"),
        last_status=sa.bindparam("v_status"),
        last_error=sa.bindparam("v_error"),
    )
)


def take_due(conn: Session | Connection, *, limit: int, lease: timedelta, skip_locked: bool) -> list[tuple[str, str]]:
    """Claim up to `limit` due deliveries and push their schedule `lease` on, in one statement.

    Returns (delivery id, subscription id) pairs, so the sweep can group a subscription's deliveries
    without reading them again. A claimed delivery whose worker dies becomes due again when the lease
    runs out. When nothing is due this is one indexed statement that touches no row, so a sweep
    every second costs nothing.
    """
    now = datetime.now(UTC)
    rows = conn.execute(_take_due_statement(skip_locked), {"now": now, "until": now + lease, "limit": limit})
    return [(row[0], row[1]) for row in rows]


def outgoing_many(conn: Session | Connection, ids: Sequence[str]) -> list[Outgoing]:
    """The pending deliveries among `ids` whose subscription is live, in the order of `ids`.

    One query for a whole batch; a delivery already finished (a duplicate message) or whose
    subscription was disabled is left out, so there is nothing to send for it.
    """
    found = {row[0]: Outgoing(*row) for row in conn.execute(_OUTGOING, {"ids": list(ids)})}
    return [found[i] for i in dict.fromkeys(ids) if i in found]


class Failure(NamedTuple):
    """A failed attempt: due again at `next_attempt_at`, or a dead letter when that is None."""

    delivery_id: str
    status: int | None
    error: str
    next_attempt_at: datetime | None


def record_delivered(conn: Session | Connection, delivered: Sequence[tuple[str, int]]) -> None:
    """Mark (delivery id, HTTP status) pairs delivered; one that is no longer pending is left alone."""
    if delivered:
        now = datetime.now(UTC)
        conn.execute(_RECORD_DELIVERED, [{"w_id": i, "v_status": status, "now": now} for i, status in delivered])


def record_failed(conn: Session | Connection, failures: Sequence[Failure]) -> None:
    """Count failed attempts and schedule their retries (or give them up); a delivery no longer
    pending is left alone."""
    if failures:
        conn.execute(
            _RECORD_FAILED,
            [
                {
                    "w_id": f.delivery_id,
                    "v_state": (DeliveryState.PENDING if f.next_attempt_at else DeliveryState.DEAD).value,
                    "v_next": f.next_attempt_at,
                    "v_status": f.status,
                    "v_error": f.error[:500],
                }
                for f in failures
            ],
        )


def disable_subscription(conn: Session | Connection, subscription_id: str, reason: str) -> int:
    """Stop posting to a subscription; its pending deliveries become dead letters (replayable once re-added)."""
    now = datetime.now(UTC)
    conn.execute(
        sa.update(_SUBSCRIPTIONS)
        .where(_SUBSCRIPTIONS.c.id == subscription_id, _SUBSCRIPTIONS.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
    )
    result = conn.execute(
        sa.update(_DELIVERIES)
        .where(_DELIVERIES.c.subscription_id == subscription_id, _DELIVERIES.c.state == _PENDING)
        .values(state=DeliveryState.DEAD.value, next_attempt_at=None, last_error=reason)
    )
    return _rowcount(result)


def announce_pause(
    conn: Session | Connection,
    event_type: str,
    provider: str,
    kind: str,
    reason: str,
    at: datetime,
    until: datetime | None,
) -> None:
    """`provider.paused` / `provider.resumed`, to every subscription of the type (no entity)."""
    body = {
        "provider": provider,
        "kind": kind,
        "reason": reason,
        "at": at.isoformat(),
        "until": until.isoformat() if until else None,
    }
    announce(conn, job_id=None, entity=None, event_type=event_type, body=body)


def dead_letters(session: Session) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.state == DeliveryState.DEAD.value)
        )
        or 0
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
