"""Where the database is and how to connect to it, for PostgreSQL and for the embedded SQLite default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of the embedded default (SQLite file, file broker, archive), `EINVOICE_HOME` or ./.einvoice."""
    env = os.environ if environ is None else environ
    return Path(env.get("EINVOICE_HOME") or ".einvoice").resolve()


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """`DATABASE_URL` (or the file named by `DATABASE_URL_FILE`, for a URL carrying a password),
    or a SQLite file in the home folder so that nothing needs a server."""
    env = os.environ if environ is None else environ
    secret = env.get("DATABASE_URL_FILE")
    url = Path(secret).read_text(encoding="utf-8").strip() if secret else env.get("DATABASE_URL")
    if url:
        return normalize_url(url)
    return f"sqlite:///{home_dir(env) / 'einvoice.db'}"


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgresql:// URLs, which SQLAlchemy would map to psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine that survives a PostgreSQL restart (pre-ping) and lets SQLite writers queue, not fail."""
    url = normalize_url(url) if url else database_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI read while workers write; busy_timeout makes concurrent writers wait.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    sa.event.listen(engine, "checkout", _ping_in_transaction)
    return engine


def _ping_in_transaction(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Check a pooled connection before use, so that a PostgreSQL restart costs no failed step.

    SQLAlchemy's own pre-ping runs its SELECT 1 in autocommit mode, which PostgreSQL counts as a
    transaction of its own: one more per step. Here the SELECT 1 opens the transaction that the
    step's statements then continue, so the check is free in transactions; a dead connection is
    replaced by the pool (DisconnectionError) before anything else runs on it.
    """
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as exc:
        raise sa.exc.DisconnectionError(str(exc)) from exc


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
