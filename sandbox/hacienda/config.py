"""The Hacienda simulator's behaviour, from `SANDBOX_HACIENDA_*` variables or `POST /_admin/config`.

Every field below can be set as `SANDBOX_HACIENDA_<FIELD>` (upper case) or as a JSON key of the admin
endpoint; `SANDBOX_HACIENDA_PRESET=bench` starts from the benchmark preset. Lists are
comma-separated in the environment, `users` is `name:password,name:password`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.knobs import from_env_by_type, updated_by_type

DEFAULT_USERNAME = "cpj-3-101-123456@stag.comprobanteselectronicos.go.cr"
DEFAULT_PASSWORD = "sandbox"
ENV_PREFIX = "SANDBOX_HACIENDA_"


@dataclass
class HaciendaSandboxConfig:
    # IDP
    users: dict[str, str] = field(default_factory=lambda: {DEFAULT_USERNAME: DEFAULT_PASSWORD})
    client_ids: list[str] = field(default_factory=lambda: ["api-stag", "api-prod"])
    realms: list[str] = field(default_factory=lambda: ["rut-stag", "rut"])
    access_token_seconds: float = 300.0
    refresh_token_seconds: float = 1800.0
    # Recepción
    blocked_users: list[str] = field(default_factory=list)
    refuse_tokens: bool = False
    processing_seconds: float = 2.0
    reject_share: float = 0.0
    reject_message: str = "El comprobante no cumple con las validaciones de prueba del sandbox."
    strict_clave: bool = True
    status_style: str = "hyphen"
    quota_per_hour: int = 100
    quota_per_day: int = 1000
    quota_hour_seconds: float = 3600.0
    quota_day_seconds: float = 86400.0
    # Faults
    latency_ms: float = 0.0
    error_share: float = 0.0
    error_status: int = 500
    drop_share: float = 0.0
    malformed_share: float = 0.0
    outage: bool = False
    fault_scope: str = "all"
    seed: int | None = None

    @classmethod
    def bench(cls) -> HaciendaSandboxConfig:
        """Only the protocol: no processing time, quota or latency, so benchmarks measure the worker."""
        return cls(processing_seconds=0.0, quota_per_hour=0, quota_per_day=0, latency_ms=0.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HaciendaSandboxConfig:
        return from_env_by_type(cls(), cls.bench(), ENV_PREFIX, environ)

    def updated(self, changes: Mapping[str, Any]) -> HaciendaSandboxConfig:
        """A copy with `changes` applied, each converted to its field's type; ValueError names the bad one."""
        return updated_by_type(self, changes)

    def check(self) -> None:
        for name in ("reject_share", "error_share", "drop_share", "malformed_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.status_style not in ("hyphen", "camel"):
            raise ValueError("status_style must be hyphen (ind-estado, lower case) or camel (indEstado, upper case)")
        if self.fault_scope not in ("all", "idp", "recepcion"):
            raise ValueError("fault_scope must be all, idp or recepcion")
        if not (self.error_status == 499 or 500 <= self.error_status <= 599):
            raise ValueError("error_status must be 499 or 5xx")
        for name in (
            "access_token_seconds",
            "refresh_token_seconds",
            "quota_hour_seconds",
            "quota_day_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.processing_seconds < 0 or self.latency_ms < 0:
            raise ValueError("processing_seconds and latency_ms cannot be negative")

    def as_json(self) -> dict[str, Any]:
        """The configuration without user passwords, for `GET /_admin/config`."""
        data = asdict(self)
        data["users"] = sorted(self.users)
        return data
