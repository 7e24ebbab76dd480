"""The ASMX surface: routing, WSDL, SOAP 1.1/1.2, faults, the exact envelope, and the WSDL's types."""

from __future__ import annotations

import copy
import re
import time
import uuid

import httpx
import pytest
import zeep
from lxml import etree

from tests.sandbox.conftest import (
    ACTION,
    ASYNC,
    ENTITY,
    REQUESTOR,
    SYNC,
    WS,
    Answer,
    Client,
    b64,
    envelope,
    native_xml,
)

XS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}-06:00$")

# The recorded real TIMBRAR answer (provider notes §4.1), ResponseData1 shortened.
RECORDED = b"".join(
    [
        b'<?xml version="1.0" encoding="utf-8"?>',
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" ',
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
        b'<soap:Body><RequestTransactionResponse xmlns="http://www.fact.com.mx/schema/ws">',
        b"<RequestTransactionResult><Request><Requestor>00000000-0000-0000-0000-000000000000</Requestor>",
        b"<RequestorActive>true</RequestorActive><Transaction>TIMBRAR</Transaction><Country>MX</Country>",
        b"<Entity>JES900109Q90</Entity><User>00000000-0000-0000-0000-000000000000</User>",
        b"<UserName>MX.JES900109Q90.Juan</UserName><Id>96f342f4-a28a-487a-907f-7d00f388a8ce</Id>",
        b"<TimeStamp>2023-03-21T10:56:25.5256369-06:00</TimeStamp></Request><Response><Result>true</Result>",
        b"<TimeStamp>2023-03-21T10:56:26.1661906-06:00</TimeStamp><LastResult/><Code>1</Code><Description/>",
        b"<Hint/><Data> 20393 96f342f4-a28a-487a-907f-7d00f388a8ce</Data><Processor>TEST-BACK02</Processor>",
        b"</Response><ResponseData><ResponseData1>PD94bWw=</ResponseData1><ResponseData2>51749</ResponseData2>",
        b"<ResponseData3>OK</ResponseData3></ResponseData></RequestTransactionResult>",
        b"</RequestTransactionResponse></soap:Body></soap:Envelope>",
    ]
)


def child_tags(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element if isinstance(child.tag, str)]


def test_answer_envelope_is_byte_compatible_with_asmx(mysuite: Client) -> None:
    answer = mysuite.submit("inv-env")
    raw = answer.http.content
    assert answer.http.headers["content-type"] == "text/xml; charset=utf-8"
    assert raw.startswith(
        b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        b'<soap:Body><RequestTransactionResponse xmlns="http://www.fact.com.mx/schema/ws">'
        b"<RequestTransactionResult><Request><Requestor>" + REQUESTOR.encode()
    )
    assert b"<LastResult /><Code>1</Code><Description /><Hint /><Data />" in raw
    assert STAMP.match(answer.text("Request/TimeStamp") or "")
    assert STAMP.match(answer.text("Response/TimeStamp") or "")
    assert answer.text("Request/RequestorActive") == "true"
    assert answer.text("Request/UserName") == f"MX.{ENTITY}.Pepito"


def test_element_order_matches_the_recorded_real_answer(mysuite: Client) -> None:
    recorded = etree.fromstring(RECORDED).find(f".//{{{WS}}}RequestTransactionResult")
    answer = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml()), "XML PDF")
    ours = answer.root.find(f".//{{{WS}}}RequestTransactionResult")
    assert recorded is not None and ours is not None
    assert child_tags(ours) == child_tags(recorded) == ["Request", "Response", "ResponseData"]
    for part in ("Request", "Response"):
        expected = child_tags(recorded.find(f"{{{WS}}}{part}"))
        got = [tag for tag in child_tags(ours.find(f"{{{WS}}}{part}")) if tag != "Identifier"]
        assert got == expected
    assert child_tags(ours.find(f"{{{WS}}}ResponseData")) == ["ResponseData1", "ResponseData3"]


def test_ws_prefixed_form_with_empty_header_is_accepted(mysuite: Client) -> None:
    body = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:ws="{WS}"><soapenv:Header/><soapenv:Body><ws:RequestTransaction>'
        f"<ws:Requestor> {REQUESTOR} </ws:Requestor><ws:Transaction>ASYNC_CONVERT_NATIVE_XML</ws:Transaction>"
        f"<ws:Country>MX</ws:Country><ws:Entity>{ENTITY}</ws:Entity><ws:User>{REQUESTOR}</ws:User>"
        f"<ws:UserName>MX{ENTITY}ADMIN</ws:UserName><ws:Data1>{b64(native_xml())}</ws:Data1>"
        "<ws:Data2>inv-prefixed</ws:Data2><ws:Data3></ws:Data3></ws:RequestTransaction></soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()
    response = mysuite.post(ASYNC, body)
    answer = Answer(response, etree.fromstring(response.content))
    assert answer.result and answer.code == 1


def test_soap_12_is_answered_in_soap_12(mysuite: Client) -> None:
    body = envelope("ASYNC_CONVERT_NATIVE_XML", b64(native_xml()), "inv-soap12")
    body = body.replace(SOAP11.encode(), SOAP12.encode())
    response = mysuite.http.post(
        ASYNC,
        content=body,
        headers={"Content-Type": f'application/soap+xml; charset=utf-8; action="{ACTION}"'},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/soap+xml; charset=utf-8"
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{SOAP12}}}Envelope"
    assert Answer(response, root).result


@pytest.mark.parametrize(
    "path",
    ["/mysuite/ASYNC/FACTWSFRONT.ASMX", "/mysuite/async/FactWSFront.asmx", "/mysuite/Sync/factwsfront.asmx"],
)
def test_paths_are_case_insensitive(mysuite: Client, path: str) -> None:
    transaction = "ASYNC_CONVERT_VERIFY" if "sync/" not in path.lower() or "async" in path.lower() else "GET_DOCUMENT"
    response = mysuite.post(path, envelope(transaction, str(uuid.uuid4()), "1"))
    assert response.status_code == 200
    assert Answer(response, etree.fromstring(response.content)).text("Request/Transaction") == transaction


def test_unknown_paths_are_404(mysuite: Client) -> None:
    assert mysuite.post("/mysuite/other.asmx", envelope("ASYNC_CONVERT_VERIFY")).status_code == 404


@pytest.mark.parametrize("query", ["WSDL", "wsdl", "Wsdl"])
def test_wsdl_is_the_real_one_pointing_back_at_the_sandbox(mysuite: Client, query: str) -> None:
    path = "/mysuite/sync/FactWSFront.asmx"
    response = mysuite.http.get(f"{path}?{query}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    served = etree.fromstring(response.content)
    locations = served.xpath("//*[local-name()='address']/@location")
    assert locations == [mysuite.base_url + path] * 2
    with open("providers/mysuite/FactWSFront.wsdl", "rb") as handle:
        real = handle.read()
    assert re.sub(rb'location="[^"]*"', b"", response.content) == re.sub(rb'location="[^"]*"', b"", real)


def test_public_url_knob_rewrites_wsdl_and_links(mysuite: Client) -> None:
    mysuite.admin(public_url="https://sandbox.example/ms/", processing_base_seconds=0)
    served = etree.fromstring(mysuite.http.get(f"{ASYNC}?wsdl").content)
    assert served.xpath("//*[local-name()='address']/@location")[0] == (
        "https://sandbox.example/ms/async/factwsfront.asmx"
    )
    request_id = mysuite.submit("inv-public").data(1) or ""
    link = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id).decoded(1).decode()
    assert link.startswith("https://sandbox.example/ms/files/")


def test_plain_get_serves_a_service_page(mysuite: Client) -> None:
    response = mysuite.http.get(ASYNC)
    assert response.status_code == 200 and b"FactWSFront" in response.content


def fault_of(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 500
    root = etree.fromstring(response.content)
    return root.findtext(".//faultcode") or "", root.findtext(".//faultstring") or ""


def test_unknown_soapaction_is_a_client_fault(mysuite: Client) -> None:
    response = mysuite.post(ASYNC, envelope("ASYNC_CONVERT_VERIFY"), action="urn:nothing")
    code, text = fault_of(response)
    assert code == "soap:Client" and "SOAPAction" in text


def test_other_wsdl_operations_are_server_faults(mysuite: Client) -> None:
    code, _ = fault_of(mysuite.post(ASYNC, envelope("ASYNC_CONVERT_VERIFY"), action=f"{WS}/Authenticate"))
    assert code == "soap:Server"


@pytest.mark.parametrize(
    "body",
    [
        b"<not xml",
        b"<root/>",
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><Other/>'
        b"</soap:Body></soap:Envelope>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><soap:Envelope '
        b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>',
    ],
    ids=["not-xml", "not-envelope", "other-element", "doctype"],
)
def test_malformed_envelopes_are_client_faults(mysuite: Client, body: bytes) -> None:
    code, _ = fault_of(mysuite.post(ASYNC, body))
    assert code == "soap:Client"
    assert mysuite.counters()["transactions"] == {}


def test_soap_version_mismatch_fault(mysuite: Client) -> None:
    body = envelope("ASYNC_CONVERT_VERIFY").replace(SOAP11.encode(), SOAP12.encode())
    code, _ = fault_of(mysuite.post(ASYNC, body))
    assert code == "soap:VersionMismatch"


def test_soap_12_faults_have_the_soap_12_shape(mysuite: Client) -> None:
    response = mysuite.http.post(ASYNC, content=b"<broken", headers={"Content-Type": "application/soap+xml"})
    assert response.status_code == 500
    root = etree.fromstring(response.content)
    assert root.findtext(f".//{{{SOAP12}}}Value") == "soap:Sender"


def test_requestor_knob_refuses_other_requestors(mysuite: Client) -> None:
    mysuite.admin(requestor=str(uuid.uuid4()))
    answer = mysuite.submit("inv-auth")
    assert not answer.result and answer.code == 9008
    assert mysuite.counters()["async"]["inv-auth"]["documents"] == 0


def test_a_requestor_that_is_not_a_guid_is_refused_and_echoed_as_zero(mysuite: Client) -> None:
    answer = mysuite.submit("inv-noguid", requestor="not-a-guid")
    assert not answer.result and answer.code == 9008
    assert answer.text("Request/Requestor") == "00000000-0000-0000-0000-000000000000"


def test_unknown_transaction_echoes_no_transaction(mysuite: Client) -> None:
    answer = mysuite.call("MAKE_COFFEE", path=ASYNC)
    assert not answer.result and answer.text("Request/Transaction") == "NO_TRANSACTION"


@pytest.mark.parametrize(
    ("transaction", "path"),
    [("CONVERT_NATIVE_XML", ASYNC), ("ASYNC_CONVERT_VERIFY", SYNC), ("TIMBRAR", SYNC)],
)
def test_transactions_outside_their_service_are_refused(mysuite: Client, transaction: str, path: str) -> None:
    answer = mysuite.call(transaction, b64(native_xml()), "XML", path=path)
    assert not answer.result and answer.code == 9009
    assert answer.text("Request/Transaction") == transaction


def response_schema(wsdl: bytes) -> etree.XMLSchema:
    """The WSDL's own types as an XSD, with the DataSet wildcard parts made lax.

    `ResponseDataSet` is a .NET DataSet: `<s:element ref="s:schema"/>` plus `<s:any/>`. Validating
    those needs the schema-for-schemas, which is not part of the WSDL, so they are replaced by lax
    wildcards; every other type is used exactly as published.
    """
    root = etree.fromstring(wsdl)
    schemas = root.findall(f"{{{WSDL_NS}}}types/{{{XS}}}schema")
    main = next(s for s in schemas if s.get("targetNamespace") == WS)
    guid_types = next(s for s in schemas if s.get("targetNamespace") == "http://microsoft.com/wsdl/types/")

    def standalone(schema: etree._Element) -> etree._Element:
        # QName values (type="tns:…") need the WSDL root's prefixes, which tostring() would not carry.
        copied = etree.Element(schema.tag, attrib=dict(schema.attrib), nsmap=root.nsmap)
        copied.extend(copy.deepcopy(child) for child in schema)
        return copied

    main = standalone(main)
    for ref in main.iter(f"{{{XS}}}element"):
        if ref.get("ref") == "s:schema":
            ref.tag = f"{{{XS}}}any"
            del ref.attrib["ref"]
            ref.set("namespace", XS)
            ref.set("processContents", "lax")
    for wildcard in main.iter(f"{{{XS}}}any"):
        wildcard.set("processContents", "lax")
    # The WSDL imports the guid namespace without a location; point the import at the second schema.
    imported = main.find(f"{{{XS}}}import")
    assert imported is not None
    imported.set("schemaLocation", "guid.xsd")
    guid_doc = etree.tostring(standalone(guid_types))

    class Resolver(etree.Resolver):  # type: ignore[misc]
        def resolve(self, url, pubid, context):
            if url.endswith("guid.xsd"):
                return self.resolve_string(guid_doc, context)
            return None

    parser = etree.XMLParser()
    parser.resolvers.add(Resolver())
    return etree.XMLSchema(etree.fromstring(etree.tostring(main), parser, base_url="file:///wsdl/main.xsd"))


def all_kinds_of_answers(mysuite: Client) -> list[Answer]:
    mysuite.admin(processing_base_seconds=0.2)
    answers = [mysuite.submit("schema-1"), mysuite.submit("schema-1")]
    request_id = answers[0].data(1) or ""
    answers.append(mysuite.call("ASYNC_CONVERT_VERIFY", request_id))
    answers.append(mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id))
    time.sleep(0.25)
    answers.append(mysuite.call("ASYNC_CONVERT_VERIFY", request_id))
    answers.append(mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id))
    mysuite.admin(failure_rate=1, processing_base_seconds=0)
    answers.append(mysuite.call("ASYNC_CONVERT_VERIFY", mysuite.submit("schema-2").data(1) or ""))
    answers.append(mysuite.call("ASYNC_CONVERT_VERIFY", str(uuid.uuid4())))
    answers.append(mysuite.call("ASYNC_CONVERT_NATIVE_XML", "", ""))
    converted = mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(numero_interno="S-1", serie="B")), "XML PDF")
    answers.append(converted)
    answers.append(mysuite.call("CONVERT_NATIVE_XML", "<bad/>", "XML"))
    answers.append(mysuite.call("LOOKUP_ISSUED_INTERNAL_ID", "S-1"))
    answers.append(mysuite.call("LOOKUP_ISSUED_INTERNAL_ID", "nothing"))
    serial = converted.text("Response/Identifier/Serial") or ""
    answers.append(mysuite.call("GET_DOCUMENT", "B", serial, "XML PDF"))
    answers.append(mysuite.call("GET_DOCUMENT", "B", "999999", "XML"))
    answers.append(mysuite.call("MAKE_COFFEE", path=SYNC))
    answers.append(mysuite.submit("schema-3", requestor="nope"))
    return answers


def test_every_answer_validates_against_the_wsdl_types(mysuite: Client) -> None:
    schema = response_schema(mysuite.http.get(f"{SYNC}?WSDL").content)
    answers = all_kinds_of_answers(mysuite)
    assert {a.result for a in answers} == {True, False}
    for answer in answers:
        body = answer.root.find(f"{{{SOAP11}}}Body")
        assert body is not None
        element = copy.deepcopy(body[0])
        assert element.tag == f"{{{WS}}}RequestTransactionResponse"
        schema.assertValid(etree.ElementTree(element))


def test_schema_check_catches_a_wrong_order(mysuite: Client) -> None:
    schema = response_schema(mysuite.http.get(f"{SYNC}?WSDL").content)
    answer = mysuite.submit("order")
    element = copy.deepcopy(answer.root.find(f"{{{SOAP11}}}Body")[0])
    response = element.find(f".//{{{WS}}}Response")
    code = response.find(f"{{{WS}}}Code")
    response.remove(code)
    response.insert(0, code)
    assert not schema.validate(etree.ElementTree(element))


def test_a_zeep_client_built_from_the_served_wsdl_can_call_the_sandbox(mysuite: Client) -> None:
    client = zeep.Client(f"{mysuite.base_url}{ASYNC}?WSDL")
    common = {
        "Requestor": REQUESTOR,
        "Country": "MX",
        "Entity": ENTITY,
        "User": REQUESTOR,
        "UserName": f"MX.{ENTITY}.Pepito",
    }
    submitted = client.service.RequestTransaction(
        Transaction="ASYNC_CONVERT_NATIVE_XML", Data1=b64(native_xml()), Data2="zeep-1", Data3="", **common
    )
    assert submitted.Response.Result is True and submitted.Response.Code == 1
    request_id = submitted.ResponseData.ResponseData1
    assert submitted.Request.Transaction == "ASYNC_CONVERT_NATIVE_XML"
    assert submitted.Request.TimeStamp.utcoffset().total_seconds() == -6 * 3600
    soap12 = client.bind("FactWSFront", "FactWSFrontSoap12")
    verified = soap12.RequestTransaction(Transaction="ASYNC_CONVERT_VERIFY", Data1=request_id, **common)
    assert verified.Response.Result is True and verified.ResponseData.ResponseData1
    sync = zeep.Client(f"{mysuite.base_url}{SYNC}?wsdl").service.RequestTransaction(
        Transaction="CONVERT_NATIVE_XML", Data1=b64(native_xml()), Data2="XML", Data3="", **common
    )
    assert sync.Response.Identifier.DocumentGUID and sync.ResponseData.ResponseData1
