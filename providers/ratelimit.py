"""A provider's request budget, shared by every worker process that calls it.

Providers such as Hacienda (STAG: 100 calls an hour, 1,000 a day) count every call of one
contributor, whichever process made it, so the budget has to live where all processes see it: a
token bucket per plan window in Redis, updated by one Lua script so that taking a token from all
windows is atomic and uses Redis's clock, not the callers' (workers on several hosts disagree about
the time). Without a Redis URL the same buckets live in the process, which is right for a single
worker and for the embedded default.

Each window is a bucket of `burst` tokens refilled at `(limit - burst) / period` tokens a second.
A bucket that starts full can then grant at most `burst + (limit - burst) = limit` calls in any
interval of `period` seconds, so a client that keeps to its plan never meets the provider's quota,
whether the provider counts in fixed or sliding windows. The bound holds for the moments tokens are
granted; requests reach the provider a little later and not all equally late, so a plan with a
short window (tests, per-minute limits) should keep a call or two below the provider's figure.

A 429 means the provider's own count disagrees with ours (another system shares the credentials,
or the plan is wrong), so `pause()` stops every process for the time the provider asked, not just
the job that saw it.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from providers.base import RateLimitedError, TransientError

log = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 86400.0
# The longest wait a Retry-After header may impose.
MAX_RETRY_AFTER = DAY


@dataclass(frozen=True)
class Rate:
    """At most `limit` calls in any `period` seconds, of which `burst` may be made back to back."""

    limit: int
    period: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError("a rate needs limit >= 1 and period > 0")
        if self.burst is not None and not 1 <= self.burst <= max(1, self.limit - 1):
            # burst == limit would leave nothing to refill: the bucket would either stall or,
            # refilled anyway, grant more than `limit` in a window.
            raise ValueError("burst must be between 1 and limit - 1")

    @property
    def capacity(self) -> int:
        """Bucket size: a tenth of the limit unless told, so a cold start cannot spend the window."""
        return self.burst if self.burst is not None else max(1, self.limit // 10)

    @property
    def refill_per_second(self) -> float:
        # A limit of one call per period has no room for a burst: one token per period.
        return max(self.limit - self.capacity, 1) / self.period


def plan(per_hour: int = 0, per_day: int = 0, burst: int | None = None) -> list[Rate]:
    """The usual provider plan; a zero limit means that window is not enforced."""
    rates = []
    for limit, period in ((per_hour, HOUR), (per_day, DAY)):
        if limit > 0:
            rates.append(Rate(limit, period, max(1, min(burst, limit - 1)) if burst else None))
    return rates


# KEYS[1] = pause key, KEYS[2..] = one hash per window.
# ARGV[1] = "take" or "pause"; for take: capacity, refill/s pairs; for pause: seconds.
# Returns the seconds to wait as a string ("0" = token granted): Lua numbers become Redis integers.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == 'pause' then
  local until_ts = now + tonumber(ARGV[2])
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if until_ts > current then
    redis.call('SET', KEYS[1], tostring(until_ts), 'PX', math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
  end
  return tostring(math.max(until_ts, current) - now)
end
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then
  return tostring(paused - now)
end
local wait = 0
local levels = {}
for i = 2, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 2])
  local refill = tonumber(ARGV[2 * i - 1])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * refill)
  levels[i] = tokens
  if tokens < 1 then
    wait = math.max(wait, (1 - tokens) / refill)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i = 2, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 2])
  local refill = tonumber(ARGV[2 * i - 1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / refill * 1000) + 1000)
end
return '0'
"""


class RateLimiter:
    """Token buckets for one provider (and credential), in Redis when `redis_url` is given.

    `acquire()` before every request; `pause()` when the provider answers 429.
    """

    def __init__(
        self,
        name: str,
        redis_url: str | None = None,
        per_hour: int = 0,
        per_day: int = 0,
        burst: int | None = None,
        *,
        rates: Sequence[Rate] | None = None,
        key_prefix: str = "einvoice",
    ) -> None:
        self.name = name
        self.rates: tuple[Rate, ...] = tuple(rates if rates is not None else plan(per_hour, per_day, burst))
        # A hash tag keeps every key of one limiter in one Redis Cluster slot, as Lua requires.
        base = f"{key_prefix}:ratelimit:{{{name}}}"
        self._pause_key = f"{base}:pause"
        self._bucket_keys = [f"{base}:{int(rate.period)}s:{rate.limit}" for rate in self.rates]
        self._redis: Any = None
        self._script: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
            self._script = self._redis.register_script(_SCRIPT)
        self._lock = threading.Lock()
        self._local_levels: list[tuple[float, float]] = [(float(r.capacity), time.monotonic()) for r in self.rates]
        self._local_paused_until = 0.0

    def __repr__(self) -> str:
        shared = "redis" if self._redis is not None else "in-process"
        return f"RateLimiter(name={self.name!r}, rates={list(self.rates)!r}, {shared})"

    def acquire(self, timeout: float = 0.0) -> None:
        """Take one token from every window, waiting up to `timeout` seconds for it.

        Raises RateLimitedError (with `retry_after`) rather than waiting longer, so that a worker
        hands the job back to the schedule instead of holding a process while the budget refills.
        """
        deadline = time.monotonic() + timeout
        while True:
            wait = self._take()
            if wait <= 0:
                return
            remaining = deadline - time.monotonic()
            if wait > remaining:
                raise RateLimitedError(
                    f"{self.name}: request budget exhausted, next call allowed in {wait:.1f}s",
                    retry_after=wait,
                )
            # A little jitter so that processes woken by the same refill do not collide on it.
            time.sleep(min(remaining, wait + random.uniform(0, 0.01)))

    def pause(self, seconds: float) -> None:
        """Hold every caller of this provider for `seconds` (never shortens a longer pause)."""
        if seconds <= 0:
            return
        log.warning("%s: provider asked to slow down, pausing all calls for %.1fs", self.name, seconds)
        if self._redis is not None:
            self._run("pause", [str(seconds)])
            return
        with self._lock:
            self._local_paused_until = max(self._local_paused_until, time.monotonic() + seconds)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def _take(self) -> float:
        if self._redis is not None:
            args: list[str] = []
            for rate in self.rates:
                args += [str(rate.capacity), repr(rate.refill_per_second)]
            return self._run("take", args)
        return self._take_local()

    def _run(self, op: str, args: list[str]) -> float:
        import redis

        try:
            result = self._script(keys=[self._pause_key, *self._bucket_keys], args=[op, *args])
        except redis.RedisError as exc:
            # Fail closed: calling without the shared budget could trip the provider's quota for
            # every worker; the job is retried later like any other transient failure.
            raise TransientError(f"{self.name}: rate limiter store unavailable ({type(exc).__name__})") from exc
        value = result.decode() if isinstance(result, bytes) else str(result)
        return float(value)

    def _take_local(self) -> float:
        with self._lock:
            now = time.monotonic()
            if self._local_paused_until > now:
                return self._local_paused_until - now
            levels = []
            wait = 0.0
            for rate, (tokens, stamp) in zip(self.rates, self._local_levels, strict=True):
                level = min(float(rate.capacity), tokens + max(0.0, now - stamp) * rate.refill_per_second)
                levels.append(level)
                if level < 1:
                    wait = max(wait, (1 - level) / rate.refill_per_second)
            if wait > 0:
                return wait
            self._local_levels = [(level - 1, now) for level in levels]
            return 0.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None if unusable.

    A date without a zone is read as UTC, and a wait is capped at a day: a provider's clock or typo
    must not park a queue for longer than an operator would notice.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def retry_after_seconds(headers: Any, now: float | None = None, default: float = 60.0) -> float:
    """How long a 429 asks us to wait: `Retry-After` (seconds or HTTP date), else `X-Ratelimit-Reset`.

    `X-Ratelimit-Reset` is UTC epoch seconds in Hacienda's documentation; small values are read as
    a delay, which is what some gateways send under the same name.
    """
    current = time.time() if now is None else now
    wait = parse_retry_after(headers.get("retry-after") or None, datetime.fromtimestamp(current, UTC))
    if wait is not None:
        return wait
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            stamp = float(reset.strip())
        except ValueError:
            return default
        if math.isfinite(stamp):
            return max(0.0, stamp - current) if stamp > 1_000_000_000 else max(0.0, stamp)
    return default
