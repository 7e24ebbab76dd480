"""The Alembic chain is the only schema source: it must build on both backends and match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from models.db import make_engine, normalize_url
from models.schema import Base

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", normalize_url(url))
    return config


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


def test_upgrade_builds_schema_matching_models(blank_url: str) -> None:
    command.upgrade(alembic_config(blank_url), "head")
    engine = make_engine(blank_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"jobs", "payloads", "events", "artifacts"} <= tables


def test_downgrade_removes_everything(blank_url: str) -> None:
    config = alembic_config(blank_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(blank_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert tables == set()
