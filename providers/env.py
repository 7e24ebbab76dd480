"""Typed readers over `read_setting`, so every provider's settings parse the environment alike.

A malformed number names its variable in the error: a worker that refuses to start should say
which setting to fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import read_setting

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        """The raw value (secrets keep their spaces), or `default` when unset or empty."""
        return read_setting(name, default, self._environ)

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        return default if value is None else value.strip()

    def number(self, name: str, default: float) -> float:
        raw = self.text(name, "")
        try:
            return float(raw) if raw else default
        except ValueError:
            raise ValueError(f"{name} must be a number") from None

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name, "")
        try:
            return int(raw) if raw else default
        except ValueError:
            raise ValueError(f"{name} must be an integer") from None

    def optional_integer(self, name: str) -> int | None:
        return self.integer(name, 0) if self.text(name, "") else None

    def redis_url(self, name: str) -> str | None:
        """NAME, else the Celery broker when that is Redis, else None (state kept in the process)."""
        url = self.get(name)
        if url is None:
            broker = self.get("CELERY_BROKER_URL") or ""
            url = broker if broker.startswith(REDIS_SCHEMES) else None
        return url
