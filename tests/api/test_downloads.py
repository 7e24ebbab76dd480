"""SAT bulk downloads and the CFDI index over HTTP: the CLI's JSON, rules, and entity scoping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from models.access import AuditEntry
from models.cfdi import upsert_cfdi
from tests.api.server import HACIENDA_ENTITY, MYSUITE_ENTITY, ApiServer, auth, create_key
from tests.api.test_api import submit
from tests.e2e.stack import Stack
from worker.samples import native_xml

A, B = MYSUITE_ENTITY, HACIENDA_ENTITY
OTHER = "XAXX010101000"


@pytest.fixture
def fiel_api(api_stack: Stack, tmp_path: Path) -> Iterator[ApiServer]:
    """The API with a FIEL configured, so that requests reach the sandbox's Descarga Masiva."""
    cer, key = tmp_path / "fiel.cer", tmp_path / "fiel.key"
    cer.write_bytes(b"-----FIEL CERTIFICATE-----" * 8)
    key.write_bytes(b"-----FIEL PRIVATE KEY-----" * 8)
    api_stack.env.update(
        {"MYSUITE_FIEL_CER_FILE": str(cer), "MYSUITE_FIEL_KEY_FILE": str(key), "MYSUITE_FIEL_PASSWORD": "fiel-password"}
    )
    server = ApiServer(api_stack.env, tmp_path / "api.log").start()
    yield server
    server.stop()


def request(api: ApiServer, key: dict[str, Any], rfc: str = A, **changes: str) -> httpx.Response:
    body = {"rfc": rfc, "from": "2025-06-01 00:00:00", "to": "2025-06-01 23:59:59", "direction": "issued"}
    return httpx.post(
        f"{api.url}/v1/downloads", json={**body, "kind": "metadata", **changes}, headers=auth(key), timeout=30
    )


def get(api: ApiServer, key: dict[str, Any], path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{api.url}{path}", params=params, headers=auth(key), timeout=10)


def test_a_download_requested_over_http_is_what_the_cli_shows(api_stack: Stack, fiel_api: ApiServer) -> None:
    key = create_key(api_stack.env, "submitter", A)
    made = request(fiel_api, key)
    assert made.status_code == 201, made.text
    (row,) = made.json()["requests"]
    assert made.json()["refused"] == [] and row["rfc"] == A and row["state"] == "registered"

    cli_status = json.loads(api_stack.cli("downloads", "status", row["id"], "--json").stdout)
    assert row == cli_status
    assert get(fiel_api, key, f"/v1/downloads/{row['id']}").json() == cli_status
    listed = get(fiel_api, key, "/v1/downloads")
    assert listed.json() == json.loads(api_stack.cli("downloads", "list", "--json").stdout) == [cli_status]
    by_state = get(fiel_api, key, "/v1/downloads", state="registered").json()
    assert by_state == json.loads(api_stack.cli("downloads", "list", "--state", "registered", "--json").stdout)
    assert get(fiel_api, key, "/v1/downloads", state="indexed").json() == []

    with api_stack.store.db.session() as session:
        actions = {(a.action, a.target, a.outcome) for a in session.scalars(sa.select(AuditEntry))}
    assert {("download.request", row["id"], "created"), ("download.read", row["id"], "ok")} <= actions


def test_an_entity_key_neither_reads_nor_creates_another_rfcs_requests(api_stack: Stack, fiel_api: ApiServer) -> None:
    mine = request(fiel_api, create_key(api_stack.env, "submitter", A))
    assert mine.status_code == 201, mine.text
    job_id = mine.json()["requests"][0]["id"]
    other = create_key(api_stack.env, "submitter", B)

    refused = request(fiel_api, other, rfc=A.lower())
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert get(fiel_api, other, f"/v1/downloads/{job_id}").status_code == 404
    assert get(fiel_api, other, "/v1/downloads").json() == []
    auditor = create_key(api_stack.env, "auditor")
    assert request(fiel_api, auditor).status_code == 403
    assert [r["id"] for r in get(fiel_api, auditor, "/v1/downloads").json()] == [job_id]
    invoice = submit(fiel_api, create_key(api_stack.env, "submitter", A), "INV-1", native_xml("INV-1", 6000))
    assert invoice.status_code == 201, invoice.text
    for ref in (invoice.json()["id"], "does-not-exist"):
        assert get(fiel_api, auditor, f"/v1/downloads/{ref}").status_code == 404


def test_a_rule_violation_or_a_bad_time_is_a_422_problem(api_stack: Stack, api: ApiServer) -> None:
    key = create_key(api_stack.env, "operator")
    backwards = request(api, key, **{"from": "2025-07-01 00:00:00"})
    assert backwards.status_code == 422 and backwards.headers["content-type"].startswith("application/problem+json")
    assert backwards.json()["rule"] == "period_order" and "period_order" in backwards.json()["detail"]
    bad_rfc = request(api, key, rfc="NOT AN RFC")
    assert bad_rfc.status_code == 422 and bad_rfc.json()["rule"] == "rfc_format"
    for changes in ({"from": "yesterday"}, {"direction": "sideways"}):
        response = request(api, key, **changes)
        assert response.status_code == 422 and response.json()["status"] == 422
    assert api_stack.store.jobs.list_jobs(kind="download_request") == []


def cfdi_row(uuid: str, direction: str, issuer: str, receiver: str, day: int) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "direction": direction,
        "issuer_rfc": issuer,
        "issuer_name": f"{issuer} SA",
        "receiver_rfc": receiver,
        "receiver_name": None,
        "issued_at": datetime(2025, 3, day, 18, tzinfo=UTC),
        "certified_at": None,
        "total": "1160.50",
        "type": "I",
        "status": "vigente",
        "cancelled_at": None,
        "pac_rfc": None,
    }


def test_the_cfdi_index_is_what_the_cli_lists_and_entity_keys_see_their_own(api_stack: Stack, api: ApiServer) -> None:
    rows = [
        cfdi_row("00000000-0000-4000-8000-000000000001", "issued", A, OTHER, 3),
        cfdi_row("00000000-0000-4000-8000-000000000002", "received", OTHER, A, 4),
        cfdi_row("00000000-0000-4000-8000-000000000003", "received", OTHER, B, 5),
    ]
    with api_stack.store.engine.begin() as conn:
        upsert_cfdi(conn, rows, now=datetime.now(UTC))
    everyone = create_key(api_stack.env, "auditor")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, []),
        ({"direction": "received"}, ["--direction", "received"]),
        ({"rfc": OTHER.lower(), "limit": 2}, ["--rfc", OTHER.lower(), "--limit", "2"]),
        ({"from": "2025-03-04", "to": "2025-03-05 12:00:00"}, ["--from", "2025-03-04", "--to", "2025-03-05 12:00:00"]),
    ]
    for api_params, cli_args in cases:
        response = get(api, everyone, "/v1/cfdi", **api_params)
        assert response.status_code == 200, response.text
        assert response.json() == json.loads(api_stack.cli("cfdi", "list", *cli_args, "--json").stdout)
    assert len(get(api, everyone, "/v1/cfdi").json()) == 3

    scoped = create_key(api_stack.env, "submitter", A)
    assert [r["uuid"][-1] for r in get(api, scoped, "/v1/cfdi").json()] == ["1", "2"]
    assert [r["uuid"][-1] for r in get(api, scoped, "/v1/cfdi", rfc=B).json()] == []
    for params in ({"from": "March"}, {"limit": 1001}, {"direction": "both"}):
        assert get(api, scoped, "/v1/cfdi", **params).status_code == 422
