"""The simulator's own protocol: routing, refusals of the SOAP layer, parameters, admin knobs."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from tests.prodigia.conftest import DATOS, ProdigiaSandbox

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


def call(sandbox: ProdigiaSandbox, inner: str, namespace: str = "addendas.ws.pade.mx") -> httpx.Response:
    body = (
        f'<S:Envelope xmlns:S="{SOAP}"><S:Body><t:procesarAddenda xmlns:t="{namespace}">{inner}'
        "</t:procesarAddenda></S:Body></S:Envelope>"
    )
    return httpx.post(sandbox.url, content=body.encode(), headers={"Content-Type": "text/xml", "SOAPAction": '""'})


def codigo(response: httpx.Response) -> str:
    found = re.search(r"&lt;codigo&gt;(\d+)&lt;/codigo&gt;", response.text)
    assert found is not None, response.text
    return found.group(1)


def test_the_service_path_is_case_insensitive_and_others_are_404(prodigia: ProdigiaSandbox) -> None:
    lower = prodigia.url.lower() + "?WSDL"
    assert httpx.get(lower).status_code == 200
    assert httpx.get(prodigia.base_url + "/prodigia/PadeServ/Otro?wsdl").status_code == 404
    assert b"?wsdl" in httpx.get(prodigia.url).content


@pytest.mark.parametrize(
    "inner",
    [
        "<contrato>SANDBOX-CONTRATO</contrato><usuario>sandbox</usuario><datos>x</datos>",
        "<contrato>SANDBOX-CONTRATO</contrato><usuario>sandbox</usuario><passwd>sandbox</passwd>",
    ],
    ids=["no-passwd", "no-datos"],
)
def test_missing_parameters_answer_code_3_and_count_no_login(prodigia: ProdigiaSandbox, inner: str) -> None:
    response = call(prodigia, inner)
    assert response.status_code == 200
    assert codigo(response) == "3"
    assert "xmlBase64" not in response.text
    assert prodigia.counters()["logins"].get("sandbox", {}).get("refusals", 0) == 0


def test_success_has_an_empty_mensaje_and_the_contract_echoed(prodigia: ProdigiaSandbox) -> None:
    datos = DATOS.replace("\n", "&#10;")
    inner = (
        f"<contrato>SANDBOX-CONTRATO</contrato><usuario>sandbox</usuario><passwd>sandbox</passwd><datos>{datos}</datos>"
    )
    text = call(prodigia, inner).text
    assert "&lt;mensaje/&gt;" in text
    assert "&lt;contrato&gt;SANDBOX-CONTRATO&lt;/contrato&gt;" in text
    encoded = re.search(r"&lt;xmlBase64&gt;([^&]+)&lt;", text)
    assert encoded is not None
    assert base64.b64decode(encoded.group(1)).startswith(b"<?xml")


@pytest.mark.parametrize(
    "body",
    [b"<no-xml", b"<Envelope/>", f'<S:Envelope xmlns:S="{SOAP}"><S:Body/></S:Envelope>'.encode()],
    ids=["not-xml", "not-soap", "empty-body"],
)
def test_broken_envelopes_get_a_client_fault(prodigia: ProdigiaSandbox, body: bytes) -> None:
    response = httpx.post(prodigia.url, content=body, headers={"Content-Type": "text/xml"})
    assert response.status_code == 500
    assert "<faultcode>S:Client</faultcode>" in response.text
    assert prodigia.calls() == 0


def test_another_namespace_is_not_dispatched(prodigia: ProdigiaSandbox) -> None:
    response = call(prodigia, "<datos>x</datos>", namespace="urn:otro")
    assert response.status_code == 500
    assert "Cannot find dispatch method for {urn:otro}procesarAddenda" in response.text


@pytest.mark.parametrize(
    "knobs",
    [
        {"unknown": 1},
        {"tamper": "subtle"},
        {"answer_style": "json"},
        {"maintenance_windows": "25:00-26:00"},
        {"http500_rate": 2},
        {"lock_after": 0},
        {"preset": "bench"},
    ],
)
def test_bad_knobs_are_refused_with_400(prodigia: ProdigiaSandbox, knobs: dict[str, object]) -> None:
    response = httpx.post(prodigia.base_url + "/prodigia/_admin/config", json=knobs)
    assert response.status_code == 400
    assert "error" in response.json()


def test_preset_default_returns_to_the_start_up_knobs(prodigia: ProdigiaSandbox) -> None:
    assert prodigia.configure(tamper="tfd", lock_after=5)["tamper"] == "tfd"
    config = prodigia.configure(preset="default")
    assert config["tamper"] == "" and config["lock_after"] == 3
