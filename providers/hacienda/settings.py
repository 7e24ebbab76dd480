"""Hacienda client settings, read from the environment (secrets also from `*_FILE`).

- `HACIENDA_API_URL`: recepción base, default the local sandbox
  (`http://127.0.0.1:8080/hacienda/recepcion/v1/`); production is
  `https://api.comprobanteselectronicos.go.cr/recepcion/v1/`.
- `HACIENDA_IDP_URL`: Keycloak token endpoint, default the local sandbox's `rut-stag` realm.
- `HACIENDA_CLIENT_ID`: `api-stag` (default) or `api-prod`.
- `HACIENDA_USERNAME`, `HACIENDA_PASSWORD`: the ATV API credentials (secrets; `*_FILE` supported).
- `HACIENDA_ENTITY`: the emisor cédula the credentials belong to; default read from the username.
- `HACIENDA_REDIS_URL`: shared token cache and rate limiter; default `CELERY_BROKER_URL` when that
  is a Redis URL, else none (both kept in the process).
- `HACIENDA_REDIS_PREFIX`: key prefix (default `einvoice`), so deployments can share one Redis.
- `HACIENDA_CONNECT_TIMEOUT`, `HACIENDA_READ_TIMEOUT`: HTTP timeouts, default 5 and 30 s.
- `HACIENDA_RATE_PER_HOUR`, `HACIENDA_RATE_PER_DAY`: the plan, default the STAG quota 100 and
  1000; 0 disables a window. `HACIENDA_RATE_BURST`: calls allowed back to back (default a tenth).
- `HACIENDA_RATE_WAIT`: how long a call may wait for the budget before RateLimitedError (5 s).
- `HACIENDA_TOKEN_REFRESH_MARGIN`: refresh the access token this long before expiry (45 s, the
  figure one production client keeps, citing the slowness of Hacienda's API).
- `HACIENDA_AUTH_COOLDOWN`: after refused credentials, no new login for this long (300 s).
- `HACIENDA_CALLBACK_URL`: sent as `callbackUrl`; polling stays the source of truth.
- `HACIENDA_MAX_PAYLOAD_BYTES`: larger comprobantes are refused before parsing (10 MiB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.env import Env

DEFAULT_API_URL = "http://127.0.0.1:8080/hacienda/recepcion/v1/"
DEFAULT_IDP_URL = "http://127.0.0.1:8080/hacienda/idp/auth/realms/rut-stag/protocol/openid-connect/token"


@dataclass(frozen=True)
class HaciendaSettings:
    api_url: str = DEFAULT_API_URL
    idp_url: str = DEFAULT_IDP_URL
    client_id: str = "api-stag"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    entity_override: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "einvoice"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    rate_per_hour: int = 100
    rate_per_day: int = 1000
    rate_burst: int | None = None
    rate_wait: float = 5.0
    token_refresh_margin: float = 45.0
    auth_cooldown: float = 300.0
    callback_url: str | None = None
    max_payload_bytes: int = 10 * 1024 * 1024

    @property
    def entity(self) -> str:
        """The emisor cédula: configured, or read from an ATV username such as `cpj-3-101-123456@…`."""
        if self.entity_override:
            return self.entity_override
        if self.username:
            match = re.match(r"cp[fj]-([0-9-]+)@", self.username)
            if match:
                return match.group(1).replace("-", "").lstrip("0")
        return ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HaciendaSettings:
        env = Env(environ)
        return cls(
            api_url=env.text("HACIENDA_API_URL", DEFAULT_API_URL),
            idp_url=env.text("HACIENDA_IDP_URL", DEFAULT_IDP_URL),
            client_id=env.text("HACIENDA_CLIENT_ID", "api-stag"),
            username=env.get("HACIENDA_USERNAME"),
            password=env.get("HACIENDA_PASSWORD"),
            entity_override=env.get("HACIENDA_ENTITY"),
            redis_url=env.redis_url("HACIENDA_REDIS_URL"),
            redis_prefix=env.text("HACIENDA_REDIS_PREFIX", "einvoice"),
            connect_timeout=env.number("HACIENDA_CONNECT_TIMEOUT", 5.0),
            read_timeout=env.number("HACIENDA_READ_TIMEOUT", 30.0),
            rate_per_hour=int(env.number("HACIENDA_RATE_PER_HOUR", 100)),
            rate_per_day=int(env.number("HACIENDA_RATE_PER_DAY", 1000)),
            rate_burst=env.optional_integer("HACIENDA_RATE_BURST"),
            rate_wait=env.number("HACIENDA_RATE_WAIT", 5.0),
            token_refresh_margin=env.number("HACIENDA_TOKEN_REFRESH_MARGIN", 45.0),
            auth_cooldown=env.number("HACIENDA_AUTH_COOLDOWN", 300.0),
            callback_url=env.get("HACIENDA_CALLBACK_URL"),
            max_payload_bytes=int(env.number("HACIENDA_MAX_PAYLOAD_BYTES", 10 * 1024 * 1024)),
        )
