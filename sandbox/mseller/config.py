"""The MSeller simulator's behaviour, from `SANDBOX_MSELLER_*` variables or `POST /_admin/config`.

Every field below can be set as `SANDBOX_MSELLER_<FIELD>` (upper case) or as a JSON key of the admin
endpoint; `SANDBOX_MSELLER_PRESET=bench` starts from the benchmark preset. Lists are comma-separated
in the environment; `users`, `api_keys` and `outcomes` are `name:value,name:value`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.knobs import from_env_by_type, updated_by_type

DEFAULT_EMAIL = "pruebas@example.com"
DEFAULT_PASSWORD = "sandbox"
DEFAULT_API_KEY = "sandbox-testecf-key"
ENV_PREFIX = "SANDBOX_MSELLER_"
ENVIRONMENTS = ("TesteCF", "CerteCF", "eCF")
OUTCOMES = ("accepted", "conditional", "rejected", "error", "invalid")

# MSeller's published plans: requests per second and counted requests per month.
PLANS = {
    "gratis": (5, 1_000),
    "emprende": (10, 2_000),
    "basico": (15, 4_000),
    "negocio": (30, 10_000),
    "avanzado": (60, 24_000),
    "empresa": (200, 100_000),
}


@dataclass
class MSellerSandboxConfig:
    # Accounts
    users: dict[str, str] = field(default_factory=lambda: {DEFAULT_EMAIL: DEFAULT_PASSWORD})
    api_keys: dict[str, str] = field(
        default_factory=lambda: {
            DEFAULT_API_KEY: "TesteCF",
            "sandbox-certecf-key": "CerteCF",
            "sandbox-ecf-key": "eCF",
        }
    )
    uncertified_users: list[str] = field(default_factory=list)
    token_seconds: float = 3600.0
    refuse_tokens: bool = False
    # Plan: the named plan's figures unless overridden; 0 turns a limit off.
    plan: str = "gratis"
    rate_per_second: int | None = None
    monthly_requests: int | None = None
    # Processing: En Cola, Enviado a la DGII, En Proceso (a third each), then the outcome.
    processing_seconds: float = 2.0
    conditional_share: float = 0.0
    rejected_share: float = 0.0
    failed_share: float = 0.0
    outcomes: dict[str, str] = field(default_factory=dict)
    # Faults
    latency_ms: float = 0.0
    error_share: float = 0.0
    error_status: int = 500
    drop_share: float = 0.0
    lost_answer_share: float = 0.0
    malformed_share: float = 0.0
    outage: bool = False
    fault_scope: str = "all"
    seed: int | None = None

    @classmethod
    def bench(cls) -> MSellerSandboxConfig:
        """Only the protocol and the plan: no processing time or latency."""
        return cls(processing_seconds=0.0, latency_ms=0.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MSellerSandboxConfig:
        return from_env_by_type(cls(), cls.bench(), ENV_PREFIX, environ)

    @property
    def requests_per_second(self) -> int:
        return PLANS[self.plan][0] if self.rate_per_second is None else self.rate_per_second

    @property
    def requests_per_month(self) -> int:
        return PLANS[self.plan][1] if self.monthly_requests is None else self.monthly_requests

    def updated(self, changes: Mapping[str, Any]) -> MSellerSandboxConfig:
        """A copy with `changes` applied, each converted to its field's type; ValueError names the bad one."""
        return updated_by_type(self, changes)

    def check(self) -> None:
        for name in (
            "conditional_share",
            "rejected_share",
            "failed_share",
            "error_share",
            "drop_share",
            "lost_answer_share",
            "malformed_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.conditional_share + self.rejected_share + self.failed_share > 1.0:
            raise ValueError("conditional_share + rejected_share + failed_share cannot exceed 1")
        if self.plan not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}")
        for key, environment in self.api_keys.items():
            if environment not in ENVIRONMENTS:
                raise ValueError(f"api key {key[:8]}…: environment must be one of {', '.join(ENVIRONMENTS)}")
        for encf, outcome in self.outcomes.items():
            if outcome not in OUTCOMES:
                raise ValueError(f"outcome of {encf}: must be one of {', '.join(OUTCOMES)}")
        if self.fault_scope not in ("all", "auth", "api"):
            raise ValueError("fault_scope must be all, auth or api")
        if not (self.error_status == 499 or 500 <= self.error_status <= 599):
            raise ValueError("error_status must be 499 or 5xx")
        if self.token_seconds <= 0:
            raise ValueError("token_seconds must be positive")
        if self.processing_seconds < 0 or self.latency_ms < 0:
            raise ValueError("processing_seconds and latency_ms cannot be negative")
        for name in ("rate_per_second", "monthly_requests"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative")

    def as_json(self) -> dict[str, Any]:
        """The configuration without passwords or API keys, for `GET /_admin/config`."""
        data = asdict(self)
        data["users"] = sorted(self.users)
        data["api_keys"] = sorted(self.api_keys.values())
        data["effective_rate_per_second"] = self.requests_per_second
        data["effective_monthly_requests"] = self.requests_per_month
        return data
