"""Deliveries go out in batches: one message per batch, a batch holds one subscription's deliveries.

The sweep runs in a process of its own against the real database and Redis, and the messages it
published are read from the Redis queue before a real worker consumes them.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import redis
import sqlalchemy as sa

from models.webhooks import WebhookDelivery, announce_pause
from tasks.webhooks import DELIVER, QUEUE
from tests.e2e.stack import Stack
from tests.harness import ROOT, wait_until
from tests.webhooks.conftest import subscribe, webhook_worker
from tests.webhooks.receiver import Receiver

BATCH = 20


def announce_pauses(stack: Stack, count: int) -> None:
    """`count` provider.paused events, each queued for every subscription to that type."""
    with stack.store.db.session() as session:
        for n in range(count):
            announce_pause(session, "provider.paused", "mysuite", "outage", f"test {n}", datetime.now(UTC), None)


def sweep_once(stack: Stack) -> list[list[str]]:
    """Run one sweep and return the id lists of the deliver messages it published."""
    env = {**stack.env, "EINVOICE_WEBHOOK_BATCH_SIZE": str(BATCH)}
    code = "import worker.app; from tasks.webhooks import sweep; print(sweep())"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, timeout=60)
    batches: list[list[str]] = []
    for raw in redis.Redis.from_url(stack.env["CELERY_BROKER_URL"]).lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == DELIVER:
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            batches.append(args[0])
    return batches


def states(stack: Stack, subscription_id: str) -> Counter[tuple[str, int]]:
    """(state, attempts) of the subscription's deliveries, counted."""
    with stack.store.db.session() as session:
        rows = session.execute(
            sa.select(WebhookDelivery.state, WebhookDelivery.attempts).where(
                WebhookDelivery.subscription_id == subscription_id
            )
        ).all()
    return Counter((state, attempts) for state, attempts in rows)


def test_one_message_per_batch_and_each_task_delivers_its_whole_batch(
    hook_stack: Stack, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    sub = subscribe(hook_stack, rec, url, "one", "provider.paused")
    count = 2 * BATCH + 5
    announce_pauses(hook_stack, count)

    batches = sweep_once(hook_stack)

    assert len(batches) == math.ceil(count / BATCH)
    assert sorted(len(b) for b in batches) == [5, BATCH, BATCH]
    with hook_stack.store.db.session() as session:
        every_id = set(session.scalars(sa.select(WebhookDelivery.id)))
    assert {i for b in batches for i in b} == every_id
    worker = webhook_worker(hook_stack, "w1", env={"EINVOICE_WEBHOOK_BATCH_SIZE": str(BATCH)}, concurrency=2).start()
    try:
        wait_until(lambda: states(hook_stack, sub["id"]) == {("delivered", 1): count}, 30, what="every delivery")
    finally:
        worker.stop()
    assert sorted(r.webhook_id for r in rec.received("one")) == sorted(every_id)
    assert rec.bad_signatures == 0


def test_a_failing_subscription_never_shares_a_batch_with_another(
    hook_stack: Stack, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    down = subscribe(hook_stack, rec, url, "down", "provider.paused", mode="fail")
    up = subscribe(hook_stack, rec, url, "up", "provider.paused")
    count = BATCH + 3
    announce_pauses(hook_stack, count)

    batches = sweep_once(hook_stack)

    with hook_stack.store.db.session() as session:
        rows = session.execute(sa.select(WebhookDelivery.id, WebhookDelivery.subscription_id))
        owner = {delivery_id: subscription_id for delivery_id, subscription_id in rows}
    owners = [{owner[i] for i in b} for b in batches]
    assert all(len(o) == 1 for o in owners), owners
    assert Counter(o.pop() for o in owners) == {down["id"]: 2, up["id"]: 2}
    worker = webhook_worker(hook_stack, "w1", env={"EINVOICE_WEBHOOK_BATCH_SIZE": str(BATCH)}, concurrency=2).start()
    try:
        wait_until(lambda: states(hook_stack, up["id"]) == {("delivered", 1): count}, 60, what="the live receiver")
        wait_until(lambda: rec.requests.get("down", 0) >= count, 60, what="an attempt at every failing delivery")
    finally:
        worker.stop()
    assert len(rec.received("up")) == count
    assert all(state == "pending" and attempts >= 1 for state, attempts in states(hook_stack, down["id"]))
