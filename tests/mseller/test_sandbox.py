"""The MSeller sandbox's own protocol, over HTTP: shapes, refusals, knobs and the mount."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from providers.mseller.samples import encf, sample_ecf
from providers.mseller.token import jwt_expiry
from sandbox.mseller import MSellerSandboxConfig
from sandbox.mseller.config import DEFAULT_API_KEY, DEFAULT_EMAIL, DEFAULT_PASSWORD
from tests.mseller.conftest import Sandbox


def login(sandbox: Sandbox, environment: str = "TesteCF") -> dict[str, Any]:
    response = httpx.post(
        f"{sandbox.url}/{environment}/customer/authentication",
        json={"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD},
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def api(sandbox: Sandbox, token: str, key: str = DEFAULT_API_KEY) -> httpx.Client:
    return httpx.Client(
        base_url=f"{sandbox.url}/TesteCF", headers={"Authorization": f"Bearer {token}", "X-API-KEY": key}
    )


def test_tokens_carry_their_configured_lifetime(sandbox: Sandbox) -> None:
    sandbox.configure(token_seconds=120)
    tokens = login(sandbox)
    assert set(tokens) == {"accessToken", "idToken", "refreshToken"}
    expiry = jwt_expiry(tokens["idToken"])
    assert expiry is not None and abs(expiry - time.time() - 120) < 5


def test_only_the_id_token_opens_business_calls(sandbox: Sandbox) -> None:
    tokens = login(sandbox)
    assert api(sandbox, tokens["accessToken"]).get("/documentos-ecf", params={"ecf": encf(1)}).status_code == 401
    assert api(sandbox, tokens["idToken"]).get("/documentos-ecf", params={"ecf": encf(1)}).status_code == 404
    assert sandbox.totals()["counted"] == 1


def test_single_status_has_the_real_shape(sandbox: Sandbox) -> None:
    client = api(sandbox, login(sandbox)["idToken"])
    sent = client.post("/documentos-ecf", content=sample_ecf(1))
    assert sent.status_code == 201
    assert set(sent.json()) == {"rnc", "ecf", "internalTrackId", "securityCode", "qr_url", "signedDate"}
    body = client.get("/documentos-ecf", params={"ecf": encf(1)}).json()
    assert body["status"] == "Aceptado" and body["ncf"] == encf(1)
    assert isinstance(body["createdAt"], int) and isinstance(body["updateAt"], int)
    first, second = (json.loads(entry) for entry in body["dgiiResponse"])
    assert first == {"trackId": first["trackId"], "error": None, "mensaje": None}
    assert second["codigo"] == "1" and second["secuenciaUtilizada"] is True


def test_validate_only_stores_nothing(sandbox: Sandbox) -> None:
    client = api(sandbox, login(sandbox)["idToken"])
    response = client.post("/documentos-ecf", params={"validate": "true"}, content=sample_ecf(2))
    assert response.json()["valid"] is True
    assert client.post("/documentos-ecf", content=sample_ecf(2)).status_code == 201


def test_refusals(sandbox: Sandbox) -> None:
    client = api(sandbox, login(sandbox)["idToken"])
    bad = client.post("/documentos-ecf", content=json.dumps({"ECF": {"Encabezado": {"IdDoc": {"eNCF": "X1"}}}}))
    assert bad.status_code == 400 and bad.json()["code"] == "ECF_VALIDATION_FAILED"
    assert {e["field"] for e in bad.json()["details"]["validationErrors"]} == {"eNCF", "RNCEmisor", "Totales"}
    assert client.post("/documentos-ecf", content=b"{").json()["code"] == "INVALID_JSON"
    too_many = client.post("/documentos-ecf/status/batch", json={"ecfs": [encf(n) for n in range(1, 102)]})
    assert too_many.status_code == 400 and too_many.json()["code"] == "BATCH_TOO_LARGE"
    other_env = api(sandbox, login(sandbox)["idToken"], key="sandbox-certecf-key")
    assert other_env.post("/documentos-ecf/status/batch", json={"ecfs": [encf(1)]}).status_code == 403


def test_outage_is_not_counted(sandbox: Sandbox) -> None:
    client = api(sandbox, login(sandbox)["idToken"])
    sandbox.configure(outage=True)
    assert client.post("/documentos-ecf/status/batch", json={"ecfs": [encf(1)]}).status_code == 503
    assert sandbox.totals().get("counted", 0) == 0


def test_bad_settings_are_refused(sandbox: Sandbox) -> None:
    for changes in ({"plan": "platino"}, {"rejected_share": 2}, {"outcomes": {encf(1): "maybe"}}, {"nope": 1}):
        assert httpx.post(f"{sandbox.url}/_admin/config", json=changes).status_code == 400


def test_settings_from_the_environment() -> None:
    config = MSellerSandboxConfig.from_env(
        {
            "SANDBOX_MSELLER_PRESET": "bench",
            "SANDBOX_MSELLER_PLAN": "negocio",
            "SANDBOX_MSELLER_OUTCOMES": "E310000000001:rejected,E310000000002:conditional",
        }
    )
    assert config.processing_seconds == 0 and config.requests_per_second == 30
    assert config.requests_per_month == 10_000
    assert config.outcomes == {"E310000000001": "rejected", "E310000000002": "conditional"}
    with pytest.raises(ValueError):
        MSellerSandboxConfig.from_env({"SANDBOX_MSELLER_PRESET": "fast"})


def test_every_simulator_serves_mseller(sandbox_url: str) -> None:
    response = httpx.post(
        f"{sandbox_url}/mseller/TesteCF/customer/authentication",
        json={"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD},
    )
    assert response.status_code == 200 and "idToken" in response.json()
