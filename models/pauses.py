"""The breaker of each provider, in one table that every process reads: pauses and failure counts.

A provider that refuses our credentials, or keeps failing, is paused for every worker at once.
Credentials refused (`auth`): until an operator resumes it, because some providers lock an account
after a few bad logins. Provider down (`outage`, contingency): one probe per wait, and the first
answer closes the breaker. Quota spent (`quota`, MSeller's monthly plan): until the quota renews,
or until an operator resumes it after changing the plan. Consecutive failed calls are counted in
the same row (`closed`), so the count is the same whichever process made the calls.

Steps read the breaker through a cache of about a second, so checking it costs no transaction per
job; every change is written in the transaction of the step that observed it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.database import Database, rowcount
from models.schema import Job, ProviderPause

AUTH_PAUSE = "auth"
OUTAGE_PAUSE = "outage"
QUOTA_PAUSE = "quota"
CLOSED = "closed"

CACHE_SECONDS = 1.0
"""How stale a step's view of the breakers may be. A pause takes effect everywhere within this."""


@dataclass(frozen=True)
class PauseInfo:
    """A provider's breaker as callers see it (see `models.schema.ProviderPause`)."""

    provider: str
    kind: str
    reason: str
    since: datetime
    until: datetime | None
    probes: int
    failures: int = 0

    @property
    def paused(self) -> bool:
        return self.kind != CLOSED

    def blocks(self, now: datetime, *, probe: bool = False) -> bool:
        """Whether a call to the provider must not be made now.

        An auth pause blocks everything. An outage pause blocks until `until`, except the probe;
        once `until` has passed, the step that claims the probe (`claim_probe`) makes the call.
        """
        if self.kind == AUTH_PAUSE:
            return True
        if self.kind == OUTAGE_PAUSE:
            return not probe and self.until is not None and self.until > now
        if self.kind == QUOTA_PAUSE:
            return self.until is None or self.until > now
        return False


@dataclass(frozen=True)
class BreakerPolicy:
    """When failures open the breaker and how often a provider in outage is probed."""

    open_after_failures: int
    probe_base: timedelta
    probe_cap: timedelta


@dataclass(frozen=True)
class Health:
    """What one step learnt about its provider: it answered, it failed, or it refused our credentials."""

    provider: str
    outcome: Literal["answered", "failed", "auth", "quota"]
    reason: str = ""
    until: datetime | None = None


class Pauses:
    """Reading and changing the breakers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache_lock = threading.Lock()
        self._cache: tuple[float, dict[str, PauseInfo]] | None = None

    # ----------------------------------------------------------------- reading

    def breakers(self, *, fresh: bool = False) -> dict[str, PauseInfo]:
        """Every provider's breaker row, at most `CACHE_SECONDS` old unless `fresh`."""
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache
        if not fresh and cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        with self.db.session() as session:
            rows = {row.provider: _info(row) for row in session.scalars(sa.select(ProviderPause))}
        with self._cache_lock:
            self._cache = (now, rows)
        return rows

    def forget_cache(self) -> None:
        with self._cache_lock:
            self._cache = None

    def provider_pauses(self) -> list[PauseInfo]:
        return sorted((p for p in self.breakers(fresh=True).values() if p.paused), key=lambda p: p.provider)

    def provider_pause(self, provider: str) -> PauseInfo | None:
        info = self.breakers(fresh=True).get(provider)
        return info if info is not None and info.paused else None

    # -------------------------------------------------------- operator and probe

    def pause_for_auth(self, provider: str, reason: str) -> bool:
        """Stop every call to `provider` until an operator resumes it; True if it was not so paused yet."""
        with self.db.session() as session:
            changed = self.apply(session, Health(provider, "auth", reason), _NO_POLICY)
        self.forget_cache()
        return changed

    def pause_for_outage(self, provider: str, reason: str, until: datetime) -> bool:
        """Enter contingency for `provider` unless it is paused already; True if this call paused it."""
        now = self.db.clock()
        with self.db.session() as session:
            _ensure_row(session, provider, now)
            result = session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == provider, ProviderPause.kind == CLOSED)
                .values(kind=OUTAGE_PAUSE, reason=reason, since=now, until=until, probes=0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        self.forget_cache()
        return rowcount(result) == 1

    def claim_probe(self, provider: str, policy: BreakerPolicy) -> bool:
        """Take the right to send the one probe to a provider in outage whose wait is over.

        The wait is pushed on at once (compare-and-set on `until`), so concurrent steps and sweeps
        see the provider blocked again while the probe is out.
        """
        now = self.db.clock()
        with self.db.session() as session:
            probes = session.scalar(
                sa.select(ProviderPause.probes).where(
                    ProviderPause.provider == provider, ProviderPause.kind == OUTAGE_PAUSE, ProviderPause.until <= now
                )
            )
            if probes is None:
                return False
            result = session.execute(
                sa.update(ProviderPause)
                .where(
                    ProviderPause.provider == provider, ProviderPause.kind == OUTAGE_PAUSE, ProviderPause.until <= now
                )
                .values(until=now + _probe_wait(policy, probes), updated_at=now)
                .execution_options(synchronize_session=False)
            )
        self.forget_cache()
        return rowcount(result) == 1

    def resume_provider(self, provider: str) -> PauseInfo | None:
        """An operator lifts whatever pause `provider` has; returns the pause that was lifted.

        A quota pause parks the provider's jobs until it ends (the next month): lifting it early,
        after a plan change, brings those jobs back to now, or they would still wait for the month.
        """
        with self.db.session() as session:
            row = session.get(ProviderPause, provider)
            if row is None or row.kind == CLOSED:
                return None
            info = _info(row)
            session.delete(row)
            if info.kind == QUOTA_PAUSE and info.until is not None:
                session.execute(
                    sa.update(Job)
                    .where(Job.provider == provider, Job.next_attempt_at >= info.until)
                    .values(next_attempt_at=self.db.clock())
                    .execution_options(synchronize_session=False)
                )
        self.forget_cache()
        return info

    # ------------------------------------------------- inside a step's transaction

    def apply(self, session: Session, health: Health, policy: BreakerPolicy) -> bool:
        """Write what a step learnt about its provider, in the step's own transaction.

        Returns True when the breaker changed kind (paused, or closed again), which is worth a log
        line. An answer writes nothing unless there is something to undo (failures counted, an
        outage), so the common path costs no statement.
        """
        now = self.db.clock()
        known = self.breakers().get(health.provider)
        if health.outcome == "answered":
            if known is None or (known.kind == CLOSED and known.failures == 0) or known.kind == AUTH_PAUSE:
                return False
            result = session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=CLOSED, failures=0, probes=0, until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            self.forget_cache()
            return known.kind == OUTAGE_PAUSE and rowcount(result) == 1
        if health.outcome == "quota":
            _ensure_row(session, health.provider, now)
            result = session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=QUOTA_PAUSE, reason=health.reason[:300], since=now, until=health.until, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            self.forget_cache()
            return rowcount(result) == 1
        if health.outcome == "auth":
            _ensure_row(session, health.provider, now)
            result = session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=AUTH_PAUSE, reason=health.reason[:300], since=now, until=None, probes=0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            self.forget_cache()
            return rowcount(result) == 1
        if known is not None and known.kind == OUTAGE_PAUSE:
            # Only a probe gets through an outage: it failed, so wait longer before the next one.
            session.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind == OUTAGE_PAUSE)
                .values(
                    probes=ProviderPause.probes + 1,
                    until=now + _probe_wait(policy, known.probes + 1),
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            self.forget_cache()
            return False
        failures = _count_failure(session, health.provider, now)
        if failures < policy.open_after_failures:
            return False
        result = session.execute(
            sa.update(ProviderPause)
            .where(ProviderPause.provider == health.provider, ProviderPause.kind == CLOSED)
            .values(
                kind=OUTAGE_PAUSE,
                reason=f"{failures} consecutive failed calls; last: {health.reason}"[:300],
                since=now,
                until=now + policy.probe_base,
                probes=0,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        self.forget_cache()
        return rowcount(result) == 1


_NO_POLICY = BreakerPolicy(open_after_failures=1 << 30, probe_base=timedelta(0), probe_cap=timedelta(0))


def _upsert(session: Session) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return sqlite.Insert if session.get_bind().dialect.name == "sqlite" else postgresql.Insert


def _ensure_row(session: Session, provider: str, now: datetime) -> None:
    insert = _upsert(session)(ProviderPause).values(
        provider=provider, kind=CLOSED, reason="", since=now, until=None, probes=0, failures=0, updated_at=now
    )
    session.execute(insert.on_conflict_do_nothing(index_elements=["provider"]))


def _count_failure(session: Session, provider: str, now: datetime) -> int:
    insert = _upsert(session)(ProviderPause).values(
        provider=provider, kind=CLOSED, reason="", since=now, until=None, probes=0, failures=1, updated_at=now
    )
    statement = insert.on_conflict_do_update(
        index_elements=["provider"],
        set_={"failures": ProviderPause.failures + 1, "updated_at": now},
    ).returning(ProviderPause.failures)
    return int(session.execute(statement).scalar_one())


def _info(row: ProviderPause) -> PauseInfo:
    return PauseInfo(row.provider, row.kind, row.reason, row.since, row.until, row.probes, row.failures)


def _probe_wait(policy: BreakerPolicy, probes: int) -> timedelta:
    wait: timedelta = policy.probe_base * (2 ** min(probes, 20))
    return min(policy.probe_cap, wait)
