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
            _private_file(Path(path))
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


def _private_file(path: Path) -> None:
    """Create the SQLite file 0600 (and its folder 0700) before SQLite does it with the umask's mode.

    The file holds every payload and every provider answer; SQLite gives its -wal and -shm files
    the database file's mode. The embedded home folder is ours, so it is made 0700 even when
    another part of the service created it first.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    elif folder.resolve() == home_dir():
        os.chmod(folder, 0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
