"""The monthly half of an MSeller plan: counted requests per calendar month (UTC).

MSeller counts every call that carries `X-API-KEY` and, once the month's figure is spent, answers
429 to everything until the 1st at 00:00 UTC. The count has to be shared by every worker and
survive restarts, so the real one lives in the database (`models.usage.DatabaseUsage`);
providers stay pure I/O and only see the `MonthlyBudget` protocol. The client takes a request from
the budget *before* each counted call: a call that fails on the way still may have been counted by
MSeller, so counting early errs on the side of stopping a little before the provider would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from providers.base import AccountPaused


def month_of(now: datetime) -> str:
    """The quota month a moment belongs to, as `YYYY-MM` in UTC."""
    return now.astimezone(UTC).strftime("%Y-%m")


def next_month_start(now: datetime) -> datetime:
    """Day 1 at 00:00 UTC of the month after `now`: when MSeller resets the quota."""
    current = now.astimezone(UTC)
    if current.month == 12:
        return datetime(current.year + 1, 1, 1, tzinfo=UTC)
    return datetime(current.year, current.month + 1, 1, tzinfo=UTC)


class AccountPausedError(AccountPaused):
    """The month's requests are spent (our count or MSeller's 429): the whole account must stop.

    Unlike an ordinary RateLimitedError this is not about one job or a short burst: no call of any
    job can succeed before `resume_at` (the next month), or before an operator moves the account
    to a larger plan and resumes the provider.
    """

    account_paused = True


def exhausted(provider: str, used: int, limit: int, now: datetime) -> AccountPausedError:
    resume_at = next_month_start(now)
    return AccountPausedError(
        f"{provider}: the plan's {limit} requests for {month_of(now)} are spent ({used} used); "
        f"calls resume on {resume_at:%Y-%m-%d} 00:00 UTC or after a plan change",
        code="MONTHLY_BUDGET",
        resume_at=resume_at,
    )


class MonthlyBudget(Protocol):
    """Counted requests of one account for the current month, shared by whoever calls the provider."""

    def take(self, n: int = 1) -> None:
        """Count `n` requests about to be made; AccountPausedError if they would pass the limit."""
        ...

    def usage(self) -> tuple[int, int]:
        """(requests used this month, monthly limit; 0 = unlimited), for gauges and reports."""
        ...


class UsageStore(Protocol):
    """Where the monthly counts live; `models.usage.DatabaseUsage` is the shared one.

    `add` must be atomic: check and increment in one step, so that concurrent workers can never
    together pass the limit.
    """

    def add(self, provider: str, month: str, n: int, limit: int) -> int | None:
        """Add `n` to the month's count and return the new count, or None (and add nothing) when the
        count would pass `limit`; a limit of 0 means none."""
        ...

    def used(self, provider: str, month: str) -> int: ...


class MemoryUsage:
    """Monthly counts in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, provider: str, month: str, n: int, limit: int) -> int | None:
        with self._lock:
            current = self._counts.get((provider, month), 0)
            if limit > 0 and current + n > limit:
                return None
            self._counts[(provider, month)] = current + n
            return current + n

    def used(self, provider: str, month: str) -> int:
        with self._lock:
            return self._counts.get((provider, month), 0)


class PlanBudget:
    """A `MonthlyBudget` over a `UsageStore`: the month is the UTC calendar month of the clock."""

    def __init__(
        self, store: UsageStore, limit: int, *, provider: str = "mseller", clock: Callable[[], datetime] | None = None
    ) -> None:
        self.store = store
        self.limit = limit
        self.provider = provider
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, limit={self.limit})"

    def take(self, n: int = 1) -> None:
        now = self._clock()
        if self.store.add(self.provider, month_of(now), n, self.limit) is None:
            raise exhausted(self.provider, self.store.used(self.provider, month_of(now)), self.limit, now)

    def usage(self) -> tuple[int, int]:
        return self.store.used(self.provider, month_of(self._clock())), self.limit


class InProcessBudget(PlanBudget):
    """The monthly count in this process's memory: for tests, benchmarks and the embedded default."""

    def __init__(self, limit: int, *, provider: str = "mseller", clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(MemoryUsage(), limit, provider=provider, clock=clock)


BudgetFactory = Callable[[str, int], MonthlyBudget]
"""Builds the budget of (provider, monthly limit); the worker registers the database-backed one."""

_factory: BudgetFactory | None = None


def use_budget_factory(factory: BudgetFactory | None) -> None:
    """Where `from_env` clients get their monthly budget; None returns to the in-process count.

    The worker registers `PlanBudget(models.usage.DatabaseUsage(engine), …)` at start-up so that
    every process shares one count without `providers/` importing the database layer.
    """
    global _factory
    _factory = factory


def make_budget(provider: str, limit: int) -> MonthlyBudget:
    if _factory is not None:
        return _factory(provider, limit)
    return InProcessBudget(limit, provider=provider)
