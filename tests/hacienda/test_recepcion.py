"""POST and GET /recepcion against the sandbox: every answer class the pipeline depends on."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from providers.base import (
    AuthError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VerifyStatus,
)
from providers.hacienda.samples import sample_comprobante
from tests.hacienda.conftest import OTHER_USER, USER


def test_submit_is_accepted_with_the_clave_as_request_id(sandbox, make_client):
    payload = sample_comprobante(1)
    result = make_client().submit(payload, "inv-1")

    assert result.adopted is False
    assert len(result.request_id) == 50
    assert f"<Clave>{result.request_id}</Clave>".encode() in payload
    assert sandbox.counters()["claves"][result.request_id] == {"posts": 1, "created": 1}


def test_second_submit_of_a_clave_is_adopted(sandbox, make_client):
    client = make_client()
    first = client.submit(sample_comprobante(1), "inv-1")
    second = client.submit(sample_comprobante(1), "inv-1", attempt=2)

    assert second.adopted is True
    assert second.request_id == first.request_id
    assert sandbox.counters()["claves"][first.request_id] == {"posts": 2, "created": 1, "duplicates": 1}


def test_sandbox_path_style_is_served_too(sandbox, make_client):
    client = make_client(api_url=f"{sandbox.base}/recepcion-sandbox/v1")
    clave = client.submit(sample_comprobante(1), "inv-1").request_id
    assert client.verify(clave).status is VerifyStatus.ISSUED


def test_other_400_is_permanent_with_the_cause(sandbox, make_client):
    with pytest.raises(PermanentError) as caught:
        make_client(callback_url="not-a-url").submit(sample_comprobante(1), "inv-1")

    assert caught.value.code == "400"
    assert "callbackUrl" in str(caught.value)
    assert sandbox.totals().get("created", 0) == 0


def test_unauthorized_twice_is_an_auth_error_after_one_renewal(sandbox, make_client):
    sandbox.configure(refuse_tokens=True)
    with pytest.raises(AuthError) as caught:
        make_client().submit(sample_comprobante(1), "inv-1")

    assert caught.value.code == "401"
    assert "Token de acceso" in str(caught.value)
    counters = sandbox.counters()
    assert counters["totals"]["posts"] == 2
    assert counters["totals"]["status_401"] == 2
    assert counters["tokens"]["refreshes"] == 1


def test_forbidden_is_an_auth_error_without_retry(sandbox, make_client):
    sandbox.configure(blocked_users=[USER])
    with pytest.raises(AuthError) as caught:
        make_client().submit(sample_comprobante(1), "inv-1")

    assert caught.value.code == "403"
    assert "bloqueado" in str(caught.value)
    assert sandbox.totals()["posts"] == 1


def test_quota_429_raises_rate_limited_and_pauses_the_provider(sandbox, make_client):
    sandbox.configure(quota_per_hour=2, quota_hour_seconds=60)
    client = make_client()
    client.submit(sample_comprobante(1), "inv-1")
    client.submit(sample_comprobante(2), "inv-2")

    with pytest.raises(RateLimitedError) as caught:
        client.submit(sample_comprobante(3), "inv-3")
    assert caught.value.code == "429"
    assert 1 <= (caught.value.retry_after or 0) <= 60
    assert "cuota" in str(caught.value)

    # The pause holds every later call without spending more of the quota.
    with pytest.raises(RateLimitedError) as again:
        client.verify(client.submit(sample_comprobante(1), "inv-1").request_id)
    assert 0 < (again.value.retry_after or 0) <= 60
    totals = sandbox.totals()
    assert totals["status_429"] == 1
    assert totals["posts"] == 3


@pytest.mark.parametrize(
    ("status", "cause"),
    [(499, "Debe reintentarse"), (500, "falla simulada"), (502, "falla simulada"), (503, "falla simulada")],
)
def test_499_and_5xx_are_transient_with_the_cause(sandbox, make_client, status, cause):
    client = make_client()
    clave = client.submit(sample_comprobante(1), "inv-1").request_id
    sandbox.configure(error_share=1.0, error_status=status, fault_scope="recepcion")

    with pytest.raises(TransientError) as on_post:
        client.submit(sample_comprobante(2), "inv-2")
    with pytest.raises(TransientError) as on_get:
        client.verify(clave)

    for caught in (on_post, on_get):
        assert caught.value.code == str(status)
        assert cause in str(caught.value)


def test_outage_is_transient(sandbox, make_client):
    sandbox.configure(outage=True)
    with pytest.raises(TransientError) as caught:
        make_client().submit(sample_comprobante(1), "inv-1")
    assert caught.value.code == "503"


def test_dropped_connection_is_transient(sandbox, make_client):
    client = make_client()
    client.submit(sample_comprobante(1), "inv-1")  # token first, so only the API drops
    sandbox.configure(drop_share=1.0, fault_scope="recepcion")
    with pytest.raises(TransientError, match="failed"):
        client.submit(sample_comprobante(2), "inv-2")


def test_garbled_answer_to_a_received_post_is_transient_and_the_retry_adopted(sandbox, make_client):
    client = make_client()
    client.submit(sample_comprobante(1), "inv-1")
    sandbox.configure(malformed_share=1.0, fault_scope="recepcion")
    with pytest.raises(TransientError):
        client.submit(sample_comprobante(2), "inv-2")

    sandbox.configure(malformed_share=0.0)
    assert client.submit(sample_comprobante(2), "inv-2", attempt=2).adopted is True


def test_garbled_status_answer_is_transient(sandbox, make_client):
    client = make_client()
    clave = client.submit(sample_comprobante(1), "inv-1").request_id
    sandbox.configure(malformed_share=1.0, fault_scope="recepcion")
    with pytest.raises(TransientError, match="not JSON"):
        client.verify(clave)


def test_pending_while_processing(sandbox, make_client):
    sandbox.configure(processing_seconds=60)
    client = make_client()
    result = client.verify(client.submit(sample_comprobante(1), "inv-1").request_id)

    assert result.status is VerifyStatus.PENDING
    assert result.files == {}


def test_aceptado_is_issued_with_the_respuesta(sandbox, make_client):
    client = make_client()
    clave = client.submit(sample_comprobante(7), "inv-7").request_id
    result = client.verify(clave)

    assert result.status is VerifyStatus.ISSUED
    assert result.document is not None
    assert result.document.guid == clave
    assert result.document.serial == clave[21:41]
    assert result.document.year == 2024
    mensaje = etree.fromstring(result.files["respuesta"])
    assert mensaje.findtext("{*}Clave") == clave
    assert mensaje.findtext("{*}Mensaje") == "1"


def test_rechazado_is_failed_with_the_decoded_detail(sandbox, make_client):
    sandbox.configure(reject_share=1.0, reject_message="El tipo de documento no corresponde.")
    client = make_client()
    clave = client.submit(sample_comprobante(1), "inv-1").request_id
    result = client.verify(clave)

    assert result.status is VerifyStatus.FAILED
    assert result.error_message == "El tipo de documento no corresponde."
    assert result.error_code == "3"
    assert b"<Mensaje>3</Mensaje>" in result.files["respuesta"]
    with pytest.raises(PermanentError, match="rechazado"):
        client.retrieve(clave)


def test_anexo_3_key_style_is_understood(sandbox, make_client):
    sandbox.configure(status_style="camel", reject_share=1.0)
    client = make_client()
    result = client.verify(client.submit(sample_comprobante(1), "inv-1").request_id)
    assert result.status is VerifyStatus.FAILED
    assert result.error_message == "El comprobante no cumple con las validaciones de prueba del sandbox."


def test_unknown_clave_is_permanent_so_polling_stops(sandbox, make_client):
    from providers.hacienda.comprobante import parse_comprobante

    clave = parse_comprobante(sample_comprobante(99), max_bytes=1 << 20).clave.value
    with pytest.raises(PermanentError) as caught:
        make_client().verify(clave)

    assert caught.value.code == "404"
    assert f"No existe el recurso con Clave = [{clave}]" in str(caught.value)


def test_retrieve_returns_the_respuesta_inline_and_no_links(sandbox, make_client):
    client = make_client()
    clave = client.submit(sample_comprobante(1), "inv-1").request_id
    result = client.retrieve(clave)

    assert result.links == {}
    assert result.expires_at is None
    assert result.document is not None and result.document.guid == clave
    assert etree.fromstring(result.files["respuesta"]).findtext("{*}Mensaje") == "1"


def test_retrieve_of_a_pending_document_is_transient(sandbox, make_client):
    sandbox.configure(processing_seconds=60)
    client = make_client()
    with pytest.raises(TransientError, match="still recibido"):
        client.retrieve(client.submit(sample_comprobante(1), "inv-1").request_id)


def test_download_is_not_offered(make_client, tmp_path: Path):
    with pytest.raises(PermanentError):
        make_client().download("http://example.invalid/x", tmp_path / "x")


def test_request_id_that_is_not_a_clave_never_reaches_hacienda(sandbox, make_client):
    with pytest.raises(PermanentError):
        make_client().verify("../../_admin/reset")
    assert sandbox.totals().get("gets", 0) == 0


def test_post_body_carries_the_comprobante_fields(sandbox, make_client):
    """The sandbox rejects a document whose POST fields disagree with its XML; this one is accepted."""
    payload = sample_comprobante(5, receptor=("01", "114480790", "Cliente"))
    client = make_client()
    clave = client.submit(payload, "inv-5").request_id
    mensaje = client.verify(clave).files["respuesta"]
    root = etree.fromstring(mensaje)
    assert root.findtext("{*}NumeroCedulaEmisor") == "3101123456"
    assert root.findtext("{*}TipoIdentificacionEmisor") == "02"
    assert root.findtext("{*}NumeroCedulaReceptor") == "114480790"


def test_entity_mismatch_is_refused_locally(sandbox, make_client):
    client = make_client(username=OTHER_USER, password="otra")
    assert client.entity == "114480790"
    with pytest.raises(PermanentError, match="emisor"):
        client.submit(sample_comprobante(1), "inv-1")
    assert sandbox.totals().get("posts", 0) == 0
