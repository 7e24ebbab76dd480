"""The API against a real PostgreSQL and Redis: the CLI's JSON, pagination, problem details, keys."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from models.access import AuditEntry
from sandbox.server import free_port
from tests.api.server import ApiServer, auth, create_key
from tests.e2e.stack import Stack
from tests.harness import run_cli
from worker.samples import native_xml


def submit(
    api: ApiServer, key: dict[str, Any], internal_id: str, body: bytes, provider: str = "mysuite"
) -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/invoices",
        params={"provider": provider, "internal_id": internal_id},
        content=body,
        headers={**auth(key), "content-type": "application/xml"},
        timeout=30,
    )


def test_submit_status_and_events_match_the_cli(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "submitter", "JES900109Q90")
    first = submit(api, key, "INV-1", native_xml("INV-1", 6000))
    assert first.status_code == 201, first.text
    again = submit(api, key, "INV-1", native_xml("INV-1", 6000))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    bad = submit(api, key, "INV-BAD", b"not xml at all")
    assert bad.status_code == 201 and bad.json()["state"] == "invalid"
    job_id = first.json()["id"]

    for ref in (job_id, "INV-1"):
        status = httpx.get(f"{api.url}/v1/invoices/{ref}", headers=auth(key), timeout=10)
        assert status.status_code == 200
        assert status.json() == json.loads(api_stack.cli("status", job_id, "--json").stdout)
    events = httpx.get(f"{api.url}/v1/invoices/{job_id}/events", headers=auth(key), timeout=10)
    assert events.json() == json.loads(api_stack.cli("events", job_id, "--json").stdout)
    assert events.json()[0]["actor"] == f"key:{key['id']}"
    listed = httpx.get(f"{api.url}/v1/invoices", headers=auth(key), timeout=10).json()
    assert listed["items"] == json.loads(api_stack.cli("list", "--json").stdout)

    with api_stack.store.db.session() as session:
        actions = [
            (a.actor, a.action, a.outcome) for a in session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))
        ]
    assert (f"key:{key['id']}", "invoice.submit", "created") in actions
    assert (f"key:{key['id']}", "invoice.submit", "existing") in actions
    assert (f"key:{key['id']}", "invoice.read", "ok") in actions


def test_refusals_are_problem_details(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "operator")
    cases = [
        submit(api, key, "x" * 51, b"<a/>"),
        submit(api, key, "OK-1", b"<a/>", provider="nope"),
        httpx.get(f"{api.url}/v1/invoices/does-not-exist", headers=auth(key), timeout=10),
        httpx.get(f"{api.url}/v1/invoices", params={"cursor": "!!"}, headers=auth(key), timeout=10),
        httpx.get(f"{api.url}/v1/invoices", params={"limit": 0}, headers=auth(key), timeout=10),
        httpx.get(f"{api.url}/v1/invoices", timeout=10),
        httpx.get(f"{api.url}/v1/nothing-here", headers=auth(key), timeout=10),
    ]
    assert [r.status_code for r in cases] == [422, 422, 404, 422, 422, 401, 404]
    for response in cases:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        body = response.json()
        assert body["status"] == response.status_code and body["title"]
    assert "unknown provider" in cases[1].json()["detail"]
    assert cases[5].headers["www-authenticate"] == "Bearer"


def test_oversized_documents_are_refused_while_streaming(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "submitter")

    def chunks():
        block = b"<x>" + b"a" * (1024 * 1024)
        for _ in range(45):
            yield block

    response = httpx.post(
        f"{api.url}/v1/invoices",
        params={"internal_id": "HUGE"},
        content=chunks(),
        headers=auth(key),
        timeout=60,
    )
    assert response.status_code == 422
    assert "largest accepted" in response.json()["detail"]
    assert api_stack.store.jobs.list_jobs() == []


def test_cursor_pagination_walks_every_job_once(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "auditor")
    submitter = create_key(api_stack.env, "submitter")
    ids = {submit(api, submitter, f"P-{n}", b"junk").json()["id"] for n in range(7)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{api.url}/v1/invoices", params=params, headers=auth(key), timeout=10).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
    assert pages == 3
    state = httpx.get(f"{api.url}/v1/invoices", params={"state": "invalid"}, headers=auth(key), timeout=10).json()
    assert len(state["items"]) == 7


def test_revoked_key_is_refused_on_its_next_request(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "auditor")
    assert httpx.get(f"{api.url}/v1/invoices", headers=auth(key), timeout=10).status_code == 200
    api_stack.cli("keys", "revoke", key["id"])
    assert httpx.get(f"{api.url}/v1/invoices", headers=auth(key), timeout=10).status_code == 401
    listed = json.loads(api_stack.cli("keys", "list", "--json").stdout)
    assert [k["revoked_at"] is not None for k in listed if k["id"] == key["id"]] == [True]
    with api_stack.store.db.session() as session:
        rows = session.scalars(sa.select(AuditEntry).where(AuditEntry.action.in_(["key.create", "key.revoke"]))).all()
        assert {(r.action, r.target) for r in rows} >= {("key.create", key["id"]), ("key.revoke", key["id"])}
        assert all(r.actor.startswith("operator") for r in rows)


def test_health(api_stack: Stack, api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/livez", timeout=10).json()["status"] == "ok"
    ready = httpx.get(f"{api.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert "/v1/invoices" in httpx.get(f"{api.url}/openapi.json", timeout=10).json()["paths"]
    assert httpx.get(f"{api.url}/docs", timeout=10).status_code == 200


def test_several_server_processes_share_the_work_and_the_database(api_stack: Stack, tmp_path: Path) -> None:
    server = ApiServer(api_stack.env, tmp_path / "api2.log", workers=2).start()
    try:
        servers = psutil.Process(server.pid).children(recursive=True)
        assert len([p for p in servers if "spawn_main" in " ".join(p.cmdline())]) == 2, servers
        key = create_key(api_stack.env, "submitter", "JES900109Q90")
        ids = [f"MP-{n}" for n in range(24)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: submit(server, key, i, native_xml(i, 5000)), ids))
        assert [a.status_code for a in answers] == [201] * len(ids), [a.text for a in answers if a.status_code != 201]
        again = submit(server, key, "MP-0", native_xml("MP-0", 5000))
        assert again.status_code == 200 and again.json()["id"] == answers[0].json()["id"]
        listed = json.loads(api_stack.cli("list", "--json").stdout)
        assert sorted(j["internal_id"] for j in listed) == sorted(ids)
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


def test_api_refuses_to_start_without_a_secret(api_stack: Stack) -> None:
    env = {k: v for k, v in api_stack.env.items() if k != "EINVOICE_API_SECRET"}
    refused = run_cli(env, "api", "--port", str(free_port()), check=False)
    assert refused.returncode == 2 and "EINVOICE_API_SECRET" in refused.stderr
