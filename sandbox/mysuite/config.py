"""Every knob of the MYSuite simulator, read from `SANDBOX_MYSUITE_*` and changeable at run time.

The configuration is an immutable value that the app swaps atomically, so a request always sees one
consistent set of knobs even while an admin call is changing them from another thread.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import knobs
from sandbox.knobs import ConfigError

MIB = 1024 * 1024
ENV_PREFIX = "SANDBOX_MYSUITE_"

# The seed's size rules: over 1 MB and up to 4 MB in test, up to 40 MB in production. The sandbox
# reads "MB" as MiB and measures the decoded Data1 (the provider notes leave both points open).
DEFAULT_MAX_BYTES = {"test": 4 * MIB, "production": 40 * MIB}
# "TEST-BACK02" is the processor of the recorded real test response; the production name is invented.
DEFAULT_PROCESSOR = {"test": "TEST-BACK02", "production": "PROD-BACK01"}

PRESETS = ("bench", "default")


def parse_timeline(text: str) -> tuple[int, ...]:
    """`"1,2,3"` → (1, 2, 3): SAT states one step apart; a timeline that never ends stays at its last."""
    states = tuple(int(item) for item in text.replace("→", ",").replace(" ", "").split(",") if item)
    if not states or any(state not in (1, 2, 3, 4, 5, 6) for state in states):
        raise ValueError("a timeline is a comma list of SAT states 1-6, such as 1,2,3")
    return states


@dataclass(frozen=True)
class MySuiteSandboxConfig:
    """Knobs of the simulator. See the package docstring for the environment variable of each."""

    env: str = "test"
    min_bytes: int = MIB
    max_bytes: int | None = None
    processing_base_seconds: float = 1.0
    seconds_per_mb: float = 0.5
    failure_rate: float = 0.0
    seed: int = 0
    link_ttl_seconds: float = 5 * 24 * 3600.0
    link_content: str = "zip"
    public_url: str = ""
    requestor: str = ""
    processor: str = ""
    latency_ms: int = 0
    http500_rate: float = 0.0
    soap_fault_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0
    malformed_rate: float = 0.0
    outage: bool = False
    outage_mode: str = "503"
    fault_transactions: tuple[str, ...] = ()
    faults_on_files: bool = False
    json_leading_space: bool = False
    dm_timeline: str = "1,2,3"
    dm_step_seconds: float = 1.0
    dm_cfdi_per_day: int = 20
    dm_max_cfdi: int = 200_000
    dm_max_metadata: int = 1_000_000
    dm_package_size: int = 5000
    dm_max_downloads: int = 2
    dm_cancelled_rate: float = 0.05

    def __post_init__(self) -> None:
        if self.env not in DEFAULT_MAX_BYTES:
            raise ConfigError(f"env must be one of {sorted(DEFAULT_MAX_BYTES)}")
        if self.link_content not in ("zip", "raw"):
            raise ConfigError("link_content must be 'zip' or 'raw'")
        if self.outage_mode not in ("503", "drop"):
            raise ConfigError("outage_mode must be '503' or 'drop'")
        for name in ("failure_rate", *FAULT_RATES):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1")
        for name in (
            "min_bytes",
            "processing_base_seconds",
            "seconds_per_mb",
            "link_ttl_seconds",
            "latency_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        try:
            parse_timeline(self.dm_timeline)
        except ValueError as exc:
            raise ConfigError(f"dm_timeline: {exc}") from None
        if self.dm_step_seconds < 0 or not 0.0 <= self.dm_cancelled_rate <= 1.0:
            raise ConfigError("dm_step_seconds must not be negative and dm_cancelled_rate must be between 0 and 1")
        for name in ("dm_package_size", "dm_max_downloads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("dm_cfdi_per_day", "dm_max_cfdi", "dm_max_metadata"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ConfigError("max_bytes must not be negative")

    @property
    def effective_max_bytes(self) -> int:
        return DEFAULT_MAX_BYTES[self.env] if self.max_bytes is None else self.max_bytes

    @property
    def effective_processor(self) -> str:
        return self.processor or DEFAULT_PROCESSOR[self.env]

    def processing_seconds(self, size: int) -> float:
        """Processing grows with size, as the seed says; base + per-MiB keeps it predictable for tests."""
        return self.processing_base_seconds + self.seconds_per_mb * size / MIB

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_transactions"] = list(self.fault_transactions)
        data["effective_max_bytes"] = self.effective_max_bytes
        data["effective_processor"] = self.effective_processor
        return data

    def updated(self, changes: Mapping[str, Any], default: MySuiteSandboxConfig | None = None) -> MySuiteSandboxConfig:
        """Apply a partial update (admin JSON or environment); `preset` is applied before the other keys."""
        base = self
        preset = changes.get("preset")
        if preset is not None:
            base = base.with_preset(str(preset), default)
        return dataclasses.replace(base, **knobs.parse_knobs(_PARSERS, changes))

    def with_preset(self, preset: str, default: MySuiteSandboxConfig | None = None) -> MySuiteSandboxConfig:
        """`bench` removes every artificial wait so benchmarks measure the client, not the simulator.

        `default` returns to the configuration the app started with (by default, the environment's).
        """
        if preset == "bench":
            return dataclasses.replace(
                self, min_bytes=0, processing_base_seconds=0.0, seconds_per_mb=0.0, latency_ms=0, dm_step_seconds=0.0
            )
        if preset == "default":
            return default if default is not None else MySuiteSandboxConfig.from_env()
        raise ConfigError(f"preset must be one of {list(PRESETS)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MySuiteSandboxConfig:
        env = os.environ if environ is None else environ
        config = cls().updated(knobs.env_knobs(_PARSERS, ENV_PREFIX, environ))
        if knobs.parse_bool(env.get(ENV_PREFIX + "BENCH", "0")):
            config = config.with_preset("bench")
        return config


FAULT_RATES = ("http500_rate", "soap_fault_rate", "drop_rate", "drop_after_rate", "malformed_rate")


def _names(raw: object) -> tuple[str, ...]:
    return tuple(name.upper() for name in knobs.parse_names(raw))


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "env": lambda raw: knobs.parse_str(raw).lower(),
    "min_bytes": knobs.parse_int,
    "max_bytes": knobs.parse_optional_int,
    "processing_base_seconds": knobs.parse_float,
    "seconds_per_mb": knobs.parse_float,
    "failure_rate": knobs.parse_float,
    "seed": knobs.parse_int,
    "link_ttl_seconds": knobs.parse_float,
    "link_content": lambda raw: knobs.parse_str(raw).lower(),
    "public_url": lambda raw: knobs.parse_str(raw).rstrip("/"),
    "requestor": knobs.parse_str,
    "processor": knobs.parse_str,
    "latency_ms": knobs.parse_int,
    "http500_rate": knobs.parse_float,
    "soap_fault_rate": knobs.parse_float,
    "drop_rate": knobs.parse_float,
    "drop_after_rate": knobs.parse_float,
    "malformed_rate": knobs.parse_float,
    "outage": knobs.parse_bool,
    "outage_mode": knobs.parse_str,
    "fault_transactions": _names,
    "faults_on_files": knobs.parse_bool,
    "json_leading_space": knobs.parse_bool,
    "dm_timeline": knobs.parse_str,
    "dm_step_seconds": knobs.parse_float,
    "dm_cfdi_per_day": knobs.parse_int,
    "dm_max_cfdi": knobs.parse_int,
    "dm_max_metadata": knobs.parse_int,
    "dm_package_size": knobs.parse_int,
    "dm_max_downloads": knobs.parse_int,
    "dm_cancelled_rate": knobs.parse_float,
}
