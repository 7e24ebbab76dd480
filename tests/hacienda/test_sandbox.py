"""The simulator's own answers where the client never goes (it validates first), and its configuration."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from providers.hacienda.samples import sample_comprobante
from sandbox.hacienda import HaciendaSandboxConfig
from tests.hacienda.conftest import OTHER_USER, PASSWORD, USER

DOC_EXAMPLE = "50601011600310112345600100010100000000011999999999"  # Hacienda's own example, situación 9


@pytest.fixture
def api(sandbox):
    token = httpx.post(
        sandbox.idp_url,
        data={"grant_type": "password", "client_id": "api-stag", "username": USER, "password": PASSWORD},
    ).json()["access_token"]
    with httpx.Client(base_url=sandbox.api_url, headers={"Authorization": f"bearer {token}"}) as client:
        yield client


def _clave(payload: bytes) -> str:
    return payload.split(b"<Clave>")[1].split(b"</Clave>")[0].decode()


def _body(payload: bytes, clave: str, **extra):
    return {
        "clave": clave,
        "fecha": "2024-05-01T10:00:00-06:00",
        "emisor": {"tipoIdentificacion": "02", "numeroIdentificacion": "3101123456"},
        "comprobanteXml": base64.b64encode(payload).decode(),
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ({"clave": DOC_EXAMPLE}, "fecha es requerido"),
        ({**_body(b"<x/>", DOC_EXAMPLE)}, "no es válida: la situación"),
        ({**_body(b"<x/>", "12345")}, "50 dígitos"),
        ({**_body(b"<x/>", _clave(sample_comprobante(9))), "comprobanteXml": "%%%"}, "base64"),
    ],
)
def test_invalid_requests_get_400_with_a_cause(api, body, cause):
    response = api.post("recepcion", json=body)
    assert response.status_code == 400
    assert cause in response.headers["x-error-cause"]
    assert response.headers["validation-exception"] == "true"


def test_doc_example_clave_passes_when_strict_mode_is_off(sandbox, api):
    sandbox.configure(strict_clave=False)
    assert api.post("recepcion/", json=_body(b"<x/>", DOC_EXAMPLE)).status_code == 202


def test_xml_that_disagrees_with_the_request_is_rejected_in_processing(api):
    payload = sample_comprobante(1)
    other = _clave(sample_comprobante(2))
    assert api.post("recepcion", json=_body(payload, other)).status_code == 202

    status = api.get(f"recepcion/{other}").json()
    assert status["ind-estado"] == "rechazado"
    assert b"no coincide" in base64.b64decode(status["respuesta-xml"])


def test_status_moves_from_recibido_to_procesando_to_final(sandbox, api):
    sandbox.configure(processing_seconds=1.0)
    payload = sample_comprobante(1)
    clave = _clave(payload)
    api.post("recepcion", json=_body(payload, clave, callbackUrl="https://erp.example.com/cb"))
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] != "aceptado"):
        status = api.get(f"recepcion/{clave}").json()
        if not seen or seen[-1] != status["ind-estado"]:
            seen.append(status["ind-estado"])
        time.sleep(0.1)
    assert seen == ["recibido", "procesando", "aceptado"]
    assert status["callbackUrl"] == "https://erp.example.com/cb"


def test_quota_headers_on_every_answer(sandbox, api):
    sandbox.configure(quota_per_hour=3, quota_hour_seconds=100, quota_per_day=50)
    answers = [api.get(f"recepcion/{DOC_EXAMPLE}") for _ in range(4)]

    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[3].headers["x-ratelimit-limit"] == "3"
    assert 99 <= int(answers[3].headers["retry-after"]) <= 100
    assert int(answers[3].headers["x-ratelimit-reset"]) - time.time() > 98


def test_admin_refuses_unknown_or_bad_settings(sandbox):
    assert sandbox.admin.post("/config", json={"nope": 1}).status_code == 400
    assert sandbox.admin.post("/config", json={"error_share": 2}).status_code == 400
    assert sandbox.admin.post("/config", json={"error_status": 404}).status_code == 400
    config = sandbox.admin.get("/config").json()
    assert config["users"] == sorted([USER, OTHER_USER])  # names only, never the passwords


def test_config_from_environment_and_bench_preset():
    config = HaciendaSandboxConfig.from_env(
        {
            "SANDBOX_HACIENDA_PRESET": "bench",
            "SANDBOX_HACIENDA_USERS": "a@b:pw:with:colons, c@d:x",
            "SANDBOX_HACIENDA_BLOCKED_USERS": "c@d",
            "SANDBOX_HACIENDA_REJECT_SHARE": "0.25",
            "SANDBOX_HACIENDA_OUTAGE": "yes",
            "SANDBOX_HACIENDA_SEED": "3",
        }
    )
    assert (config.processing_seconds, config.quota_per_hour, config.quota_per_day, config.latency_ms) == (
        0,
        0,
        0,
        0,
    )
    assert config.users == {"a@b": "pw:with:colons", "c@d": "x"}
    assert config.blocked_users == ["c@d"]
    assert (config.reject_share, config.outage, config.seed) == (0.25, True, 3)
    defaults = HaciendaSandboxConfig.from_env({})
    assert (defaults.quota_per_hour, defaults.quota_per_day, defaults.access_token_seconds) == (
        100,
        1000,
        300,
    )
    with pytest.raises(ValueError, match="status_style"):
        HaciendaSandboxConfig.from_env({"SANDBOX_HACIENDA_STATUS_STYLE": "xml"})
