"""The monthly half of an MSeller plan: counted requests per calendar month (UTC).

MSeller counts every call that carries `X-API-KEY` and, once the month's figure is spent, answers
429 to everything until the 1st at 00:00 UTC. The count has to be shared by every worker and
survive restarts, so the real one lives in the database (`models.usage.DatabaseBudget`);
providers stay pure I/O and only see the `MonthlyBudget` protocol. The client takes a request from
the budget *before* each counted call: a call that fails on the way still may have been counted by
MSeller, so counting early errs on the side of stopping a little before the provider would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from providers.base import RateLimitedError


def month_of(now: datetime) -> str:
    """The quota month a moment belongs to, as `YYYY-MM` in UTC."""
    return now.astimezone(UTC).strftime("%Y-%m")


def next_month_start(now: datetime) -> datetime:
    """Day 1 at 00:00 UTC of the month after `now`: when MSeller resets the quota."""
    current = now.astimezone(UTC)
    if current.month == 12:
        return datetime(current.year + 1, 1, 1, tzinfo=UTC)
    return datetime(current.year, current.month + 1, 1, tzinfo=UTC)


def seconds_to_next_month(now: datetime) -> float:
    return max(1.0, (next_month_start(now) - now.astimezone(UTC)).total_seconds())


class AccountPausedError(RateLimitedError):
    """The month's requests are spent (our count or MSeller's 429): the whole account must stop.

    Unlike an ordinary RateLimitedError this is not about one job or a short burst: no call of any
    job can succeed before `resume_at` (the next month), or before an operator moves the account
    to a larger plan and resumes the provider.
    """

    account_paused = True

    def __init__(self, message: str, *, resume_at: datetime, code: str | None = None, description: str | None = None):
        super().__init__(
            message,
            code=code,
            description=description,
            retry_after=seconds_to_next_month(datetime.now(UTC)),
        )
        self.resume_at = resume_at


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


class InProcessBudget:
    """The monthly count in this process's memory: for tests, benchmarks and the embedded default."""

    def __init__(self, limit: int, *, provider: str = "mseller", clock: Callable[[], datetime] | None = None) -> None:
        self.limit = limit
        self.provider = provider
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._month = ""
        self._used = 0

    def __repr__(self) -> str:
        return f"InProcessBudget(limit={self.limit}, used={self._used}, month={self._month!r})"

    def take(self, n: int = 1) -> None:
        now = self._clock()
        with self._lock:
            self._roll(now)
            if self.limit > 0 and self._used + n > self.limit:
                raise exhausted(self.provider, self._used, self.limit, now)
            self._used += n

    def usage(self) -> tuple[int, int]:
        with self._lock:
            self._roll(self._clock())
            return self._used, self.limit

    def _roll(self, now: datetime) -> None:
        month = month_of(now)
        if month != self._month:
            self._month, self._used = month, 0


BudgetFactory = Callable[[str, int], MonthlyBudget]
"""Builds the budget of (provider, monthly limit); the worker registers the database-backed one."""

_factory: BudgetFactory | None = None


def use_budget_factory(factory: BudgetFactory | None) -> None:
    """Where `from_env` clients get their monthly budget; None returns to the in-process count.

    The worker registers `models.usage.DatabaseBudget` at start-up so that every process shares one
    count without `providers/` importing the database layer.
    """
    global _factory
    _factory = factory


def make_budget(provider: str, limit: int) -> MonthlyBudget:
    if _factory is not None:
        return _factory(provider, limit)
    return InProcessBudget(limit, provider=provider)
