"""The wire format of an ASMX service: request envelopes in, .NET XmlSerializer envelopes out.

Answers are written as text rather than through an XML library because the point is byte-level
fidelity to what ASMX emits: namespace declarations on the envelope in the same order, the default
namespace on the body element, schema order, null fields omitted and empty strings written as empty
elements, dateTime with seven fractional digits and an offset.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

from lxml import etree

WS_NS = "http://www.fact.com.mx/schema/ws"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP_ACTION = f"{WS_NS}/RequestTransaction"
OTHER_ACTIONS = frozenset(
    f"{WS_NS}/{name}"
    for name in (
        "SSLTransaction",
        "SecureTransaction",
        "MySuiteTransaction",
        "Authenticate",
        "AuthenticateFiel",
        "AuthenticateWTransform",
        "JsonServiceCall",
    )
)
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# MYSuite runs on Mexico City time, which has had no daylight saving since 2022: a fixed UTC-6
# reproduces the offsets of the recorded answers without depending on the host's tz database.
MEXICO = timezone(timedelta(hours=-6))

REQUEST_FIELDS = (
    "Requestor",
    "Transaction",
    "Country",
    "Entity",
    "User",
    "UserName",
    "Data1",
    "Data2",
    "Data3",
)
DOC_ID_FIELDS = (
    "Country",
    "Entity",
    "FiscalName",
    "AYear",
    "ANumber",
    "Batch",
    "Serial",
    "DocumentGUID",
    "IssuedTimeStamp",
    "EnrolledTimeStamp",
    "PaidTimeStamp",
    "CancelledTimeStamp",
    "InternalID",
    "BatchID",
    "BatchTimeStamp",
    "BatchRequestorCountry",
    "BatchRequestorEntity",
    "BatchPosition",
    "ReceiverCountry",
    "ReceiverEntity",
    "ReceiverTaxID",
    "ReceiverName",
    "ClaveAgente",
    "NumeroDePoliza",
    "Currency",
    "TotalAmount",
    "Type1",
    "Type2",
    "SuggestedFileName",
    "SuggestedFileName2",
    "Observaciones",
    "ObservacionesHtml",
)


class SoapFault(Exception):
    """A request ASMX refuses before any transaction runs (HTTP 500 with a soap:Fault)."""

    def __init__(self, message: str, *, client: bool = True, version_mismatch: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.client = client
        self.version_mismatch = version_mismatch


@dataclass
class SoapRequest:
    """One RequestTransaction call; each field is None when the element was absent."""

    soap12: bool
    fields: dict[str, str | None] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def text(self, name: str) -> str:
        """The trimmed value, "" for absent; MYSuite clients pad values with spaces."""
        return (self.fields.get(name) or "").strip()

    @property
    def transaction(self) -> str:
        return self.text("Transaction").upper()


def soap_version(content_type: str) -> bool:
    """True for SOAP 1.2 (`application/soap+xml`), False for SOAP 1.1 (`text/xml`)."""
    return content_type.split(";", 1)[0].strip().lower() == "application/soap+xml"


def soap_action(headers_action: str | None, content_type: str, soap12: bool) -> str:
    """The action of the call: SOAPAction header for 1.1, the `action` content-type parameter for 1.2."""
    if not soap12:
        return (headers_action or "").strip().strip('"')
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "action":
            return value.strip().strip('"')
    return SOAP_ACTION


def _safe_parser() -> etree.XMLParser:
    """A new parser per use: lxml parsers must not be shared between threads."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class EnvelopeReader:
    """Parses a RequestTransaction envelope as its body arrives, refusing what ASMX refuses.

    Feeding the parser chunk by chunk means a 53 MB request is never held as raw bytes beside its
    parsed tree.
    """

    def __init__(self, soap12: bool, action: str) -> None:
        if action in OTHER_ACTIONS:
            raise SoapFault(f"Operation {action.rsplit('/', 1)[1]} is not simulated by the sandbox.", client=False)
        if action != SOAP_ACTION:
            raise SoapFault(f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")
        self.soap12 = soap12
        self._parser = _safe_parser()

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.feed(chunk)
        except etree.XMLSyntaxError as exc:
            raise _unreadable(exc) from None

    def close(self) -> SoapRequest:
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise _unreadable(exc) from None
        if root.getroottree().docinfo.doctype:
            raise SoapFault("Server was unable to read request. ---> DTD is prohibited in this XML document.")
        envelope_ns = SOAP12_NS if self.soap12 else SOAP11_NS
        if root.tag != f"{{{envelope_ns}}}Envelope":
            if root.tag in (f"{{{SOAP11_NS}}}Envelope", f"{{{SOAP12_NS}}}Envelope"):
                raise SoapFault(
                    "Possible SOAP version mismatch: Envelope namespace was unexpected.",
                    version_mismatch=True,
                )
            raise SoapFault("Server was unable to read request. ---> Root element is not a SOAP Envelope.")
        body_el = root.find(f"{{{envelope_ns}}}Body")
        if body_el is None:
            raise SoapFault("Server was unable to read request. ---> The SOAP Body is missing.")
        call = next((child for child in body_el if isinstance(child.tag, str)), None)
        if call is None or call.tag != f"{{{WS_NS}}}RequestTransaction":
            raise SoapFault("Server was unable to read request. ---> Unexpected element in the SOAP Body.")
        request = SoapRequest(soap12=self.soap12)
        for child in call:
            if not isinstance(child.tag, str) or not child.tag.startswith(f"{{{WS_NS}}}"):
                continue
            name = child.tag[len(WS_NS) + 2 :]
            if name in REQUEST_FIELDS:
                request.fields[name] = child.text or ""
        return request


def _unreadable(exc: etree.XMLSyntaxError) -> SoapFault:
    return SoapFault(f"Server was unable to read request. ---> There is an error in XML document: {exc.msg}")


def dotnet_timestamp(epoch_ns: int | None = None) -> str:
    """A .NET local DateTime as XmlSerializer writes it: 7 fractional digits (100 ns ticks) and offset."""
    ns = time.time_ns() if epoch_ns is None else epoch_ns
    moment = datetime.fromtimestamp(ns // 1_000_000_000, MEXICO)
    ticks = (ns % 1_000_000_000) // 100
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ticks:07d}-06:00"


def local_seconds(epoch: float) -> str:
    """Mexico City time without offset or fraction, as MYSuite writes EnrolledTimeStamp."""
    return datetime.fromtimestamp(int(epoch), MEXICO).strftime("%Y-%m-%dT%H:%M:%S")


def _element(name: str, value: str | None) -> str:
    """XmlSerializer rule: null is omitted, "" is an empty element (written with .NET's space)."""
    if value is None:
        return ""
    if value == "":
        return f"<{name} />"
    return f"<{name}>{escape(value)}</{name}>"


@dataclass
class Answer:
    """The transaction's result, the part of the envelope that is not a plain echo of the request."""

    result: bool
    code: int
    data: str | None = ""
    description: str | None = ""
    hint: str | None = ""
    identifier: dict[str, str] | None = None
    response_data1: str | None = None
    response_data2: str | None = None
    response_data3: str | None = None


def render_response(
    request: SoapRequest,
    answer: Answer,
    *,
    transaction: str,
    requestor: str,
    user: str,
    request_id: str,
    request_timestamp: str,
    processor: str,
) -> bytes:
    """The RequestTransactionResponse envelope, exactly as ASMX serialises a TransactionTag."""
    parts: list[str] = [
        '<?xml version="1.0" encoding="utf-8"?>',
        _envelope_open(request.soap12),
        f'<soap:Body><RequestTransactionResponse xmlns="{WS_NS}"><RequestTransactionResult><Request>',
        _element("Requestor", requestor),
        "<RequestorActive>true</RequestorActive>",
        _element("Transaction", transaction),
        _element("Country", request.get("Country")),
        _element("Entity", request.get("Entity")),
        _element("User", user),
        _element("UserName", request.get("UserName")),
        _element("Id", request_id),
        _element("TimeStamp", request_timestamp),
        "</Request><Response>",
        f"<Result>{'true' if answer.result else 'false'}</Result>",
        _element("TimeStamp", dotnet_timestamp()),
        "<LastResult />",
        f"<Code>{answer.code}</Code>",
        _element("Description", answer.description),
        _element("Hint", answer.hint),
        _element("Data", answer.data),
        _element("Processor", processor),
    ]
    if answer.identifier is not None:
        parts.append("<Identifier>")
        parts.extend(_element(name, answer.identifier.get(name)) for name in DOC_ID_FIELDS)
        parts.append("</Identifier>")
    parts.append("</Response>")
    data = [
        _element("ResponseData1", answer.response_data1),
        _element("ResponseData2", answer.response_data2),
        _element("ResponseData3", answer.response_data3),
    ]
    parts.append(f"<ResponseData>{''.join(data)}</ResponseData>" if any(data) else "<ResponseData />")
    parts.append("</RequestTransactionResult></RequestTransactionResponse></soap:Body></soap:Envelope>")
    return "".join(parts).encode("utf-8")


def _envelope_open(soap12: bool) -> str:
    envelope_ns = SOAP12_NS if soap12 else SOAP11_NS
    return (
        f'<soap:Envelope xmlns:soap="{envelope_ns}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
    )


def render_fault(fault: SoapFault, soap12: bool) -> bytes:
    """The fault ASMX writes for a request it cannot dispatch (SOAP 1.1 or 1.2 shape)."""
    text = escape(fault.message)
    if soap12:
        code = (
            "soap:VersionMismatch" if fault.version_mismatch else ("soap:Sender" if fault.client else "soap:Receiver")
        )
        body = (
            f"<soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code>"
            f'<soap:Reason><soap:Text xml:lang="en">{text}</soap:Text></soap:Reason>'
            "<soap:Detail /></soap:Fault>"
        )
    else:
        code = "soap:VersionMismatch" if fault.version_mismatch else ("soap:Client" if fault.client else "soap:Server")
        body = f"<soap:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring><detail /></soap:Fault>"
    envelope = f"{_envelope_open(soap12)}<soap:Body>{body}</soap:Body></soap:Envelope>"
    return f'<?xml version="1.0" encoding="utf-8"?>{envelope}'.encode()


def content_type(soap12: bool) -> str:
    return "application/soap+xml; charset=utf-8" if soap12 else "text/xml; charset=utf-8"


def is_guid(value: str) -> bool:
    return bool(GUID_RE.match(value))


def load_transactions(wsdl: bytes) -> Sequence[str]:
    """The `Transactions` enumeration of the WSDL: the only values the Request echo may carry."""
    root = etree.fromstring(wsdl, _safe_parser())
    xs = "http://www.w3.org/2001/XMLSchema"
    values = root.xpath(
        "//xs:simpleType[@name='Transactions']/xs:restriction/xs:enumeration/@value", namespaces={"xs": xs}
    )
    return [str(value) for value in values]
