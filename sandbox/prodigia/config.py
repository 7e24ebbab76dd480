"""Every knob of the Prodigia addendas simulator, read from `SANDBOX_PRODIGIA_*` and changeable at run time.

The configuration is an immutable value swapped whole by the admin endpoint, so a request always sees
one consistent set of knobs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import knobs
from sandbox.knobs import ConfigError

ENV_PREFIX = "SANDBOX_PRODIGIA_"
ANSWER_STYLES = ("escaped", "cdata", "inline")
TAMPER_MODES = ("", "total", "tfd", "two_addendas", "misplaced")
FAULT_RATES = ("http500_rate", "soap_fault_rate", "malformed_rate")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class ProdigiaSandboxConfig:
    """Knobs of the simulator. See the package docstring for what each does."""

    namespace: str = "addendas.ws.pade.mx"
    contrato: str = "SANDBOX-CONTRATO"
    usuario: str = "sandbox"
    passwd: str = "sandbox"
    lock_after: int = 3
    maintenance: bool = False
    maintenance_windows: tuple[str, ...] = ()
    force_code: int | None = None
    force_message: str = ""
    answer_style: str = "escaped"
    tamper: str = ""
    max_datos_bytes: int = 1024 * 1024
    public_url: str = ""
    latency_ms: int = 0
    http500_rate: float = 0.0
    soap_fault_rate: float = 0.0
    malformed_rate: float = 0.0
    outage: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.answer_style not in ANSWER_STYLES:
            raise ConfigError(f"answer_style must be one of {list(ANSWER_STYLES)}")
        if self.tamper not in TAMPER_MODES:
            raise ConfigError(f"tamper must be one of {list(TAMPER_MODES)}")
        for name in FAULT_RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1")
        if self.lock_after < 1 or self.max_datos_bytes < 1 or self.latency_ms < 0:
            raise ConfigError("lock_after and max_datos_bytes must be positive, latency_ms not negative")
        for window in self.maintenance_windows:
            if not _WINDOW.match(window):
                raise ConfigError(f"maintenance window {window!r} is not HH:MM-HH:MM (UTC)")
        if not self.namespace:
            raise ConfigError("namespace must not be empty")

    def in_maintenance(self, minute_of_day: int) -> bool:
        """Whether `minute_of_day` (UTC) falls in a window; a window may wrap past midnight."""
        if self.maintenance:
            return True
        for window in self.maintenance_windows:
            match = _WINDOW.match(window)
            assert match is not None  # checked in __post_init__
            start = int(match.group(1)) * 60 + int(match.group(2))
            end = int(match.group(3)) * 60 + int(match.group(4))
            inside = start <= minute_of_day < end if start <= end else minute_of_day >= start or minute_of_day < end
            if inside:
                return True
        return False

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["maintenance_windows"] = list(self.maintenance_windows)
        return data

    def updated(
        self, changes: Mapping[str, Any], default: ProdigiaSandboxConfig | None = None
    ) -> ProdigiaSandboxConfig:
        """Apply a partial update; `{"preset": "default"}` first returns to the start-up configuration."""
        base = self
        preset = changes.get("preset")
        if preset is not None:
            if preset != "default":
                raise ConfigError("preset must be 'default'")
            base = default if default is not None else ProdigiaSandboxConfig.from_env()
        return dataclasses.replace(base, **knobs.parse_knobs(_PARSERS, changes))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProdigiaSandboxConfig:
        return cls().updated(knobs.env_knobs(_PARSERS, ENV_PREFIX, environ))


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "namespace": knobs.parse_str,
    "contrato": knobs.parse_text,
    "usuario": knobs.parse_text,
    "passwd": knobs.parse_text,
    "lock_after": knobs.parse_int,
    "maintenance": knobs.parse_bool,
    "maintenance_windows": knobs.parse_names,
    "force_code": knobs.parse_optional_int,
    "force_message": knobs.parse_text,
    "answer_style": lambda raw: knobs.parse_str(raw).lower(),
    "tamper": lambda raw: knobs.parse_str(raw).lower(),
    "max_datos_bytes": knobs.parse_int,
    "public_url": lambda raw: knobs.parse_str(raw).rstrip("/"),
    "latency_ms": knobs.parse_int,
    "http500_rate": knobs.parse_float,
    "soap_fault_rate": knobs.parse_float,
    "malformed_rate": knobs.parse_float,
    "outage": knobs.parse_bool,
    "seed": knobs.parse_int,
}
