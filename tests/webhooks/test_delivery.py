"""Webhooks end to end: real workers, a real receiver that misbehaves, PostgreSQL, Redis, the sandbox."""

from __future__ import annotations

import json
import os
from pathlib import Path

import sqlalchemy as sa

from models.webhooks import STATE_EVENTS, WebhookDelivery, WebhookSubscription
from tests.e2e.stack import Stack
from tests.harness import wait_until
from tests.webhooks.conftest import subscribe, webhook_worker
from tests.webhooks.receiver import Receiver
from worker.samples import native_xml
from worker.views import job_status

# 200 invoices pass in about 4 minutes on a loaded 2-core machine; CI runs 50 (set the variable for more).
INVOICES = int(os.environ.get("WEBHOOK_TEST_INVOICES", "50"))
EVERY_INVOICE_EVENT = ",".join(sorted({name for (kind, _), name in STATE_EVENTS.items() if kind == "invoice"}))


def expected_announcements(stack: Stack) -> set[tuple[str, str]]:
    wanted: set[tuple[str, str]] = set()
    for job in stack.store.jobs.list_jobs():
        for event in stack.store.jobs.events(job.id):
            key = (job.kind, event.to_state or "")
            if event.kind in ("transition", "retry") and key in STATE_EVENTS:
                wanted.add((job.id, STATE_EVENTS[key]))
    return wanted


def test_every_transition_is_delivered_signed_despite_failures_and_a_killed_worker(
    hook_stack: Stack, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    flaky = subscribe(hook_stack, rec, url, "flaky", EVERY_INVOICE_EVENT, mode="turns")
    gone = subscribe(hook_stack, rec, url, "gone", "invoice.submitted", mode="gone")
    folder = tmp_path / "docs"
    folder.mkdir()
    for n in range(INVOICES):
        key = f"WH-{n:04d}"
        (folder / f"{key}.xml").write_bytes(native_xml(key, 5000 + 100 * (n % 9), folio=n + 1))
    (folder / "WH-BAD.xml").write_bytes(b"not xml")
    worker = webhook_worker(hook_stack, "w1", concurrency=8).start()
    try:
        hook_stack.submit_batch(folder)
        wait_until(lambda: len(rec.received("flaky")) >= INVOICES // 2, 240, what="first deliveries")
        # Kill the worker while posts are in flight: the receiver holds every request for a while.
        rec.hold_seconds = 0.6
        wait_until(lambda: rec.inflight > 0, 30, interval=0.02, what="a delivery in flight")
        worker.kill()
        rec.hold_seconds = 0.0
        worker = webhook_worker(hook_stack, "w2", concurrency=8).start()
        wait_until(lambda: hook_stack.all_final(INVOICES + 1), 600, what="every invoice final")
        wanted = expected_announcements(hook_stack)

        def all_delivered() -> bool:
            got = {(r.data["id"], r.type) for r in rec.received("flaky")}
            with hook_stack.store.db.session() as session:
                pending = session.scalar(
                    sa.select(sa.func.count()).where(
                        WebhookDelivery.subscription_id == flaky["id"], WebhookDelivery.state != "delivered"
                    )
                )
            return wanted <= got and pending == 0

        wait_until(all_delivered, 300, what="every announcement delivered")
    finally:
        worker.stop()
    assert rec.bad_signatures == 0
    received = rec.received("flaky")
    assert {(r.data["id"], r.type) for r in received} == wanted
    assert len(wanted) >= INVOICES * 3 + 1
    sample = received[0]
    assert set(sample.data) == set(job_status(hook_stack.store.jobs.get(sample.data["id"])))
    with hook_stack.store.db.session() as session:
        states = dict(
            session.execute(
                sa.select(WebhookDelivery.state, sa.func.count())
                .where(WebhookDelivery.subscription_id == flaky["id"])
                .group_by(WebhookDelivery.state)
            ).all()
        )
        assert states == {"delivered": len(wanted)}
        retried = session.scalar(
            sa.select(sa.func.count()).where(
                WebhookDelivery.subscription_id == flaky["id"], WebhookDelivery.attempts > 1
            )
        )
        assert retried and retried > 0
        disabled = session.get(WebhookSubscription, gone["id"])
        assert disabled is not None and disabled.disabled_at is not None
    # A 410 disables the subscription: posts already past their check still land, but the rest of
    # its deliveries (one per invoice) are never posted.
    assert rec.requests["gone"] < INVOICES
    listed = json.loads(hook_stack.cli("webhooks", "list", "--json").stdout)
    assert {s["id"]: s["disabled_at"] is not None for s in listed} == {flaky["id"]: False, gone["id"]: True}
