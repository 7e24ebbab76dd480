"""Tables: jobs, their payloads (kept apart: up to 40 MB each), append-only events, archived files."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity for the
# fastest-growing table.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Timestamp(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend; SQLite has no time zones, so it stores naive UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One piece of work on its way through a provider: an invoice, an addenda, a download request.

    `kind` names the workflow that gives `state` its meaning (see `models.states.MACHINES`);
    `state` only changes through the store's compare-and-set updates. `parent_id` links a job that
    another one started (the addenda of an invoice, the halves of a split download request).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("provider", "entity", "internal_id", name="uq_jobs_provider_entity_internal_id"),
        sa.Index("ix_jobs_due", "state", "next_attempt_at"),
        sa.Index("ix_jobs_internal_id", "internal_id"),
        sa.Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32), default="invoice")
    parent_id: Mapped[str | None] = mapped_column(sa.String(36))
    provider: Mapped[str] = mapped_column(sa.String(32))
    entity: Mapped[str] = mapped_column(sa.String(64))
    internal_id: Mapped[str] = mapped_column(sa.String(50))
    state: Mapped[str] = mapped_column(sa.String(16))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    provider_request_id: Mapped[str | None] = mapped_column(sa.String(100))
    adopted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    polls: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp())
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp())
    deadline_at: Mapped[datetime | None] = mapped_column(Timestamp())
    created_at: Mapped[datetime] = mapped_column(Timestamp())
    updated_at: Mapped[datetime] = mapped_column(Timestamp())
    state_changed_at: Mapped[datetime] = mapped_column(Timestamp())
    submitted_at: Mapped[datetime | None] = mapped_column(Timestamp())
    issued_at: Mapped[datetime | None] = mapped_column(Timestamp())
    # When the poll that saw the document issued was due (it ran at `issued_at`, later if the
    # workers were behind): the processing time is learnt from it (`Stats.processing_samples`).
    poll_due_at: Mapped[datetime | None] = mapped_column(Timestamp())
    doc_guid: Mapped[str | None] = mapped_column(sa.String(100))
    doc_year: Mapped[int | None] = mapped_column(sa.Integer)
    doc_batch: Mapped[str | None] = mapped_column(sa.String(100))
    doc_serial: Mapped[str | None] = mapped_column(sa.String(100))
    doc_fiscal_id: Mapped[str | None] = mapped_column(sa.String(64))
    doc_extra: Mapped[dict[str, str] | None] = mapped_column(sa.JSON)
    xml_url: Mapped[str | None] = mapped_column(sa.Text)
    pdf_url: Mapped[str | None] = mapped_column(sa.Text)
    links_expires_at: Mapped[datetime | None] = mapped_column(Timestamp())
    links_refreshed_at: Mapped[datetime | None] = mapped_column(Timestamp())
    error_class: Mapped[str | None] = mapped_column(sa.String(32))
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.Text)


class Payload(Base):
    """The ERP's document, read only by the submit step; never loaded with the job row."""

    __tablename__ = "payloads"

    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    content: Mapped[bytes] = mapped_column(sa.LargeBinary)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)


class Event(Base):
    """An append-only record of a transition, an error, a retry or a link refresh. Never updated."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(Timestamp())
    kind: Mapped[str] = mapped_column(sa.String(16))
    from_state: Mapped[str | None] = mapped_column(sa.String(16))
    to_state: Mapped[str | None] = mapped_column(sa.String(16))
    actor: Mapped[str] = mapped_column(sa.String(64))
    attempt: Mapped[int | None] = mapped_column(sa.Integer)
    error_class: Mapped[str | None] = mapped_column(sa.String(32))
    provider_code: Mapped[str | None] = mapped_column(sa.String(64))
    message: Mapped[str | None] = mapped_column(sa.Text)


class ProviderPause(Base):
    """The breaker of one provider, shared by every worker through the database.

    `closed`: calls flow; `failures` counts consecutive failures (`Health.failures`), and enough of
    them open the breaker. `auth`: the provider refused our credentials; calling again could lock
    the account, so the pause lasts until an operator resumes it (`until` is NULL). `outage`: the
    provider kept failing; one probe is let through whenever `until` passes, and its success
    closes the breaker.
    """

    __tablename__ = "provider_pauses"

    provider: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    since: Mapped[datetime] = mapped_column(Timestamp())
    until: Mapped[datetime | None] = mapped_column(Timestamp())
    probes: Mapped[int] = mapped_column(sa.Integer, default=0)
    failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(Timestamp())


class Artifact(Base):
    """A file archived from the provider (XML, PDF, answer), so a copy outlives the provider's links."""

    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("job_id", "kind", name="uq_artifacts_job_kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.Text)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    content_type: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp())


def table(model: type[Base]) -> sa.Table:
    """The Core table of a model, for statements built once and run on every step: the ORM's
    per-statement bookkeeping is what those paths save."""
    found = model.__table__
    assert isinstance(found, sa.Table)
    return found


def take_due_statement(
    rows: sa.Table,
    conditions: Sequence[sa.ColumnElement[bool]],
    returning: Sequence[sa.ColumnElement[Any]],
    *,
    skip_locked: bool,
) -> sa.Update:
    """Claim up to `:limit` due rows of an outbox-like table, oldest `next_attempt_at` first, and
    push their schedule to `:until` in the same statement, so that a second sweep skips them.

    With `skip_locked` (PostgreSQL) concurrent sweeps never wait for, nor take, each other's rows.
    """
    due = (
        sa.select(rows.c.id)
        .where(*conditions)
        .order_by(rows.c.next_attempt_at)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        sa.update(rows)
        .where(rows.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=sa.bindparam("until"))
        .returning(*returning)
    )
