"""Sync CONVERT_NATIVE_XML and the two recovery transactions (LOOKUP_ISSUED_INTERNAL_ID, GET_DOCUMENT)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from lxml import etree

from tests.sandbox.conftest import SYNC, Client, b64, envelope, native_xml

TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"


def test_convert_returns_identifier_xml_and_pdf(mysuite: Client) -> None:
    answer = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(serie="F", folio="120")), "XML PDF")
    assert answer.result and answer.code == 1
    guid = answer.text("Response/Identifier/DocumentGUID")
    assert answer.text("Response/Identifier/Batch") == "F"
    assert answer.text("Response/Identifier/Serial") == "120"
    issued = answer.text("Response/Identifier/IssuedTimeStamp") or ""
    assert time.strptime(issued, "%Y-%m-%dT%H:%M:%S")
    cfdi = etree.fromstring(answer.decoded(1))
    assert cfdi.get("Serie") == "F" and cfdi.get("Folio") == "120" and cfdi.get("Version") == "4.0"
    stamp = cfdi.find(f".//{TFD}")
    assert stamp is not None and stamp.get("UUID") == guid
    assert answer.decoded(3).startswith(b"%PDF-")
    assert answer.data(2) is None


def test_raw_xml_data1_is_accepted_too(mysuite: Client) -> None:
    answer = mysuite.call("CONVERT_NATIVE_XML", "  " + native_xml(numero_interno="RAW-1").decode() + "\n", "XML")
    assert answer.result, answer.text("Response/Data")
    assert answer.text("Response/Identifier/InternalID") == "RAW-1"


@pytest.mark.parametrize(
    ("formats", "present"),
    [("XML", {1}), ("PDF", {3}), ("PDF XML", {1, 3}), ("xml pdf", {1, 3}), ("", set())],
)
def test_requested_formats_decide_the_files(mysuite: Client, formats: str, present: set[int]) -> None:
    answer = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml()), formats)
    assert answer.result
    assert {n for n in (1, 3) if answer.data(n) is not None} == present


def test_unknown_format_is_refused(mysuite: Client) -> None:
    answer = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml()), "DOCX")
    assert not answer.result and answer.code == 9010


def test_invalid_native_documents_are_refused(mysuite: Client) -> None:
    answer = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(version="5")), "XML")
    assert not answer.result and "Versi" in (answer.text("Response/Data") or "")
    assert mysuite.counters()["totals"]["issued"] == 0


def test_folios_are_assigned_per_serie_when_not_requested(mysuite: Client) -> None:
    serials = [
        mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(serie="Z")), "XML").text("Response/Identifier/Serial")
        for _ in range(3)
    ]
    assert serials == ["1", "2", "3"]


def test_sync_resend_issues_a_second_cfdi_and_counters_show_it(mysuite: Client) -> None:
    """Sync conversion is not idempotent as far as anyone knows: a blind resend doubles the invoice."""
    doc = b64(native_xml(numero_interno="N-77"))
    first = mysuite.call("CONVERT_NATIVE_XML", doc, "XML")
    second = mysuite.call("CONVERT_NATIVE_XML", doc, "XML")
    assert first.text("Response/Identifier/DocumentGUID") != second.text("Response/Identifier/DocumentGUID")
    assert mysuite.counters()["sync"]["N-77"] == {"calls": 2, "documents": 2}


def lookup(mysuite: Client, internal_id: str) -> tuple[int, list[dict[str, str]]]:
    answer = mysuite.call("LOOKUP_ISSUED_INTERNAL_ID", internal_id)
    assert answer.result and answer.code == 1
    count = int(answer.data(1) or "0")
    if count == 0:
        assert answer.data(2) is None
        return 0, []
    rows = etree.fromstring(answer.decoded(2))
    return count, [dict(row.attrib) for row in rows]


def test_lookup_by_internal_id(mysuite: Client) -> None:
    assert lookup(mysuite, "L-1") == (0, [])
    converted = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(numero_interno="L-1", serie="Q")), "XML")
    count, rows = lookup(mysuite, "L-1")
    assert count == 1
    assert rows == [
        {
            "uuid": converted.text("Response/Identifier/DocumentGUID"),
            "batch": "Q",
            "serial": converted.text("Response/Identifier/Serial"),
        }
    ]
    assert lookup(mysuite, "L-2") == (0, [])


def test_lookup_needs_an_internal_id(mysuite: Client) -> None:
    assert not mysuite.call("LOOKUP_ISSUED_INTERNAL_ID", "  ").result


def test_get_document_by_serie_and_folio(mysuite: Client) -> None:
    converted = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(serie="G", folio="9")), "XML")
    both = mysuite.call("GET_DOCUMENT", "G", "9", "XML PDF")
    assert both.result
    assert both.text("Response/Identifier/DocumentGUID") == converted.text("Response/Identifier/DocumentGUID")
    assert both.decoded(1) == converted.decoded(1)
    assert both.decoded(3).startswith(b"%PDF-")
    only_xml = mysuite.call("GET_DOCUMENT", "G", "9", "XML")
    assert only_xml.data(1) and only_xml.data(3) is None
    missing = mysuite.call("GET_DOCUMENT", "G", "10", "XML")
    assert not missing.result and missing.code == 9007


def test_a_lost_sync_answer_is_recovered_without_a_second_cfdi(mysuite: Client) -> None:
    mysuite.admin(drop_after_rate=1, fault_transactions=["CONVERT_NATIVE_XML"])
    body = envelope("CONVERT_NATIVE_XML", b64(native_xml(numero_interno="LOST-1", serie="R")), "XML PDF")
    with pytest.raises(httpx.TransportError):
        mysuite.post(SYNC, body)
    count, rows = lookup(mysuite, "LOST-1")
    assert count == 1
    recovered = mysuite.call("GET_DOCUMENT", rows[0]["batch"], rows[0]["serial"], "XML PDF")
    assert recovered.text("Response/Identifier/DocumentGUID") == rows[0]["uuid"]
    assert mysuite.counters()["sync"]["LOST-1"] == {"calls": 1, "documents": 1}


def test_async_documents_appear_in_lookups_once_processed(mysuite: Client) -> None:
    mysuite.admin(processing_base_seconds=0.3)
    doc = native_xml(numero_interno="ASY-1", serie="AS", folio="5")
    request_id = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(doc), "async-lookup").data(1) or ""
    assert lookup(mysuite, "ASY-1") == (0, [])
    assert not mysuite.call("GET_DOCUMENT", "AS", "5").result
    time.sleep(0.35)
    status = json.loads(mysuite.call("ASYNC_CONVERT_VERIFY", request_id).decoded(2))
    count, rows = lookup(mysuite, "ASY-1")
    assert count == 1 and rows[0]["uuid"] == status["DocumentGUID"]
    fetched = mysuite.call("GET_DOCUMENT", "AS", "5", "XML")
    assert etree.fromstring(fetched.decoded(1)).find(f".//{TFD}").get("UUID") == status["DocumentGUID"]


def test_escaped_raw_xml_round_trip_keeps_non_ascii_text(mysuite: Client) -> None:
    doc = native_xml().replace(b"EMPRESA SA", "COMPAÑÍA &amp; HIJOS".encode())
    answer = mysuite.call("CONVERT_NATIVE_XML", doc.decode(), "XML")
    assert answer.result
    cfdi = etree.fromstring(base64.b64decode(answer.data(1) or ""))
    emisor = cfdi.find("{http://www.sat.gob.mx/cfd/4}Emisor")
    assert emisor is not None and emisor.get("Nombre") == "COMPAÑÍA & HIJOS"
