"""MYSuite answer parsing against the recorded real response, the seed's examples, and their variants."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from providers.answers import MalformedAnswer
from providers.base import AuthError, PermanentError, RateLimitedError, TransientError, VerifyStatus
from providers.mysuite.parsing import (
    interpret_http_answer,
    looks_like_auth_failure,
    parse_async_record,
    parse_issued_document,
    parse_links,
    parse_lookup,
    parse_timestamp,
    parse_transaction_reply,
    parse_verify,
    refusal_error,
    sniff_content_type,
)
from providers.ratelimit import parse_retry_after
from tests.providers.mysuite_samples import (
    SEED_REQUEST_ID,
    SEED_VERIFY_JSON,
    SEED_VERIFY_XML,
    SEED_VERIFY_XML_PRETTY,
    TIMBRAR_RESPONSE,
    b64,
    envelope,
)

SEED_ENROLLED = datetime(2018, 11, 29, 17, 49, 15, tzinfo=UTC)


# -- the recorded real response ------------------------------------------------------------------


def test_recorded_timbrar_response_is_read_with_trimmed_values() -> None:
    assert TIMBRAR_RESPONSE.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n        <soap:Envelope')
    reply = parse_transaction_reply(TIMBRAR_RESPONSE)
    assert reply.result is True
    assert reply.code == "1"
    assert reply.transaction == "TIMBRAR"
    assert reply.requestor_active is True
    assert reply.data == "20393 96f342f4-a28a-487a-907f-7d00f388a8ce"  # the leading space is gone
    assert reply.description is None and reply.hint is None  # <Description/>, <Hint/>
    assert reply.identifier == {}
    assert reply.response_data2 == "51749"
    assert reply.response_data3 == "OK"
    assert reply.response_data1 is not None
    tfd = base64.b64decode(reply.response_data1)
    assert b'UUID="96f342f4-a28a-487a-907f-7d00f388a8ce"' in tfd


def test_recorded_response_through_the_http_classifier() -> None:
    reply = interpret_http_answer(200, {}, TIMBRAR_RESPONSE)
    assert reply.result and not looks_like_auth_failure(reply)


# -- the seed's verify examples ------------------------------------------------------------------


def test_seed_verify_xml_copy() -> None:
    record = parse_async_record(b64(SEED_VERIFY_XML), None, SEED_REQUEST_ID)
    assert record.source == "xml"
    assert record.status == 2
    assert record.entity == "JES900109Q90"
    assert record.internal_id == "db062587-e759-4c06-b3ff-fac0ee25d295"
    assert record.document_guid == "687bc63c-e03e-4c64-8eff-602de879bd1e"
    assert record.year == 2018
    assert record.batch is None  # <Batch />
    assert record.serial == "8688"
    assert record.error_message is None  # ErrorMsg omitted
    assert record.enrolled_at == SEED_ENROLLED  # 11:49:15 Mexico City, no offset written


def test_seed_verify_json_copy_trims_the_internal_id() -> None:
    assert b'"InternalID": " db062587' in SEED_VERIFY_JSON
    record = parse_async_record(None, b64(SEED_VERIFY_JSON), SEED_REQUEST_ID)
    assert record.source == "json"
    assert record.internal_id == "db062587-e759-4c06-b3ff-fac0ee25d295"
    assert record.year == 2018
    assert record.batch is None  # ""
    assert record.serial == "8688"
    assert record.enrolled_at == SEED_ENROLLED  # /Date(1543513755000)/ is UTC


def test_seed_copies_agree() -> None:
    from_xml = parse_async_record(b64(SEED_VERIFY_XML), None)
    from_pretty = parse_async_record(b64(SEED_VERIFY_XML_PRETTY), None)
    from_json = parse_async_record(None, b64(SEED_VERIFY_JSON))
    fields = (
        "status",
        "uuid",
        "entity",
        "internal_id",
        "enrolled_at",
        "document_guid",
        "year",
        "batch",
        "serial",
    )
    for name in fields:
        assert getattr(from_xml, name) == getattr(from_json, name) == getattr(from_pretty, name), name


def test_seed_verify_gives_the_issued_document() -> None:
    result = parse_verify(b64(SEED_VERIFY_XML), b64(SEED_VERIFY_JSON), SEED_REQUEST_ID)
    assert result.status is VerifyStatus.ISSUED
    assert result.document is not None
    assert result.document.guid == "687bc63c-e03e-4c64-8eff-602de879bd1e"  # DocumentGUID, not Uuid
    assert (result.document.year, result.document.batch, result.document.serial) == (2018, None, "8688")
    assert result.document.enrolled_at == SEED_ENROLLED


@pytest.mark.parametrize(
    "rd1",
    [
        None,
        "",
        "not base64 at all!",
        b64("<AsyncRequest><Status>2</Status"),  # truncated XML
        b64("<Other><Status>2</Status></Other>"),
        b64("<AsyncRequest><Status>9</Status></AsyncRequest>"),
        b64("<!DOCTYPE a [<!ENTITY e 'x'>]><AsyncRequest><Status>&e;</Status></AsyncRequest>"),
    ],
)
def test_broken_or_missing_xml_copy_falls_back_to_json(rd1: str | None) -> None:
    record = parse_async_record(rd1 or None, b64(SEED_VERIFY_JSON), SEED_REQUEST_ID)
    assert record.source == "json"
    assert record.status == 2


def test_broken_json_copy_falls_back_is_unneeded_when_xml_reads() -> None:
    record = parse_async_record(b64(SEED_VERIFY_XML), b64("{not json"), SEED_REQUEST_ID)
    assert record.source == "xml"


def test_both_copies_broken_is_transient() -> None:
    with pytest.raises(TransientError, match="unreadable"):
        parse_verify(b64("<AsyncRequest/>"), b64("[]"), SEED_REQUEST_ID)
    with pytest.raises(TransientError, match="no record"):
        parse_verify(None, None, SEED_REQUEST_ID)


def test_record_about_another_request_is_not_trusted() -> None:
    with pytest.raises(TransientError, match="another request"):
        parse_verify(b64(SEED_VERIFY_XML), b64(SEED_VERIFY_JSON), "fd339e5c-3685-4773-a3ea-be28c8b92dfe")
    upper = parse_verify(b64(SEED_VERIFY_XML), None, SEED_REQUEST_ID.upper())
    assert upper.status is VerifyStatus.ISSUED


def test_pending_and_failed_records() -> None:
    pending = (
        "<AsyncRequest><Entity>JES900109Q90</Entity><Uuid>a6b30f75-37c1-4972-aa9c-3cdf523b9bdd</Uuid>"
        "<Status> 1 </Status></AsyncRequest>"
    )
    assert parse_verify(b64(pending), None, SEED_REQUEST_ID).status is VerifyStatus.PENDING
    failed = {
        "Entity": "JES900109Q90",
        "Uuid": SEED_REQUEST_ID,
        "Status": 3,
        "Year": None,
        "DocumentGUID": None,
        "ErrorMsg": b64("El RFC del receptor no existe en la lista de contribuyentes"),
        "Extra": {"nested": [1, 2]},
    }
    result = parse_verify(None, b64(json.dumps(failed)), SEED_REQUEST_ID)
    assert result.status is VerifyStatus.FAILED
    assert result.error_message == "El RFC del receptor no existe en la lista de contribuyentes"
    assert result.document is None


def test_tolerates_spaces_unknown_elements_and_offsets() -> None:
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<AsyncRequest>\n'
        "  <Uuid> a6b30f75-37c1-4972-aa9c-3cdf523b9bdd </Uuid>\n  <NewField>whatever</NewField>\n"
        "  <EnrolledTimeStamp> 2018-11-29T11:49:15.1234567-06:00 </EnrolledTimeStamp>\n"
        "  <Status>\n2\n</Status>\n  <DocumentGUID> 687bc63c-e03e-4c64-8eff-602de879bd1e </DocumentGUID>\n"
        "  <Year> 2018 </Year>\n  <Batch> A </Batch>\n  <Serial> 8688 </Serial>\n</AsyncRequest>"
    )
    result = parse_verify(b64(xml), None, SEED_REQUEST_ID)
    assert result.document is not None
    assert result.document.guid == "687bc63c-e03e-4c64-8eff-602de879bd1e"
    assert (result.document.year, result.document.batch, result.document.serial) == (2018, "A", "8688")
    assert result.document.enrolled_at == datetime(2018, 11, 29, 17, 49, 15, 123456, tzinfo=UTC)


def test_status_2_without_document_guid_is_unreadable() -> None:
    with pytest.raises(TransientError):
        parse_verify(b64("<AsyncRequest><Status>2</Status></AsyncRequest>"), None, SEED_REQUEST_ID)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/Date(1543513755000)/", SEED_ENROLLED),
        ("/Date(1543513755000-0600)/", SEED_ENROLLED),
        ("2018-11-29T11:49:15", SEED_ENROLLED),
        ("2018-11-29T17:49:15Z", SEED_ENROLLED),
        ("2023-03-21T10:56:25.5256369-06:00", datetime(2023, 3, 21, 16, 56, 25, 525636, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        ("/Date(99999999999999999)/", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


# -- envelope-level errors -----------------------------------------------------------------------


def test_missing_code_is_transient() -> None:
    with pytest.raises(TransientError, match="Code"):
        parse_transaction_reply(envelope(code=None))


def test_empty_or_garbage_code_is_transient() -> None:
    for code in ("", "one"):
        with pytest.raises(TransientError, match="Code"):
            parse_transaction_reply(envelope(code=code))


def test_soap_fault_is_transient_with_its_code() -> None:
    fault = (
        b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soap:Body><soap:Fault><faultcode>soap:Client</faultcode>"
        b"<faultstring>Server did not recognize the value of HTTP Header SOAPAction</faultstring>"
        b"</soap:Fault></soap:Body></soap:Envelope>"
    )
    with pytest.raises(TransientError) as info:
        interpret_http_answer(500, {}, fault)
    assert info.value.code == "soap:Client"
    assert "SOAPAction" in (info.value.description or "")


@pytest.mark.parametrize("body", [b"", b"<html>Service Unavailable</html>", b"\x00\xff", b"<a><b></a>"])
def test_unreadable_answers(body: bytes) -> None:
    for status in (200, 500, 502, 503):
        with pytest.raises(TransientError):
            interpret_http_answer(status, {}, body)
    with pytest.raises(PermanentError):
        interpret_http_answer(404, {}, body)


def test_5xx_with_a_readable_transaction_tag_is_read() -> None:
    reply = interpret_http_answer(500, {}, envelope(result=False, code="3196", rd1=SEED_REQUEST_ID))
    assert reply.code == "3196" and reply.response_data1 == SEED_REQUEST_ID


def test_http_429_and_auth_statuses() -> None:
    with pytest.raises(RateLimitedError) as info:
        interpret_http_answer(429, {"retry-after": "7"}, b"")
    assert info.value.retry_after == 7.0
    for status in (401, 403):
        with pytest.raises(AuthError):
            interpret_http_answer(status, {}, TIMBRAR_RESPONSE)


def test_retry_after_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None


def test_refusals_are_permanent_or_auth() -> None:
    plain = parse_transaction_reply(
        envelope(result=False, code="301", description="XML nativo inválido", hint="Revise el esquema", data=" x ")
    )
    error = refusal_error(plain, "ASYNC_CONVERT_NATIVE_XML")
    assert type(error) is PermanentError
    assert (error.code, error.description, error.hint, error.data) == (
        "301",
        "XML nativo inválido",
        "Revise el esquema",
        "x",
    )
    inactive = parse_transaction_reply(envelope(result=False, code="1000", requestor_active="false"))
    assert isinstance(refusal_error(inactive, "X"), AuthError)
    worded = parse_transaction_reply(envelope(result=False, code="12", data="Requestor no autorizado para la entidad"))
    assert isinstance(refusal_error(worded, "X"), AuthError)


# -- links, lookups, issued documents ------------------------------------------------------------


def test_links_are_base64_urls() -> None:
    reply = parse_transaction_reply(
        envelope(rd1=b64("https://files.example/a.zip?sig=1"), rd3=" " + b64("https://files.example/b.zip") + " ")
    )
    assert parse_links(reply) == {
        "xml": "https://files.example/a.zip?sig=1",
        "pdf": "https://files.example/b.zip",
    }


@pytest.mark.parametrize(
    ("rd1", "rd3"),
    [(None, b64("http://x/p")), (b64("http://x/p"), None), (b64("ftp://x"), b64("http://x/p"))],
)
def test_missing_or_odd_links_are_transient(rd1: str | None, rd3: str | None) -> None:
    with pytest.raises(TransientError):
        parse_links(parse_transaction_reply(envelope(rd1=rd1, rd3=rd3)))


def test_lookup() -> None:
    assert parse_lookup(parse_transaction_reply(envelope(rd1="0"))) is None
    guid = "687BC63C-e03e-4c64-8eff-602de879bd1e"
    record = b64(f"<Documento><uuid>{guid}</uuid><batch>A</batch><serial>12</serial></Documento>")
    hit = parse_lookup(parse_transaction_reply(envelope(rd1=" 1 ", rd2=record)))
    assert hit is not None and (hit.guid, hit.batch, hit.serial) == (guid, "A", "12")
    attrs = b64(f'<Lookup Uuid="{{{guid}}}" Batch="" Serial="7"/>')
    hit = parse_lookup(parse_transaction_reply(envelope(rd1="2", rd2=attrs)))
    assert hit is not None and (hit.guid, hit.batch, hit.serial) == (guid, None, "7")
    with pytest.raises(MalformedAnswer):
        parse_lookup(parse_transaction_reply(envelope(rd1="1", rd2=b64('<Lookup Uuid="u-1" Serial="7"/>'))))
    with pytest.raises(TransientError):
        parse_lookup(parse_transaction_reply(envelope(rd1="1")))
    with pytest.raises(TransientError):
        parse_lookup(parse_transaction_reply(envelope(rd1="many")))


def test_issued_document_from_identifier_and_files() -> None:
    reply = parse_transaction_reply(
        envelope(
            identifier={
                "Batch": "A",
                "Serial": " 8688 ",
                "DocumentGUID": "687bc63c-e03e-4c64-8eff-602de879bd1e",
                "IssuedTimeStamp": "2024-01-05T10:00:00",
            },
            rd1=b64("<cfdi:Comprobante/>"),
            rd3=b64(b"%PDF-1.4 x"),
        )
    )
    ids, files = parse_issued_document(reply, "CONVERT_NATIVE_XML")
    assert ids.guid == "687bc63c-e03e-4c64-8eff-602de879bd1e"
    assert (ids.year, ids.batch, ids.serial) == (2024, "A", "8688")
    assert ids.enrolled_at == datetime(2024, 1, 5, 16, 0, tzinfo=UTC)
    assert files == {"xml": b"<cfdi:Comprobante/>", "pdf": b"%PDF-1.4 x"}
    with pytest.raises(TransientError):
        parse_issued_document(parse_transaction_reply(envelope(identifier={"Batch": "A"})), "X")


def test_sniffing() -> None:
    assert sniff_content_type(b"PK\x03\x04rest") == "application/zip"
    assert sniff_content_type(b"%PDF-1.7") == "application/pdf"
    assert sniff_content_type(b"\xef\xbb\xbf <?xml") == "application/xml"
    assert sniff_content_type(b"UEsDBBQ") is None
    assert base64.b64decode("UEsDBA==").startswith(b"PK")
