"""The transaction budget, counted by PostgreSQL itself: an invoice that issues on its first poll
costs at most 6 transactions from enqueue to retrieved, retrieve and both files included."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.conftest import TEST_PG, _psycopg_url
from tests.workflow.conftest import Flow

INVOICES = 40
BUDGET = 6


def _transactions(url: str) -> int:
    """Commits and rollbacks of the database, once every backend has flushed its counters.

    Backends report their counters when idle (at most about once a second) and when they exit, so
    the engine under test is disposed first and the figure is read until it stops moving. The
    reading connection is on another database, so it does not count itself.
    """
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(_psycopg_url(TEST_PG), isolation_level="AUTOCOMMIT")
    query = sa.text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :name")
    try:
        last = -1
        for _ in range(40):
            with admin.connect() as conn:
                value = int(conn.execute(query, {"name": name}).scalar_one())
            if value == last:
                return value
            last = value
            time.sleep(0.5)
        return last
    finally:
        admin.dispose()


def test_an_invoice_issued_on_its_first_poll_costs_at_most_six_transactions(pg_flow: Flow) -> None:
    flow = pg_flow
    url = flow.store.engine.url.render_as_string(hide_password=False)
    flow.store.engine.dispose()
    before = _transactions(url)
    jobs = [flow.enqueue(f"TX-{n:03d}") for n in range(INVOICES)]
    flow.deliver()
    assert {flow.job(j.id).state for j in jobs} == {"retrieved"}
    assert all(len(flow.store.jobs.artifacts(j.id)) == 2 for j in jobs)
    checks = 2 * INVOICES  # the two reads just above are the test's, not the pipeline's
    flow.store.engine.dispose()
    spent = _transactions(url) - before - checks
    per_invoice = spent / INVOICES
    print(f"{spent} transactions for {INVOICES} invoices: {per_invoice:.2f} per invoice")
    assert per_invoice <= BUDGET
