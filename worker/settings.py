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
from typing import Annotated, Any

from pydantic import Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.db import database_url, home_dir
from providers.base import read_setting
from tasks.policy import Policy

_PASSWORD_IN_URL = re.compile(r"(?<=://)([^:/@]*):([^@]*)@")


def mask_url(url: str) -> str:
    """URLs may carry passwords (redis://:secret@host); never print them."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", url)


# Every EINVOICE_<POLICY FIELD> as a typed setting: numbers must parse and may not be negative,
# counts must be whole and at least 1, and an empty value is an error rather than a silent 0.
_POLICY_FIELDS: dict[str, Any] = {
    f.name: (
        Annotated[int, Field(ge=1)] if f.type == "int" else Annotated[float, Field(ge=0)],
        f.default,
    )
    for f in fields(Policy)
    if f.type in ("float", "int")
}
PolicyEnv = create_model(
    "PolicyEnv",
    __base__=BaseSettings,
    __config__=None,
    **_POLICY_FIELDS,
)
PolicyEnv.model_config = SettingsConfigDict(env_prefix="EINVOICE_", extra="ignore", env_ignore_empty=False)


class CoreEnv(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=False)

    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9808


class SettingsError(ValueError):
    """A setting that cannot be used as given; the message names the variable."""


def _parse(model: type[BaseSettings], env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    names = {name.lower(): value for name, value in env.items()}
    try:
        parsed = model.model_validate(
            {field: names[prefix.lower() + field] for field in model.model_fields if prefix.lower() + field in names}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{str(error['loc'][0]).upper()}={names.get(prefix.lower() + str(error['loc'][0]), '')!r}: "
            f"{error['msg']}"
            for error in exc.errors()
        )
        raise SettingsError(f"invalid setting: {problems}") from None
    return {name: getattr(parsed, name) for name in parsed.model_fields_set}


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
        overrides = _parse(PolicyEnv, env, "EINVOICE_")
        overrides["archive_dir"] = str(archive)
        core = _parse(CoreEnv, env, "")
        return cls(
            database_url=database_url(env),
            broker_url=read_setting("CELERY_BROKER_URL", environ=env) or "filesystem://",
            home=home,
            archive_dir=archive,
            metrics_port=core.get("metrics_port", CoreEnv.model_fields["metrics_port"].default),
            policy=Policy(**overrides),
        )

    def __repr__(self) -> str:
        return (
            f"Settings(database_url={mask_url(self.database_url)!r}, broker_url={mask_url(self.broker_url)!r}, "
            f"home={str(self.home)!r}, archive_dir={str(self.archive_dir)!r}, metrics_port={self.metrics_port})"
        )
