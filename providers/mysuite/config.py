"""MYSuite settings, read once from the environment (or `*_FILE` secrets) and never printed in full."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from providers.env import Env

DEFAULT_ASYNC_URL = "http://127.0.0.1:8080/mysuite/async/factwsfront.asmx"
DEFAULT_SYNC_URL = "http://127.0.0.1:8080/mysuite/sync/FactWSFront.asmx"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
DEFAULT_ENTITY = "JES900109Q90"
MIB = 1 << 20

Environment = Literal["test", "production"]

MAX_PAYLOAD_BYTES: dict[str, int] = {"test": 4 * MIB, "production": 40 * MIB}
"""Largest native XML each MYSuite environment processes ("hasta 4 MB" / "límite máximo 40MB")."""


@dataclass(frozen=True)
class MySuiteConfig:
    """Where and as whom to call MYSuite, and how patiently.

    `requestor` and `user` are the credential (MYSuite has no login: the Requestor GUID is the
    secret), so they are left out of `repr`. `async_min_bytes` routes documents at or under it to
    the synchronous CONVERT_NATIVE_XML service, because the async host refuses anything under 1 MB.
    """

    async_url: str = DEFAULT_ASYNC_URL
    sync_url: str = DEFAULT_SYNC_URL
    requestor: str = field(default=ZERO_GUID, repr=False)
    entity: str = DEFAULT_ENTITY
    user: str = field(default="", repr=False)
    username: str = ""
    environment: Environment = "test"
    async_min_bytes: int = MIB
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    upload_timeout: float = 300.0
    link_ttl_seconds: float = 5 * 86400.0
    incall_attempts: int = 3
    incall_wait: float = 0.2
    max_connections: int = 64
    """Connections kept open per process: at least the worker's thread count, or threads queue for one."""

    def __post_init__(self) -> None:
        if self.environment not in MAX_PAYLOAD_BYTES:
            raise ValueError(f"MYSUITE_ENV must be one of {', '.join(MAX_PAYLOAD_BYTES)}")
        if not self.user:
            object.__setattr__(self, "user", self.requestor)
        if not self.username:
            object.__setattr__(self, "username", f"MX.{self.entity}.einvoice")
        for name in ("connect_timeout", "read_timeout", "upload_timeout", "link_ttl_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.async_min_bytes < 0:
            raise ValueError("async_min_bytes must not be negative")
        if self.incall_attempts < 1 or self.max_connections < 1:
            raise ValueError("incall_attempts and max_connections must be at least 1")

    @property
    def max_payload_bytes(self) -> int:
        return MAX_PAYLOAD_BYTES[self.environment]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MySuiteConfig:
        """Build the config from `MYSUITE_*` variables; unset ones keep the sandbox-friendly defaults."""

        env = Env(environ)
        environment = env.text("MYSUITE_ENV", "test").lower()
        if environment not in MAX_PAYLOAD_BYTES:
            raise ValueError(f"MYSUITE_ENV must be one of {', '.join(MAX_PAYLOAD_BYTES)}")
        entity = env.text("MYSUITE_ENTITY", DEFAULT_ENTITY)
        requestor = env.text("MYSUITE_REQUESTOR", ZERO_GUID)
        return cls(
            async_url=env.text("MYSUITE_ASYNC_URL", DEFAULT_ASYNC_URL),
            sync_url=env.text("MYSUITE_SYNC_URL", DEFAULT_SYNC_URL),
            requestor=requestor,
            entity=entity,
            user=env.text("MYSUITE_USER", requestor),
            username=env.text("MYSUITE_USERNAME", f"MX.{entity}.einvoice"),
            environment="production" if environment == "production" else "test",
            async_min_bytes=env.integer("MYSUITE_ASYNC_MIN_BYTES", MIB),
            connect_timeout=env.number("MYSUITE_CONNECT_TIMEOUT", 5.0),
            read_timeout=env.number("MYSUITE_READ_TIMEOUT", 30.0),
            upload_timeout=env.number("MYSUITE_UPLOAD_TIMEOUT", 300.0),
            link_ttl_seconds=env.number("MYSUITE_LINK_TTL_SECONDS", 5 * 86400.0),
            max_connections=env.integer("MYSUITE_MAX_CONNECTIONS", 64),
        )
