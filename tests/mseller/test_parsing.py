"""Parsers against MSeller's real answers, quoted verbatim from the provider notes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from providers.base import InvalidPayload, VerifyStatus
from providers.mseller.client import _verify_result
from providers.mseller.ecf import (
    MalformedAnswer,
    classify_status,
    parse_batch,
    parse_dgii_responses,
    parse_ecf,
    parse_record,
    parse_send,
)
from providers.mseller.samples import sample_ecf, sample_ecf_document

# A.3: the success answer of a send.
SEND_ANSWER = """{ "rnc": "102320705", "ecf": "E310000009175",
  "internalTrackId": "58f1bdd7-f4be-4a2e-a1e6-570c95b8d477",
  "securityCode": "fWCZCV",
  "qr_url": "https://ecf.dgii.gov.do/testecf/consultatimbre?rncemisor=102320705&RncComprador=101023122&encf=E310000009175&FechaEmision=14-05-2025&montototal=637.2&FechaFirma=14-05-2025%2002:57:33&codigoseguridad=fWCZCV",
  "signedDate": "14-05-2025 02:57:33" }"""

# A.4: the single status query of an accepted document.
STATUS_ANSWER = r"""{ "fileName": "102320705E310000009179.xml", "updateAt": 1747250783965,
  "customerReceivedAt": "14-05-2025 15:26:21", "documentType": "Factura de Crédito Fiscal Electrónico",
  "customerResponse": "{\"_declaration\":{...},\"ARECF\":{...}}", "status": "Aceptado",
  "dgiiResponse": [
    "{\"trackId\":\"0cc42712-4a99-48be-b66d-346b33e36d7f\",\"error\":null,\"mensaje\":null}",
    "{\"trackId\":\"0cc42712-4a99-48be-b66d-346b33e36d7f\",\"codigo\":\"1\",\"estado\":\"Aceptado\",\"rnc\":\"102320705\",\"encf\":\"E310000009179\",\"secuenciaUtilizada\":true,\"fechaRecepcion\":\"5/14/2025 3:26:21 PM\",\"mensajes\":[{\"valor\":\"\",\"codigo\":0}]}" ],
  "createdAt": 1747250778433, "securityCode": "hhABiM",
  "signedXml": "102320705/documents/TesteCF/102320705E310000009179.xml", "ncf": "E310000009179",
  "internalTrackId": "a118ea44-ac12-466a-b071-c4b650bb5a4f", "customerReceived": "0",
  "qr_url": "https://ecf.dgii.gov.do/testecf/consultatimbre?...", "customerId": "102320705" }"""

# A.4: a real rejection entry of dgiiResponse.
REJECTION_ENTRY = """{"trackId":"32c4f7e0-…","codigo":"2","estado":"Rechazado","rnc":"102320705","encf":"E310000510916","secuenciaUtilizada":true,"fechaRecepcion":"11/3/2025 8:19:30 PM","mensajes":[{"valor":"El campo MontoGravadoTotal del área Totales de la sección Encabezado","codigo":1920}]}"""

# A.4: a type-32 summary's entry, `{"codigo":1,"estado":"Aceptado","mensajes":null,…}`, without
# the fields the notes elide.
SUMMARY_ENTRY = '{"codigo":1,"estado":"Aceptado","mensajes":null}'


def test_send_answer() -> None:
    receipt = parse_send(json.loads(SEND_ANSWER), "E310000009175")
    assert receipt.rnc == "102320705"
    assert receipt.security_code == "fWCZCV"
    assert receipt.internal_track_id == "58f1bdd7-f4be-4a2e-a1e6-570c95b8d477"
    assert receipt.signed_date == "14-05-2025 02:57:33"
    assert receipt.qr_url is not None and "codigoseguridad=fWCZCV" in receipt.qr_url
    with pytest.raises(MalformedAnswer):
        parse_send(json.loads(SEND_ANSWER), "E310000009176")


def test_single_status_answer() -> None:
    record = parse_record("E310000009179", json.loads(STATUS_ANSWER))
    assert record.verdict is VerifyStatus.ISSUED
    assert record.security_code == "hhABiM"
    assert record.internal_track_id == "a118ea44-ac12-466a-b071-c4b650bb5a4f"
    assert [reply.track_id for reply in record.replies] == ["0cc42712-4a99-48be-b66d-346b33e36d7f"] * 2
    assert record.dgii_code == "1"
    assert record.messages == ()  # {"valor": "", "codigo": 0} means no message
    # 3:26:21 PM in Santo Domingo (UTC-4).
    assert record.received_at == datetime(2025, 5, 14, 19, 26, 21, tzinfo=UTC)
    result = _verify_result(record)
    assert result.document is not None and result.document.fiscal_id == "E310000009179"
    assert json.loads(result.files["json"])["ncf"] == "E310000009179"


def test_rejection_entry_as_a_batch_result() -> None:
    body = {
        "total": 1,
        "results": [
            {
                "ecf": "E310000510916",
                "status": "Rechazado",
                "found": True,
                "data": {"status": "Rechazado", "dgiiResponse": [REJECTION_ENTRY], "ncf": "E310000510916"},
            }
        ],
    }
    record = parse_batch(body)["E310000510916"]
    assert record.verdict is VerifyStatus.FAILED
    assert record.dgii_code == "2"
    assert [str(m) for m in record.messages] == [
        "1920: El campo MontoGravadoTotal del área Totales de la sección Encabezado"
    ]
    result = _verify_result(record)
    assert result.error_code == "1920"
    assert result.error_message == (
        "DGII Rechazado: 1920: El campo MontoGravadoTotal del área Totales de la sección Encabezado"
    )


def test_summary_entry_has_a_numeric_codigo_and_no_messages() -> None:
    (reply,) = parse_dgii_responses([SUMMARY_ENTRY])
    assert reply.codigo == "1" and reply.estado == "Aceptado" and reply.messages == ()


def test_not_found_in_a_batch_is_pending() -> None:
    records = parse_batch(
        {"total": 1, "results": [{"ecf": "E310000000001", "status": "No encontrado", "found": False}]}
    )
    assert records["E310000000001"].verdict is VerifyStatus.PENDING


def test_without_mseller_status_the_last_dgii_word_decides() -> None:
    record = parse_record("E310000510916", {"dgiiResponse": [REJECTION_ENTRY]})
    assert record.verdict is VerifyStatus.FAILED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Aceptado", VerifyStatus.ISSUED),
        ("Aceptado Condicional", VerifyStatus.ISSUED),
        ("  ACEPTADO   condicional ", VerifyStatus.ISSUED),
        ("Rechazado", VerifyStatus.FAILED),
        ("Error", VerifyStatus.FAILED),
        ("En Proceso", VerifyStatus.PENDING),
        ("En Cola", VerifyStatus.PENDING),
        ("Enviado a la DGII", VerifyStatus.PENDING),
        ("No encontrado", VerifyStatus.PENDING),
        ("PROCESANDO", VerifyStatus.PENDING),
        ("", VerifyStatus.PENDING),
        (None, VerifyStatus.PENDING),
    ],
)
def test_status_values(value: str | None, expected: VerifyStatus) -> None:
    assert classify_status(value) is expected


def test_sample_documents_are_valid() -> None:
    for doc_type in ("31", "33", "34", "41", "44", "45", "46", "47"):
        parse_ecf(sample_ecf(1, doc_type=doc_type, lines=3), max_bytes=10**6)
    parse_ecf(sample_ecf(2, doc_type="32", comprador=None), max_bytes=10**6, entity="130862346")


def _broken(change: str) -> bytes:
    document = sample_ecf_document(5)
    ecf = document["ECF"]
    encabezado = ecf["Encabezado"]
    if change == "series":
        encabezado["IdDoc"]["eNCF"] = "B310000000005"
    elif change == "length":
        encabezado["IdDoc"]["eNCF"] = "E31000000005"
    elif change == "type":
        encabezado["IdDoc"]["eNCF"] = "E350000000005"
    elif change == "tipo_mismatch":
        encabezado["IdDoc"]["TipoeCF"] = "32"
    elif change == "rnc":
        encabezado["Emisor"]["RNCEmisor"] = "13086234"
    elif change == "buyer":
        del encabezado["Comprador"]
    elif change == "totales":
        del encabezado["Totales"]
    elif change == "items":
        ecf["DetallesItems"]["Item"] = []
    elif change == "total":
        encabezado["Totales"]["MontoTotal"] = "1200.00"
    elif change == "lines":
        ecf["DetallesItems"]["Item"][0]["MontoItem"] = "900.00"
    elif change == "amount":
        encabezado["Totales"]["TotalITBIS"] = "mucho"
    elif change == "root":
        document = {"Factura": ecf}
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "change",
    [
        "series",
        "length",
        "type",
        "tipo_mismatch",
        "rnc",
        "buyer",
        "totales",
        "items",
        "total",
        "lines",
        "amount",
        "root",
    ],
)
def test_local_validation_refuses(change: str) -> None:
    with pytest.raises(InvalidPayload):
        parse_ecf(_broken(change), max_bytes=10**6)


def test_local_validation_refuses_other_issuers_and_oversized_documents() -> None:
    with pytest.raises(InvalidPayload, match="not this account"):
        parse_ecf(sample_ecf(1), max_bytes=10**6, entity="101023122")
    with pytest.raises(InvalidPayload, match="exceeds"):
        parse_ecf(sample_ecf(1), max_bytes=100)
    with pytest.raises(InvalidPayload, match="not JSON"):
        parse_ecf(b"<ECF/>", max_bytes=100)
