"""The API application as a server process builds it from the environment: `einvoice api` runs it
in-process, or names it to uvicorn so that each of several worker processes builds its own engine,
pool and broker connection (none of which survive a fork)."""

from __future__ import annotations

from fastapi import FastAPI

from models import Store, make_engine
from models.access import ServerSecret
from worker.api.app import create_app


def build() -> FastAPI:
    from tasks.context import store_setup
    from worker.app import app as celery_app
    from worker.app import settings

    secret = ServerSecret.load(embedded=settings.embedded)
    store = Store(make_engine(settings.database_url))
    for setup in store_setup:
        setup(store)

    def broker_check() -> None:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    return create_app(
        store=store, secret=secret, policy=settings.policy, archive_dir=settings.archive_dir, broker_check=broker_check
    )
