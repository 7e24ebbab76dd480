"""ASYNC_CONVERT_NATIVE_XML → ASYNC_CONVERT_VERIFY → ASYNC_RETRIEVE_DOCUMENT → download, over HTTP."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from lxml import etree

from sandbox.mysuite.config import MIB
from tests.sandbox.conftest import ENTITY, Client, b64, native_xml

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def wait_until_processed(mysuite: Client, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while True:
        payload = json.loads(mysuite.call("ASYNC_CONVERT_VERIFY", request_id).decoded(2))
        if payload["Status"] != 1 or time.monotonic() > deadline:
            return dict(payload)
        time.sleep(0.05)


def test_submit_returns_a_new_request_guid(mysuite: Client) -> None:
    first = mysuite.submit("inv-1")
    second = mysuite.submit("inv-2")
    assert first.result and first.code == 1
    assert GUID.match(first.data(1) or "")
    assert first.data(1) != second.data(1)
    assert first.text("Request/Transaction") == "ASYNC_CONVERT_NATIVE_XML"
    assert first.text("Request/Id") != second.text("Request/Id")


def test_data1_with_surrounding_whitespace_is_accepted(mysuite: Client) -> None:
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", "\n  " + b64(native_xml(4096)) + "  \n", "inv-ws")
    assert answer.result, answer.text("Response/Data")


def test_resend_answers_3196_with_the_existing_id_and_no_second_document(mysuite: Client) -> None:
    first = mysuite.submit("inv-dup")
    again = mysuite.submit("inv-dup", size=5000)
    assert not again.result
    assert again.code == 3196
    assert again.text("Response/Data") == (
        "El número interno proporcionado ya se encuentra registrado. "
        "Consulte ResponseData1 para obtener el Id de la solicitud existente."
    )
    assert again.data(1) == first.data(1)
    counter = mysuite.counters()["async"]["inv-dup"]
    assert counter["calls"] == 2
    assert counter["documents"] == 1
    assert counter["duplicates"] == 1
    assert counter["request_id"] == first.data(1)


def test_same_data2_under_another_entity_is_a_different_request(mysuite: Client) -> None:
    first = mysuite.submit("shared-id")
    other = mysuite.call(
        "ASYNC_CONVERT_NATIVE_XML",
        b64(native_xml(2048, rfc="AAA010101AAA")),
        "shared-id",
        entity="AAA010101AAA",
    )
    assert other.result and other.data(1) != first.data(1)


def test_concurrent_resends_create_exactly_one_document(mysuite: Client) -> None:
    payload = b64(native_xml(200_000))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: mysuite.call("ASYNC_CONVERT_NATIVE_XML", payload, "race"), range(8)))
    assert sum(answer.result for answer in answers) == 1
    assert {answer.code for answer in answers if not answer.result} == {3196}
    assert len({answer.data(1) for answer in answers}) == 1
    counter = mysuite.counters()["async"]["race"]
    assert counter["documents"] == 1 and counter["duplicates"] == 7 and counter["calls"] == 8


@pytest.mark.parametrize("data2", ["", "   ", "x" * 51])
def test_data2_is_mandatory_and_at_most_50_characters(mysuite: Client, data2: str) -> None:
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml()), data2)
    assert not answer.result and answer.code not in (1, 3196)
    assert "50" in (answer.text("Response/Data") or "")


def test_data2_of_exactly_50_characters_is_accepted(mysuite: Client) -> None:
    assert mysuite.submit("y" * 50).result


def test_size_rules_of_the_test_environment(mysuite: Client) -> None:
    mysuite.admin(preset="default", min_bytes=MIB, env="test")
    small = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(MIB - 2000)), "small")
    assert not small.result
    assert "deben ir por el servicio normal" in (small.text("Response/Data") or "")
    big = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(4 * MIB + 200)), "big")
    assert not big.result
    assert "4194304" in (big.text("Response/Data") or "")
    ok = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(MIB + 10)), "ok")
    assert ok.result, ok.text("Response/Data")
    counters = mysuite.counters()["async"]
    assert counters["small"]["documents"] == 0 and counters["big"]["documents"] == 0
    assert counters["ok"]["documents"] == 1


def test_minimum_is_exclusive_and_maximum_inclusive_on_decoded_bytes(mysuite: Client) -> None:
    mysuite.admin(min_bytes=3000, max_bytes=6000)
    sized = {n: _exact(n) for n in (3000, 3001, 6000, 6001)}
    results = {n: mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(body), f"n{n}").result for n, body in sized.items()}
    assert results == {3000: False, 3001: True, 6000: True, 6001: False}


def _exact(size: int) -> bytes:
    """A native document of exactly `size` bytes (trailing whitespace after the root is still XML)."""
    doc = native_xml(size - 400)
    assert len(doc) <= size
    return doc + b" " * (size - len(doc))


def test_production_environment_allows_up_to_40_mib(mysuite: Client) -> None:
    assert mysuite.admin(env="production")["effective_max_bytes"] == 40 * MIB
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(5 * MIB)), "prod")
    assert answer.result, answer.text("Response/Data")
    assert answer.text("Response/Processor") == "PROD-BACK01"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<root/>", "FactDocMX"),
        (b'<fx:FactDocMX xmlns:fx="urn:other"><fx:Version>8</fx:Version></fx:FactDocMX>', "FactDocMX"),
        (native_xml(version="7"), "Versi"),
        (native_xml().replace(b"<fx:RFCEmisor>JES900109Q90</fx:RFCEmisor>", b""), "RFCEmisor"),
        (native_xml()[:-20], "bien formado"),
        (
            b'<?xml version="1.0"?><!DOCTYPE fx:FactDocMX [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + native_xml()[39:],
            "DOCTYPE",
        ),
    ],
    ids=["foreign-root", "wrong-namespace", "old-version", "no-rfc", "truncated", "doctype"],
)
def test_input_that_is_not_a_native_v8_document_is_refused(mysuite: Client, body: bytes, fragment: str) -> None:
    padded = body + b" " * max(0, 2048 - len(body))
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(padded), "bad-doc")
    assert not answer.result and answer.code not in (1, 3196)
    assert fragment in (answer.text("Response/Data") or "")
    assert mysuite.counters()["async"]["bad-doc"]["documents"] == 0


def test_data1_that_is_not_base64_is_refused(mysuite: Client) -> None:
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", "not base64 at all!" * 200, "nob64")
    assert not answer.result and "Base64" in (answer.text("Response/Data") or "")


def test_verify_goes_from_pending_to_issued_in_both_formats(mysuite: Client) -> None:
    request_id = mysuite.submit("inv-verify").data(1) or ""
    pending = mysuite.call("ASYNC_CONVERT_VERIFY", request_id, "null", "null")
    assert pending.result and pending.code == 1
    xml = etree.fromstring(pending.decoded(1))
    assert xml.tag == "AsyncRequest"
    assert [child.tag for child in xml] == ["Entity", "Uuid", "InternalID", "EnrolledTimeStamp", "Status"]
    assert xml.findtext("Status") == "1" and xml.findtext("Uuid") == request_id
    pending_json = json.loads(pending.decoded(2))
    assert pending_json["Status"] == 1 and pending_json["DocumentGUID"] is None and pending_json["Year"] is None

    done = wait_until_processed(mysuite, request_id)
    assert done["Status"] == 2
    issued = mysuite.call("ASYNC_CONVERT_VERIFY", request_id)
    xml = etree.fromstring(issued.decoded(1))
    expected = ["Entity", "Uuid", "InternalID", "EnrolledTimeStamp", "Status", "DocumentGUID", "Year"]
    assert [child.tag for child in xml] == [*expected, "Batch", "Serial"]
    assert xml.findtext("DocumentGUID") == done["DocumentGUID"]
    assert xml.findtext("Batch") == "" and done["Batch"] == ""
    assert xml.findtext("Year") == "2024" and done["Year"] == 2024
    assert isinstance(done["Serial"], str) and done["ErrorMsg"] is None
    assert done["InternalID"] == "inv-verify" and done["Entity"] == ENTITY


def test_verify_payloads_are_formatted_like_the_seed(mysuite: Client) -> None:
    request_id = mysuite.submit("inv-format").data(1) or ""
    wait_until_processed(mysuite, request_id)
    answer = mysuite.call("ASYNC_CONVERT_VERIFY", request_id)
    raw_json = answer.decoded(2).decode()
    assert raw_json.startswith('{ "Entity": "JES900109Q90", "Uuid": "')
    assert raw_json.endswith(', "ErrorMsg": null }')
    stamp = re.search(r'"EnrolledTimeStamp": "/Date\((\d+)\)/"', raw_json)
    assert stamp is not None and stamp.group(1).endswith("000")
    raw_xml = answer.decoded(1).decode()
    assert raw_xml.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert "<Batch />" in raw_xml and "ErrorMsg" not in raw_xml
    enrolled = etree.fromstring(answer.decoded(1)).findtext("EnrolledTimeStamp") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", enrolled)
    # The XML time is Mexico City (UTC-6) local time of the JSON instant.
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(stamp.group(1)) // 1000 - 6 * 3600))
    assert enrolled == local


def test_json_leading_space_knob_reproduces_the_seed(mysuite: Client) -> None:
    mysuite.admin(json_leading_space=True)
    request_id = mysuite.submit("inv-space").data(1) or ""
    payload = json.loads(mysuite.call("ASYNC_CONVERT_VERIFY", request_id).decoded(2))
    assert payload["InternalID"] == " inv-space"
    assert etree.fromstring(mysuite.call("ASYNC_CONVERT_VERIFY", request_id).decoded(1)).findtext("InternalID") == (
        "inv-space"
    )


def test_failure_share_ends_in_status_3_with_a_base64_message(mysuite: Client) -> None:
    mysuite.admin(failure_rate=1.0)
    request_id = mysuite.submit("inv-fail").data(1) or ""
    payload = wait_until_processed(mysuite, request_id)
    assert payload["Status"] == 3 and payload["DocumentGUID"] is None
    message = base64.b64decode(str(payload["ErrorMsg"])).decode()
    assert message.startswith("CFDI40")
    answer = mysuite.call("ASYNC_CONVERT_VERIFY", request_id)
    assert answer.result and answer.code == 1
    assert etree.fromstring(answer.decoded(1)).findtext("ErrorMsg") == payload["ErrorMsg"]
    retrieve = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id)
    assert not retrieve.result and retrieve.code != 1


def test_failures_are_reproducible_from_the_seed_and_data2(mysuite: Client) -> None:
    def outcome() -> list[int]:
        mysuite.http.post("/mysuite/_admin/reset")
        mysuite.admin(failure_rate=0.5, seed=7, processing_base_seconds=0)
        ids = [mysuite.submit(f"doc-{n}").data(1) or "" for n in range(16)]
        return [int(json.loads(mysuite.call("ASYNC_CONVERT_VERIFY", i).decoded(2))["Status"]) for i in ids]

    first, second = outcome(), outcome()
    assert first == second
    assert set(first) == {2, 3}


def test_processing_time_grows_with_size(mysuite: Client) -> None:
    mysuite.admin(processing_base_seconds=100, seconds_per_mb=1000)
    before = time.time()
    mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(_exact(MIB // 2)), "half")
    mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(_exact(MIB)), "one")
    after = time.time()
    counters = mysuite.counters()["async"]
    half, one = float(counters["half"]["ready_at"]), float(counters["one"]["ready_at"])
    assert before + 600 <= half <= after + 600
    assert before + 1100 <= one <= after + 1100
    assert counters["one"]["status"] == 1


def test_unknown_request_id_is_refused(mysuite: Client) -> None:
    for transaction in ("ASYNC_CONVERT_VERIFY", "ASYNC_RETRIEVE_DOCUMENT"):
        answer = mysuite.call(transaction, str(uuid.uuid4()))
        assert not answer.result and answer.code not in (1, 3196)


def test_request_of_another_entity_is_not_visible(mysuite: Client) -> None:
    request_id = mysuite.submit("inv-owner").data(1) or ""
    answer = mysuite.call("ASYNC_CONVERT_VERIFY", request_id, entity="AAA010101AAA")
    assert not answer.result


def test_retrieve_only_once_issued_and_with_new_links_each_time(mysuite: Client) -> None:
    mysuite.admin(processing_base_seconds=0.3)
    request_id = (
        mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(serie="A", folio="77")), "inv-links").data(1) or ""
    )
    early = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id)
    assert not early.result and early.code != 1
    status = wait_until_processed(mysuite, request_id)
    first = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id, "null", "null")
    second = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id)
    assert first.result and first.code == 1
    assert first.text("Response/Identifier/DocumentGUID") == status["DocumentGUID"]
    assert first.text("Response/Identifier/Batch") == "A" and first.text("Response/Identifier/Serial") == "77"
    assert first.text("Response/Identifier/InternalID") == "inv-links"
    links = {
        first.decoded(1).decode(),
        first.decoded(3).decode(),
        second.decoded(1).decode(),
        second.decoded(3).decode(),
    }
    assert len(links) == 4
    assert all(link.startswith(mysuite.base_url + "/mysuite/files/") for link in links)
    assert first.data(2) is None


def retrieve_links(mysuite: Client, internal_id: str) -> tuple[str, str, str]:
    request_id = mysuite.submit(internal_id).data(1) or ""
    status = wait_until_processed(mysuite, request_id)
    answer = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id)
    return answer.decoded(1).decode(), answer.decoded(3).decode(), str(status["DocumentGUID"])


def test_links_serve_zipped_xml_and_pdf(mysuite: Client) -> None:
    xml_link, pdf_link, guid = retrieve_links(mysuite, "inv-zip")
    xml_zip = httpx.get(xml_link)
    pdf_zip = httpx.get(pdf_link)
    assert xml_zip.status_code == 200 and xml_zip.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(xml_zip.content)) as archive:
        assert archive.namelist() == [f"{guid}.xml"]
        cfdi = etree.fromstring(archive.read(f"{guid}.xml"))
    stamp = cfdi.find(".//{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital")
    assert stamp is not None and stamp.get("UUID") == guid
    with zipfile.ZipFile(io.BytesIO(pdf_zip.content)) as archive:
        assert archive.read(f"{guid}.pdf").startswith(b"%PDF-")
    assert mysuite.counters()["files"]["downloads"] == 2


def test_raw_link_content(mysuite: Client) -> None:
    mysuite.admin(link_content="raw")
    xml_link, pdf_link, guid = retrieve_links(mysuite, "inv-raw")
    xml = httpx.get(xml_link)
    assert xml.headers["content-type"].startswith("application/xml") and xml.content.startswith(b"<?xml")
    pdf = httpx.get(pdf_link)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert guid.encode() in pdf.content


def test_links_expire_with_403_and_a_new_retrieve_refreshes_them(mysuite: Client) -> None:
    mysuite.admin(link_ttl_seconds=0.4)
    xml_link, _, _ = retrieve_links(mysuite, "inv-ttl")
    assert httpx.get(xml_link).status_code == 200
    time.sleep(0.5)
    assert httpx.get(xml_link).status_code == 403
    request_id = mysuite.counters()["async"]["inv-ttl"]["request_id"]
    fresh = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", str(request_id)).decoded(1).decode()
    assert httpx.get(fresh).status_code == 200
    assert mysuite.counters()["files"]["expired"] == 1


def test_default_link_lifetime_is_five_days(mysuite: Client) -> None:
    xml_link, _, _ = retrieve_links(mysuite, "inv-5d")
    expires_ms = int(xml_link.rsplit("/", 1)[1].split(".")[2])
    assert abs(expires_ms / 1000 - (time.time() + 5 * 24 * 3600)) < 30


def test_tampered_links_are_refused(mysuite: Client) -> None:
    xml_link, _, _ = retrieve_links(mysuite, "inv-tamper")
    token = xml_link.rsplit("/", 1)[1]
    request_id, kind, expires, nonce, mac = token.split(".")
    longer = f"{request_id}.{kind}.{int(expires) + 10**9}.{nonce}.{mac}"
    assert httpx.get(xml_link.replace(token, longer)).status_code == 403
    assert httpx.get(xml_link.replace(token, "garbage")).status_code == 403


def test_links_after_reset_are_not_found(mysuite: Client) -> None:
    xml_link, _, _ = retrieve_links(mysuite, "inv-reset")
    mysuite.http.post("/mysuite/_admin/reset")
    assert httpx.get(xml_link).status_code == 404
