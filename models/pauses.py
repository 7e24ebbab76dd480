"""The breaker of each provider, in one table that every process reads: pauses and failure counts.

A provider that refuses our credentials, or keeps failing, is paused for every worker at once.
Credentials refused (`auth`): until an operator resumes it, because some providers lock an account
after a few bad logins. Provider down (`outage`, contingency): one probe per wait, and the first
answer closes the breaker. Quota spent (`quota`, MSeller's monthly plan): until the quota renews,
or until an operator resumes it after changing the plan. Consecutive failed calls are counted in
the same row (`closed`), so the count is the same whichever process made the calls.

Steps read the breaker through a cache of about a second, so checking it costs no transaction per
job; every change is written in the transaction of the step that observed it.

Login guard, for providers that lock an account after a few refused logins (Prodigia: 3). The cache
would let every busy worker make a call with wrong credentials before the first refusal pauses the
provider, and each call is a login. So for such a provider, until one call has been answered since
the breaker row was created (first use, or `einvoice resume`, which deletes it), only the step that
wins `claim_login` may call: a compare-and-set on the row, uncached, that lends it `until` as a
lease. The answer confirms the credentials (`reason` becomes LOGINS_CONFIRMED) and from then on
calls go out in parallel; a refusal pauses the provider; any other failure hands the lease back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from models.database import Database, rowcount
from models.schema import Job, ProviderPause
from models.webhooks import announce_pause

AUTH_PAUSE = "auth"
OUTAGE_PAUSE = "outage"
QUOTA_PAUSE = "quota"
CLOSED = "closed"

LOGINS_CONFIRMED = "logins confirmed"
"""`reason` of a closed breaker whose provider has answered a login since the row was created."""

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

    @property
    def logins_confirmed(self) -> bool:
        return self.kind == CLOSED and self.reason == LOGINS_CONFIRMED

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
    guarded: bool = False
    """The call was made under the login guard: an answer confirms the credentials, a failure
    hands back the guard's lease."""
    failures: int = 1
    """Documents the failure kept from the provider: a batch's unanswered call and the calls it
    held back each count, so a batch opens the breaker as soon as as many single calls would."""


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
        with self.db.connection() as conn:
            rows = {row.provider: _info(row) for row in conn.execute(sa.select(*ProviderPause.__table__.columns))}
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
        with self.db.connection() as conn:
            changed = self.apply(conn, Health(provider, "auth", reason), _NO_POLICY)
        self.forget_cache()
        return changed

    def pause_for_outage(self, provider: str, reason: str, until: datetime) -> bool:
        """Enter contingency for `provider` unless it is paused already; True if this call paused it."""
        now = self.db.clock()
        with self.db.connection() as conn:
            _ensure_row(conn, provider, now)
            result = conn.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == provider, ProviderPause.kind == CLOSED)
                .values(kind=OUTAGE_PAUSE, reason=reason, since=now, until=until, probes=0, updated_at=now)
            )
            return self._paused(
                conn, Health(provider, "failed", reason), OUTAGE_PAUSE, rowcount(result) == 1, now, until
            )

    def claim_probe(self, provider: str, policy: BreakerPolicy) -> bool:
        """Take the right to send the one probe to a provider in outage whose wait is over.

        The wait is pushed on at once (compare-and-set on `until`), so concurrent steps and sweeps
        see the provider blocked again while the probe is out.
        """
        now = self.db.clock()
        with self.db.connection() as conn:
            probes = conn.scalar(
                sa.select(ProviderPause.probes).where(
                    ProviderPause.provider == provider, ProviderPause.kind == OUTAGE_PAUSE, ProviderPause.until <= now
                )
            )
            if probes is None:
                return False
            result = conn.execute(
                sa.update(ProviderPause)
                .where(
                    ProviderPause.provider == provider, ProviderPause.kind == OUTAGE_PAUSE, ProviderPause.until <= now
                )
                .values(until=now + _probe_wait(policy, probes), updated_at=now)
            )
        self.forget_cache()
        return rowcount(result) == 1

    def claim_login(self, provider: str, lease: timedelta) -> Literal["confirmed", "won", "held"]:
        """May a step call a login-guarded provider now? Uncached, because the cache is the hole.

        "confirmed": its credentials were answered since the last resume, call freely; "won": this
        step makes the one call allowed while they are unconfirmed (for at most `lease`); "held":
        another step's call is out, or the provider is paused, so wait.
        """
        now = self.db.clock()
        with self.db.connection() as conn:
            _ensure_row(conn, provider, now)
            result = conn.execute(
                sa.update(ProviderPause)
                .where(
                    ProviderPause.provider == provider,
                    ProviderPause.kind == CLOSED,
                    ProviderPause.reason != LOGINS_CONFIRMED,
                    sa.or_(ProviderPause.until.is_(None), ProviderPause.until <= now),
                )
                .values(until=now + lease, updated_at=now)
            )
            won = rowcount(result) == 1
            row = (
                None
                if won
                else conn.execute(
                    sa.select(*ProviderPause.__table__.columns).where(ProviderPause.provider == provider)
                ).first()
            )
            confirmed = row is not None and _info(row).logins_confirmed
        self.forget_cache()
        if won:
            return "won"
        return "confirmed" if confirmed else "held"

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
            announce_pause(
                session, "provider.resumed", provider, info.kind, "resumed by an operator", self.db.clock(), None
            )
        self.forget_cache()
        return info

    # ------------------------------------------------- inside a step's transaction

    def apply(self, conn: Connection, health: Health, policy: BreakerPolicy) -> bool:
        """Write what a step learnt about its provider, in the step's own transaction.

        Returns True when the breaker changed kind (paused, or closed again), which is worth a log
        line. An answer writes nothing unless there is something to undo (failures counted, an
        outage), so the common path costs no statement.
        """
        now = self.db.clock()
        known = self.breakers().get(health.provider)
        if health.outcome == "answered":
            confirm = health.guarded and (known is None or not known.logins_confirmed)
            if not confirm and (
                known is None or (known.kind == CLOSED and known.failures == 0) or known.kind == AUTH_PAUSE
            ):
                return False
            values: dict[str, object] = {"kind": CLOSED, "failures": 0, "probes": 0, "until": None, "updated_at": now}
            if health.guarded:
                _ensure_row(conn, health.provider, now)
                values["reason"] = LOGINS_CONFIRMED
            result = conn.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(**values)
            )
            self.forget_cache()
            reopened = known is not None and known.kind == OUTAGE_PAUSE and rowcount(result) == 1
            if reopened:
                announce_pause(conn, "provider.resumed", health.provider, OUTAGE_PAUSE, "provider answered", now, None)
            return reopened
        if health.outcome == "quota":
            _ensure_row(conn, health.provider, now)
            result = conn.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=QUOTA_PAUSE, reason=health.reason[:300], since=now, until=health.until, updated_at=now)
            )
            return self._paused(conn, health, QUOTA_PAUSE, rowcount(result) == 1, now, health.until)
        if health.outcome == "auth":
            _ensure_row(conn, health.provider, now)
            result = conn.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind != AUTH_PAUSE)
                .values(kind=AUTH_PAUSE, reason=health.reason[:300], since=now, until=None, probes=0, updated_at=now)
            )
            return self._paused(conn, health, AUTH_PAUSE, rowcount(result) == 1, now, None)
        if known is not None and known.kind == OUTAGE_PAUSE:
            # Only a probe gets through an outage: it failed, so wait longer before the next one.
            conn.execute(
                sa.update(ProviderPause)
                .where(ProviderPause.provider == health.provider, ProviderPause.kind == OUTAGE_PAUSE)
                .values(
                    probes=ProviderPause.probes + 1,
                    until=now + _probe_wait(policy, known.probes + 1),
                    updated_at=now,
                )
            )
            self.forget_cache()
            return False
        if health.guarded:
            # The guarded call failed without a verdict on the credentials: the next may go.
            conn.execute(
                sa.update(ProviderPause)
                .where(
                    ProviderPause.provider == health.provider,
                    ProviderPause.kind == CLOSED,
                    ProviderPause.reason != LOGINS_CONFIRMED,
                )
                .values(until=None, updated_at=now)
            )
        failures = _count_failure(conn, health.provider, now, health.failures)
        if failures < policy.open_after_failures:
            return False
        result = conn.execute(
            sa.update(ProviderPause)
            .where(ProviderPause.provider == health.provider, ProviderPause.kind == CLOSED)
            .values(
                kind=OUTAGE_PAUSE,
                reason=f"{failures} consecutive failures; last: {health.reason}"[:300],
                since=now,
                until=now + policy.probe_base,
                probes=0,
                updated_at=now,
            )
        )
        return self._paused(conn, health, OUTAGE_PAUSE, rowcount(result) == 1, now, now + policy.probe_base)

    def _paused(
        self, conn: Connection, health: Health, kind: str, changed: bool, now: datetime, until: datetime | None
    ) -> bool:
        self.forget_cache()
        if changed:
            announce_pause(conn, "provider.paused", health.provider, kind, health.reason[:300], now, until)
        return changed


_NO_POLICY = BreakerPolicy(open_after_failures=1 << 30, probe_base=timedelta(0), probe_cap=timedelta(0))


def _upsert(conn: Connection) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return sqlite.Insert if conn.dialect.name == "sqlite" else postgresql.Insert


def _ensure_row(conn: Connection, provider: str, now: datetime) -> None:
    insert = _upsert(conn)(ProviderPause).values(
        provider=provider, kind=CLOSED, reason="", since=now, until=None, probes=0, failures=0, updated_at=now
    )
    conn.execute(insert.on_conflict_do_nothing(index_elements=["provider"]))


def _count_failure(conn: Connection, provider: str, now: datetime, count: int) -> int:
    insert = _upsert(conn)(ProviderPause).values(
        provider=provider, kind=CLOSED, reason="", since=now, until=None, probes=0, failures=count, updated_at=now
    )
    statement = insert.on_conflict_do_update(
        index_elements=["provider"],
        set_={"failures": ProviderPause.failures + count, "updated_at": now},
    ).returning(ProviderPause.failures)
    return int(conn.execute(statement).scalar_one())


def _info(row: ProviderPause | sa.Row[Any]) -> PauseInfo:
    return PauseInfo(row.provider, row.kind, row.reason, row.since, row.until, row.probes, row.failures)


def _probe_wait(policy: BreakerPolicy, probes: int) -> timedelta:
    wait: timedelta = policy.probe_base * (2 ** min(probes, 20))
    return min(policy.probe_cap, wait)
