"""Role, entity and route: what each key may do, and that another entity's jobs stay invisible (404)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.server import HACIENDA_ENTITY, MYSUITE_ENTITY, ApiServer, auth, create_key
from tests.e2e.stack import Stack
from worker.samples import native_xml

A, B = MYSUITE_ENTITY, HACIENDA_ENTITY

# Keys by name: (role, entity)
KEYS = {
    "submitter-A": ("submitter", A),
    "submitter-B": ("submitter", B),
    "operator-A": ("operator", A),
    "operator-all": ("operator", None),
    "auditor-all": ("auditor", None),
    "auditor-B": ("auditor", B),
}

# What each route answers per key, on a job of entity A. `submit-A` posts a mysuite (entity A)
# document, `submit-B` a hacienda (entity B) one. retry/links on a queued job: 409 when allowed.
EXPECTED: dict[str, dict[str, int]] = {
    "submit-A": {
        "submitter-A": 201,
        "submitter-B": 403,
        "operator-A": 201,
        "operator-all": 201,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "submit-B": {
        "submitter-A": 403,
        "submitter-B": 201,
        "operator-A": 403,
        "operator-all": 201,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "status": {
        "submitter-A": 200,
        "submitter-B": 404,
        "operator-A": 200,
        "operator-all": 200,
        "auditor-all": 200,
        "auditor-B": 404,
    },
    "events": {
        "submitter-A": 200,
        "submitter-B": 404,
        "operator-A": 200,
        "operator-all": 200,
        "auditor-all": 200,
        "auditor-B": 404,
    },
    "file": {
        "submitter-A": 404,
        "submitter-B": 404,
        "operator-A": 404,
        "operator-all": 404,
        "auditor-all": 404,
        "auditor-B": 404,
    },
    "retry": {
        "submitter-A": 403,
        "submitter-B": 403,
        "operator-A": 409,
        "operator-all": 409,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "links": {
        "submitter-A": 403,
        "submitter-B": 403,
        "operator-A": 409,
        "operator-all": 409,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "resume": {
        "submitter-A": 403,
        "submitter-B": 403,
        "operator-A": 200,
        "operator-all": 200,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "replay": {
        "submitter-A": 403,
        "submitter-B": 403,
        "operator-A": 404,
        "operator-all": 404,
        "auditor-all": 403,
        "auditor-B": 403,
    },
    "providers": {
        "submitter-A": 200,
        "submitter-B": 200,
        "operator-A": 200,
        "operator-all": 200,
        "auditor-all": 200,
        "auditor-B": 200,
    },
}


def call(api: ApiServer, route: str, job_id: str, headers: dict[str, str], n: int) -> httpx.Response:
    url = api.url
    xml = {**headers, "content-type": "application/xml"}
    match route:
        case "submit-A":
            return httpx.post(
                f"{url}/v1/invoices", params={"internal_id": f"M-{n}"}, content=native_xml(f"M-{n}", 6000), headers=xml
            )
        case "submit-B":
            params = {"internal_id": f"H-{n}", "provider": "hacienda"}
            return httpx.post(f"{url}/v1/invoices", params=params, content=b"<junk/>", headers=xml)
        case "status":
            return httpx.get(f"{url}/v1/invoices/{job_id}", headers=headers)
        case "events":
            return httpx.get(f"{url}/v1/invoices/{job_id}/events", headers=headers)
        case "file":
            return httpx.get(f"{url}/v1/invoices/{job_id}/files/xml", headers=headers)
        case "retry":
            return httpx.post(f"{url}/v1/invoices/{job_id}/retry", headers=headers)
        case "links":
            return httpx.post(f"{url}/v1/invoices/{job_id}/links", headers=headers)
        case "resume":
            return httpx.post(f"{url}/v1/providers/mysuite/resume", headers=headers)
        case "replay":
            return httpx.post(f"{url}/v1/webhooks/deliveries/msg_none/replay", headers=headers)
        case "providers":
            return httpx.get(f"{url}/v1/providers", headers=headers)
    raise AssertionError(route)


@pytest.fixture
def keys(api_stack: Stack) -> dict[str, dict[str, Any]]:
    return {name: create_key(api_stack.env, role, entity) for name, (role, entity) in KEYS.items()}


def test_role_entity_route_matrix(api_stack: Stack, api: ApiServer, keys: dict[str, dict[str, Any]]) -> None:
    owner = httpx.post(
        f"{api.url}/v1/invoices",
        params={"internal_id": "OWNED"},
        content=native_xml("OWNED", 6000),
        headers=auth(keys["operator-A"]),
    )
    assert owner.status_code == 201
    job_id = owner.json()["id"]
    got: dict[str, dict[str, int]] = {}
    n = 0
    for route, per_key in EXPECTED.items():
        got[route] = {}
        for name in per_key:
            n += 1
            response = call(api, route, job_id, auth(keys[name]), n)
            got[route][name] = response.status_code
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert got == EXPECTED
    for route in EXPECTED:
        assert call(api, route, job_id, {}, 0).status_code == 401
        assert call(api, route, job_id, {"Authorization": "Bearer eik_forged"}, 0).status_code == 401


def test_lists_show_only_the_keys_entity(api_stack: Stack, api: ApiServer, keys: dict[str, dict[str, Any]]) -> None:
    for name, route in (("submitter-A", "submit-A"), ("submitter-B", "submit-B")):
        for n in range(3):
            assert call(api, route, "", auth(keys[name]), n).status_code == 201

    def entities(name: str) -> list[str]:
        page = httpx.get(f"{api.url}/v1/invoices", headers=auth(keys[name])).json()
        return sorted(item["entity"] for item in page["items"])

    assert entities("submitter-A") == [A] * 3
    assert entities("submitter-B") == [B] * 3
    assert entities("auditor-B") == [B] * 3
    assert entities("auditor-all") == sorted([A] * 3 + [B] * 3)
    # The same internal id under both entities: ambiguous for a key that sees both, not for one that sees one.
    for name, route in (("submitter-A", "submit-A"), ("submitter-B", "submit-B")):
        assert call(api, route, "", auth(keys[name]), 77).status_code == 201
    shared_a = httpx.get(f"{api.url}/v1/invoices/M-77", headers=auth(keys["submitter-A"]))
    assert shared_a.status_code == 200 and shared_a.json()["entity"] == A
    assert httpx.get(f"{api.url}/v1/invoices/H-77", headers=auth(keys["submitter-A"])).status_code == 404
