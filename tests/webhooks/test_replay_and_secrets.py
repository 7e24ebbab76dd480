"""Dead letters and their replay; API keys and signing secrets never leak into logs, events or metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from models.access import ApiKey, AuditEntry
from models.schema import Event
from models.webhooks import WebhookSubscription
from tests.api.server import ApiServer, auth, create_key
from tests.e2e.stack import Stack
from tests.harness import wait_until
from tests.webhooks.conftest import subscribe, webhook_worker
from tests.webhooks.receiver import Receiver


def deliveries(stack: Stack, *flags: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(stack.cli("webhooks", "deliveries", "--json", *flags).stdout)
    return rows


def test_dead_letter_replay_and_no_secret_anywhere(
    hook_stack: Stack, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    sub = subscribe(hook_stack, rec, url, "down", "invoice.invalid,invoice.submitted", mode="fail")
    key = create_key(hook_stack.env, "submitter")
    api = ApiServer(hook_stack.env, tmp_path / "api.log").start()
    worker = webhook_worker(hook_stack, "w1", env={"EINVOICE_WEBHOOK_GIVE_UP_SECONDS": "2"}, concurrency=4).start()
    try:
        submitted = httpx.post(
            f"{api.url}/v1/invoices",
            params={"internal_id": "DEAD-1"},
            content=b"not xml",
            headers=auth(key),
            timeout=30,
        )
        assert submitted.status_code == 201 and submitted.json()["state"] == "invalid"
        wait_until(
            lambda: [d["state"] for d in deliveries(hook_stack, "--failed")] == ["dead"], 60, what="a dead letter"
        )
        dead = deliveries(hook_stack, "--failed")[0]
        assert dead["event_type"] == "invoice.invalid" and dead["attempts"] >= 1 and dead["last_status"] == 500
        assert rec.received("down") == []

        rec.modes["down"] = "ok"
        hook_stack.cli("webhooks", "replay", dead["id"])
        wait_until(lambda: len(rec.received("down")) == 1, 60, what="the replayed delivery")
        got = rec.received("down")[0]
        assert got.webhook_id == dead["id"] and got.type == "invoice.invalid"
        assert got.data["id"] == submitted.json()["id"] and got.data["state"] == "invalid"
        wait_until(lambda: deliveries(hook_stack, "--failed") == [], 30, what="the dead letter to clear")
        assert [d["state"] for d in deliveries(hook_stack)] == ["delivered"]
        missing = hook_stack.cli("webhooks", "replay", "msg_nothing", check=False)
        assert missing.returncode == 2 and "no delivery" in missing.stderr
    finally:
        worker.stop()
        api.stop()

    secrets = [key["key"], sub["secret"], sub["secret"].removeprefix("whsec_")]
    with hook_stack.store.db.session() as session:
        stored = [
            *(str(v) for row in session.execute(sa.select(Event.__table__)).all() for v in row),
            *(str(v) for row in session.execute(sa.select(AuditEntry.__table__)).all() for v in row),
            *(str(v) for row in session.execute(sa.select(ApiKey.__table__)).all() for v in row),
            *(str(v) for row in session.execute(sa.select(WebhookSubscription.__table__)).all() for v in row),
        ]
        actors = {row.actor for row in session.scalars(sa.select(AuditEntry))}
    assert f"key:{key['id']}" in actors
    assert any(a.startswith("operator") for a in actors)
    texts = {
        "database": "\n".join(stored),
        "api log": api.log_text(),
        "worker log": worker.log_text(),
        "list output": hook_stack.cli("keys", "list", "--json").stdout + hook_stack.cli("webhooks", "list").stdout,
    }
    metrics_dir = Path(hook_stack.env["EINVOICE_HOME"]) / "metrics"
    texts["metrics files"] = "\n".join(p.read_bytes().decode("latin-1") for p in metrics_dir.rglob("*.db"))
    assert "einvoice_webhook_deliveries_total" in texts["metrics files"]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {where}"
