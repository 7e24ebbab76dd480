"""MSeller client settings, read from the environment (secrets also from `*_FILE`).

- `MSELLER_URL`: API base without the environment, default the local sandbox
  (`http://127.0.0.1:8080/mseller`); production is `https://ecf.api.mseller.app`.
- `MSELLER_ENV`: `TesteCF` (default), `CerteCF` or `eCF`; each API key belongs to one of them.
- `MSELLER_EMAIL`, `MSELLER_PASSWORD`, `MSELLER_API_KEY`: the account (secrets; `*_FILE` supported).
- `MSELLER_RNC`: the issuer RNC the account belongs to; when set, documents of another RNC are
  refused locally.
- `MSELLER_PLAN`: `gratis` (default), `emprende`, `basico`, `negocio`, `avanzado` or `empresa`;
  `MSELLER_RATE_PER_SECOND` and `MSELLER_MONTHLY_REQUESTS` override the plan's figures.
- `MSELLER_RATE_WAIT`: how long a call may wait for the per-second budget (5 s).
- `MSELLER_REDIS_URL`: shared token and rate limiter; default `CELERY_BROKER_URL` when that is a
  Redis URL, else none (both kept in the process). `MSELLER_REDIS_PREFIX` (default `einvoice`).
- `MSELLER_CONNECT_TIMEOUT`, `MSELLER_READ_TIMEOUT`: HTTP timeouts, default 5 and 30 s.
- `MSELLER_TOKEN_REFRESH_MARGIN`: log in again this long before the idToken's `exp` (60 s).
- `MSELLER_AUTH_COOLDOWN`: after refused credentials, no new login for this long (300 s).
- `MSELLER_BATCH_SIZE`: e-NCF per batch status call, 1 to 100 (50, MSeller's recommendation).
- `MSELLER_MAX_PAYLOAD_BYTES`: larger documents are refused before parsing (2 MiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.env import Env

DEFAULT_URL = "http://127.0.0.1:8080/mseller"
ENVIRONMENTS = ("TesteCF", "CerteCF", "eCF")
MAX_BATCH = 100


@dataclass(frozen=True)
class Plan:
    """What one MSeller plan allows: requests a second and counted requests a calendar month (UTC)."""

    name: str
    rate_per_second: int
    monthly_requests: int


# MSeller's published plans (getting-started/planes.mdx). Corporativo is by contract: configure it
# with MSELLER_RATE_PER_SECOND and MSELLER_MONTHLY_REQUESTS.
PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan("gratis", 5, 1_000),
        Plan("emprende", 10, 2_000),
        Plan("basico", 15, 4_000),
        Plan("negocio", 30, 10_000),
        Plan("avanzado", 60, 24_000),
        Plan("empresa", 200, 100_000),
    )
}


@dataclass(frozen=True)
class MSellerSettings:
    url: str = DEFAULT_URL
    environment: str = "TesteCF"
    email: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    rnc: str | None = None
    plan: str = "gratis"
    rate_per_second: int | None = None
    monthly_requests: int | None = None
    rate_wait: float = 5.0
    redis_url: str | None = None
    redis_prefix: str = "einvoice"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    token_refresh_margin: float = 60.0
    auth_cooldown: float = 300.0
    batch_size: int = 50
    max_payload_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"MSELLER_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.environment!r}")
        if self.plan not in PLANS:
            raise ValueError(f"MSELLER_PLAN must be one of {', '.join(PLANS)}, not {self.plan!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"MSELLER_BATCH_SIZE must be between 1 and {MAX_BATCH}")
        if self.rate_per_second is not None and self.rate_per_second < 0:
            raise ValueError("MSELLER_RATE_PER_SECOND cannot be negative")
        if self.monthly_requests is not None and self.monthly_requests < 0:
            raise ValueError("MSELLER_MONTHLY_REQUESTS cannot be negative")

    @property
    def base(self) -> str:
        """Where the environment's endpoints live: `{MSELLER_URL}/{MSELLER_ENV}`."""
        return f"{self.url.rstrip('/')}/{self.environment}"

    @property
    def requests_per_second(self) -> int:
        """The plan's speed unless overridden; 0 turns the per-second limiter off (tests only)."""
        return PLANS[self.plan].rate_per_second if self.rate_per_second is None else self.rate_per_second

    @property
    def requests_per_month(self) -> int:
        """The plan's monthly count unless overridden; 0 means no monthly limit (a contract plan)."""
        return PLANS[self.plan].monthly_requests if self.monthly_requests is None else self.monthly_requests

    @property
    def entity(self) -> str:
        return self.rnc or ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MSellerSettings:
        env = Env(environ)
        return cls(
            url=env.text("MSELLER_URL", DEFAULT_URL),
            environment=env.text("MSELLER_ENV", "TesteCF"),
            email=env.get("MSELLER_EMAIL"),
            password=env.get("MSELLER_PASSWORD"),
            api_key=env.get("MSELLER_API_KEY"),
            rnc=env.get("MSELLER_RNC"),
            plan=env.text("MSELLER_PLAN", "gratis").lower(),
            rate_per_second=env.optional_integer("MSELLER_RATE_PER_SECOND"),
            monthly_requests=env.optional_integer("MSELLER_MONTHLY_REQUESTS"),
            rate_wait=env.number("MSELLER_RATE_WAIT", 5.0),
            redis_url=env.redis_url("MSELLER_REDIS_URL"),
            redis_prefix=env.text("MSELLER_REDIS_PREFIX", "einvoice"),
            connect_timeout=env.number("MSELLER_CONNECT_TIMEOUT", 5.0),
            read_timeout=env.number("MSELLER_READ_TIMEOUT", 30.0),
            token_refresh_margin=env.number("MSELLER_TOKEN_REFRESH_MARGIN", 60.0),
            auth_cooldown=env.number("MSELLER_AUTH_COOLDOWN", 300.0),
            batch_size=int(env.number("MSELLER_BATCH_SIZE", 50)),
            max_payload_bytes=int(env.number("MSELLER_MAX_PAYLOAD_BYTES", 2 * 1024 * 1024)),
        )
