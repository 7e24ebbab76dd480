"""Settings from the environment, with an embedded default that needs no server at all.

With nothing set, the database is a SQLite file and the broker is kombu's `filesystem://`
transport, both under EINVOICE_HOME (./.einvoice). URLs that carry passwords may come from
`DATABASE_URL_FILE` / `CELERY_BROKER_URL_FILE` secret files. Provider credentials are read by each
provider from its own variables (or `*_FILE` secrets) and never pass through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from models.db import database_url, home_dir
from providers.base import read_setting
from tasks.policy import Policy

_PASSWORD_IN_URL = re.compile(r"(?<=://)([^:/@]*):([^@]*)@")


def mask_url(url: str) -> str:
    """URLs may carry passwords (redis://:secret@host); never print them."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", url)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    home: Path
    archive_dir: Path
    metrics_port: int
    policy: Policy = field(default_factory=Policy)

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = home_dir(env)
        archive = Path(env.get("ARCHIVE_DIR") or home / "archive").resolve()
        overrides: dict[str, Any] = {}
        for f in fields(Policy):
            name = "EINVOICE_" + f.name.upper()
            if name in env and f.type in ("float", "int"):
                value = _float(env, name, 0.0)
                overrides[f.name] = int(value) if f.type == "int" else value
        overrides["archive_dir"] = str(archive)
        return cls(
            database_url=database_url(env),
            broker_url=read_setting("CELERY_BROKER_URL", environ=env) or "filesystem://",
            home=home,
            archive_dir=archive,
            metrics_port=int(_float(env, "METRICS_PORT", 9808)),
            policy=Policy(**overrides),
        )

    def __repr__(self) -> str:
        return (
            f"Settings(database_url={mask_url(self.database_url)!r}, broker_url={mask_url(self.broker_url)!r}, "
            f"home={str(self.home)!r}, archive_dir={str(self.archive_dir)!r}, metrics_port={self.metrics_port})"
        )
