"""What every part of the store shares: the engine, one way to open a transaction, the clock.

The clock is injected so that the workflow can run in-process against SQLite with a fixed time,
and every `now` the store writes comes from the same place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import is_sqlite

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TransitionInfo:
    """What observers (metrics, outbox) learn of a committed transition, without another query."""

    job_id: str
    kind: str
    provider: str
    from_state: str | None
    to_state: str
    created_at: datetime
    polls: int


TransitionObserver = Callable[[TransitionInfo], None]


class Database:
    """The engine and its sessions; every store concern is built on one of these."""

    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.skip_locked = not is_sqlite(engine)
        self.observers: list[TransitionObserver] = []

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on leaving the block, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction on a plain connection, for the paths every step takes (claim, record,
        sweep, intake): they write with single statements and need none of the ORM's unit of work,
        whose bookkeeping was most of the store's CPU per invoice."""
        with self.engine.begin() as conn:
            yield conn

    def notify(self, infos: list[TransitionInfo]) -> None:
        """Tell observers about transitions, after their transaction committed."""
        for info in infos:
            for observer in list(self.observers):
                observer(info)


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were written in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
