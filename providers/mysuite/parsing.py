"""Reading MYSuite answers: the SOAP envelope, the async verify record, links, lookups and documents.

Every function here is pure (bytes or strings in, values out) and raises only our own error
classes, whatever it is given: an answer we cannot read is a `TransientError`, because the same
call may well return a readable answer next time, while a readable answer that refuses the request
is classified by the client. Values are trimmed everywhere because the service pads some of them
(`<Data> 20393 …</Data>`, `"InternalID": " db06…"`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NoReturn

from lxml import etree

from providers import answers
from providers.answers import MalformedAnswer
from providers.base import (
    AuthError,
    DocumentIds,
    PermanentError,
    RateLimitedError,
    TransientError,
    VerifyResult,
    VerifyStatus,
)
from providers.ratelimit import parse_retry_after
from providers.xml import clip, parse_untrusted

WS_NS = "http://www.fact.com.mx/schema/ws"
SOAP_ENVELOPE_NAMESPACES = frozenset(
    {"http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"}
)

MEXICO_CITY = timezone(timedelta(hours=-6), "America/Mexico_City")
"""Timestamps the service writes without an offset are Mexico City wall time, UTC-6 since 2022
(and in every winter before); the seed's XML and JSON copies of one instant agree on it."""

DUPLICATE_CODE = "3196"
MAX_SERIE = 25
"""CFDI 4.0 `Serie`: up to 25 characters (Anexo 20); MYSuite's Batch is the serie."""
MAX_FOLIO = 40
"""CFDI 4.0 `Folio`: up to 40 characters; MYSuite's Serial is the folio."""

_NET_DATE = re.compile(r"^/Date\((-?\d{1,15})([+-]\d{4})?\)/$")
_BASE64_TEXT = re.compile(rb"^[A-Za-z0-9+/\s]*={0,2}\s*$")


@dataclass(frozen=True)
class TransactionReply:
    """The parts of a `TransactionTag` the client acts on, all trimmed; empty text reads as None."""

    result: bool
    code: str
    description: str | None = None
    hint: str | None = None
    data: str | None = None
    requestor_active: bool | None = None
    transaction: str | None = None
    identifier: Mapping[str, str] = field(default_factory=dict)
    response_data1: str | None = None
    response_data2: str | None = None
    response_data3: str | None = None


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _text(element: Any) -> str | None:
    if element is None:
        return None
    value = "".join(element.itertext()).strip()
    return value or None


def _child(parent: Any, name: str) -> Any:
    for child in parent:
        if _local(child.tag) == name:
            return child
    return None


def _children_text(parent: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    if parent is None:
        return values
    for child in parent:
        name = _local(child.tag)
        value = _text(child)
        if name and value is not None:
            values[name] = value
    return values


def parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def _soap_body(root: Any) -> Any:
    if _local(root.tag) != "Envelope" or etree.QName(root).namespace not in SOAP_ENVELOPE_NAMESPACES:
        raise TransientError("MYSuite answer is not a SOAP envelope")
    body = _child(root, "Body")
    if body is None:
        raise TransientError("MYSuite answer has no SOAP body")
    return body


def _raise_fault(fault: Any) -> NoReturn:
    # SOAP 1.1 puts faultcode/faultstring at the top; SOAP 1.2 nests Code/Value and Reason/Text.
    code = _text(_child(fault, "faultcode"))
    reason = _text(_child(fault, "faultstring"))
    if code is None:
        code_el = _child(fault, "Code")
        code = _text(_child(code_el, "Value")) if code_el is not None else None
    if reason is None:
        reason = _text(_child(fault, "Reason"))
    raise TransientError("MYSuite answered with a SOAP fault", code=clip(code, 80), description=clip(reason))


def parse_transaction_reply(content: bytes) -> TransactionReply:
    """Read a `RequestTransactionResponse` envelope; faults and anything unreadable are transient.

    A missing `Code` counts as unreadable: one production client treats it as a transport error,
    and without it we cannot tell a duplicate from a rejection.
    """
    root = parse_document(content, "answer")
    body = _soap_body(root)
    fault = _child(body, "Fault")
    if fault is not None:
        _raise_fault(fault)
    result_el = None
    for element in body.iter():
        if _local(element.tag) == "RequestTransactionResult":
            result_el = element
            break
    if result_el is None:
        raise TransientError("MYSuite answer has no RequestTransactionResult")
    response = _child(result_el, "Response")
    if response is None:
        raise TransientError("MYSuite answer has no Response element")
    result = parse_bool(_text(_child(response, "Result")))
    if result is None:
        raise TransientError("MYSuite answer has no readable Result")
    code = _text(_child(response, "Code"))
    if code is None or not re.fullmatch(r"[+-]?\d{1,10}", code):
        raise TransientError("MYSuite answer has no readable Code")
    request = _child(result_el, "Request")
    request_values = _children_text(request)
    data = _children_text(_child(result_el, "ResponseData"))
    return TransactionReply(
        result=result,
        code=str(int(code)),
        description=_text(_child(response, "Description")),
        hint=_text(_child(response, "Hint")),
        data=_text(_child(response, "Data")),
        requestor_active=parse_bool(request_values.get("RequestorActive")),
        transaction=request_values.get("Transaction"),
        identifier=_children_text(_child(response, "Identifier")),
        response_data1=data.get("ResponseData1"),
        response_data2=data.get("ResponseData2"),
        response_data3=data.get("ResponseData3"),
    )


_AUTH_MARKERS = (
    "requestor",
    "credencial",
    "credential",
    "autoriza",
    "authoriz",
    "autentica",
    "authentica",
    "unauthori",
    "acceso denegado",
    "access denied",
    "contrasena",
    "contraseña",
    "password",
    "no tiene permiso",
    "permission denied",
)


def looks_like_auth_failure(reply: TransactionReply) -> bool:
    """Guess whether a refusal is about our credentials rather than about the document.

    MYSuite publishes no error catalogue, so the echo `RequestorActive=false` is the only hard
    signal; otherwise the texts are searched for credential words. A false positive stops the
    provider and alerts an operator, which is cheaper than a false negative that keeps sending bad
    credentials.
    """
    if reply.requestor_active is False:
        return True
    text = " ".join(part for part in (reply.description, reply.hint, reply.data) if part).lower()
    return any(marker in text for marker in _AUTH_MARKERS)


def refusal_error(reply: TransactionReply, operation: str) -> PermanentError | AuthError:
    """The error for `Result=false`: auth-looking refusals stop the provider, others fail the job."""
    cls: type[PermanentError] | type[AuthError] = AuthError if looks_like_auth_failure(reply) else PermanentError
    return cls(
        f"MYSuite refused {operation}",
        code=reply.code,
        description=clip(reply.description),
        hint=clip(reply.hint),
        data=clip(reply.data),
    )


def interpret_http_answer(status: int, headers: Mapping[str, str], body: bytes) -> TransactionReply:
    """Classify one HTTP answer to a SOAP call, returning the reply when it could be read.

    A readable `TransactionTag` wins over the status code (the reply says more than the status),
    except for 429 and 401/403 whose meaning does not depend on the body.
    """
    if status == 429:
        raise RateLimitedError(
            "MYSuite asked to slow down (HTTP 429)", retry_after=parse_retry_after(headers.get("retry-after"))
        )
    if status in (401, 403):
        raise AuthError(f"MYSuite refused the credentials (HTTP {status})")
    try:
        return parse_transaction_reply(body)
    except TransientError as exc:
        if status >= 500 or 200 <= status < 300 or status in (408, 425, 499):
            if exc.code is not None:  # a SOAP fault: keep its code and text
                raise TransientError(
                    f"MYSuite HTTP {status}: {exc.message}", code=exc.code, description=exc.description
                ) from None
            raise TransientError(f"MYSuite HTTP {status}: {exc.message}") from None
        raise PermanentError(f"MYSuite answered HTTP {status}") from None


def decode_base64_text(value: str, what: str) -> bytes:
    """Decode base64 the service wrote, ignoring whitespace and line breaks inside it."""
    compact = re.sub(r"\s+", "", value)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise TransientError(f"MYSuite {what} is not valid base64") from None


def parse_timestamp(value: str | None) -> datetime | None:
    """An aware UTC datetime from an ISO or .NET `/Date(ms)/` value; naive ISO is Mexico City time."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    match = _NET_DATE.match(value)
    try:
        if match:
            # The milliseconds are UTC; a trailing offset only says where it was displayed.
            return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=MEXICO_CITY)
    return parsed.astimezone(UTC)


def _as_text(value: object) -> str | None:
    """Normalise a JSON or XML scalar to trimmed text; empty and null both mean absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None
        return str(int(value))
    if isinstance(value, str):
        return value.strip() or None
    return None


def _as_int(value: str | None) -> int | None:
    if value is None or not re.fullmatch(r"[+-]?\d{1,9}", value):
        return None
    return int(value)


def _async_record_from_xml(encoded: str) -> dict[str, str]:
    root = parse_document(decode_base64_text(encoded, "ResponseData1"), "ResponseData1")
    if _local(root.tag) != "AsyncRequest":
        raise TransientError("MYSuite ResponseData1 is not an AsyncRequest")
    return _children_text(root)


def _async_record_from_json(encoded: str) -> dict[str, str]:
    raw = decode_base64_text(encoded, "ResponseData2")
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TransientError("MYSuite ResponseData2 is not JSON") from None
    if not isinstance(document, dict):
        raise TransientError("MYSuite ResponseData2 is not a JSON object")
    record: dict[str, str] = {}
    for key, value in document.items():
        text = _as_text(value)
        if isinstance(key, str) and text is not None:
            record[key] = text
    return record


def _same_request(left: str, right: str) -> bool:
    return left.strip("{} ").lower() == right.strip("{} ").lower()


@dataclass(frozen=True)
class AsyncRecord:
    """One `AsyncRequest` (ASYNC_CONVERT_VERIFY), trimmed, from whichever copy could be read."""

    status: int
    uuid: str | None = None
    entity: str | None = None
    internal_id: str | None = None
    enrolled_at: datetime | None = None
    document_guid: str | None = None
    year: int | None = None
    batch: str | None = None
    serial: str | None = None
    error_message: str | None = None
    source: str = "xml"


def _record(values: Mapping[str, str], source: str) -> AsyncRecord:
    status = _as_int(values.get("Status"))
    if status not in (1, 2, 3):
        raise TransientError(f"MYSuite verify {source} copy has no readable Status")
    if status == 2 and values.get("DocumentGUID") is None:
        raise TransientError(f"MYSuite verify {source} copy says issued but gives no DocumentGUID")
    issued = status == 2
    message = None
    encoded = values.get("ErrorMsg")
    if encoded is not None:
        try:
            message = decode_base64_text(encoded, "ErrorMsg").decode("utf-8", "replace").strip() or None
        except TransientError:
            message = encoded  # not base64 after all: the text itself is the best we have
    return AsyncRecord(
        status=status,
        uuid=values.get("Uuid"),
        entity=values.get("Entity"),
        internal_id=values.get("InternalID"),
        enrolled_at=parse_timestamp(values.get("EnrolledTimeStamp")),
        document_guid=_guid(values.get("DocumentGUID"), "DocumentGUID") if issued else None,
        year=_year(values.get("Year")) if issued else None,
        batch=_optional_text(values.get("Batch"), "Batch", MAX_SERIE) if issued else None,
        serial=_optional_text(values.get("Serial"), "Serial", MAX_FOLIO) if issued else None,
        error_message=answers.message(message),
        source=source,
    )


def _guid(value: str | None, what: str) -> str:
    return answers.uuid_text(value, f"MYSuite {what}")


def _year(value: str | None) -> int | None:
    """An absent year is allowed (the pipeline falls back to the job's); a present one must be one."""
    if value is None:
        return None
    parsed = _as_int(value)
    return answers.year(parsed if parsed is not None else value, "MYSuite Year")


def _optional_text(value: str | None, what: str, limit: int) -> str | None:
    return None if value is None else answers.short_text(value, f"MYSuite {what}", limit)


def parse_async_record(
    response_data1: str | None, response_data2: str | None, request_id: str | None = None
) -> AsyncRecord:
    """Read the verify record from the XML copy, falling back to the JSON copy.

    Both carry the same record; reading either keeps polling alive when the service garbles one. A
    copy about another request than `request_id` counts as unreadable.
    """
    failures: list[str] = []
    malformed = False
    for encoded, source, reader in (
        (response_data1, "xml", _async_record_from_xml),
        (response_data2, "json", _async_record_from_json),
    ):
        if encoded is None:
            continue
        try:
            record = _record(reader(encoded), source)
        except TransientError as exc:
            failures.append(exc.message)
            malformed = malformed or isinstance(exc, MalformedAnswer)
            continue
        if request_id is not None and record.uuid is not None and not _same_request(record.uuid, request_id):
            failures.append(f"MYSuite verify {source} copy is about another request")
            continue
        return record
    if not failures:
        raise TransientError("MYSuite verify answer carries no record")
    # A copy with a refused value wins the error class: it is a provider's mistake, not noise.
    error = MalformedAnswer if malformed else TransientError
    raise error("MYSuite verify answer is unreadable: " + "; ".join(failures))


def parse_verify(response_data1: str | None, response_data2: str | None, request_id: str) -> VerifyResult:
    """Status 1 polls again, 2 is issued (CFDI UUID from DocumentGUID, not Uuid), 3 failed."""
    record = parse_async_record(response_data1, response_data2, request_id)
    if record.status == 1:
        return VerifyResult(status=VerifyStatus.PENDING)
    if record.status == 2:
        document = DocumentIds(
            guid=record.document_guid,
            year=record.year,
            batch=record.batch,
            serial=record.serial,
            enrolled_at=record.enrolled_at,
        )
        return VerifyResult(status=VerifyStatus.ISSUED, document=document)
    return VerifyResult(
        status=VerifyStatus.FAILED,
        error_message=record.error_message or "MYSuite processed the document with an error",
    )


def document_ids(identifier: Mapping[str, str]) -> DocumentIds | None:
    """The fiscal identity in a `DocID`, or None when the service sent none."""
    if identifier.get("DocumentGUID") is None:
        return None
    guid = _guid(identifier.get("DocumentGUID"), "DocumentGUID")
    issued = parse_timestamp(identifier.get("IssuedTimeStamp"))
    enrolled = parse_timestamp(identifier.get("EnrolledTimeStamp")) or issued
    year = _year(identifier.get("AYear"))
    if year is None and issued is not None:
        year = issued.astimezone(MEXICO_CITY).year
    return DocumentIds(
        guid=guid,
        year=year,
        batch=_optional_text(identifier.get("Batch"), "Batch", MAX_SERIE),
        serial=_optional_text(identifier.get("Serial"), "Serial", MAX_FOLIO),
        enrolled_at=enrolled,
    )


def _decode_url(encoded: str | None, what: str) -> str:
    if encoded is None:
        raise TransientError(f"MYSuite retrieve answer has no {what} link")
    try:
        url = decode_base64_text(encoded, what).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TransientError(f"MYSuite {what} link is not text") from None
    if not re.fullmatch(r"https?://[^\s]+", url, flags=re.IGNORECASE):
        raise TransientError(f"MYSuite {what} link is not an http(s) URL")
    return url


def parse_links(reply: TransactionReply) -> dict[str, str]:
    """ASYNC_RETRIEVE_DOCUMENT: base64 URLs of the XML (ResponseData1) and PDF (ResponseData3)."""
    return {
        "xml": _decode_url(reply.response_data1, "XML"),
        "pdf": _decode_url(reply.response_data3, "PDF"),
    }


def parse_document(content: bytes, what: str) -> Any:
    """The root of an XML document MYSuite wrote, read with the safe parser; unreadable is transient."""
    return parse_untrusted(content, f"MYSuite {what}", TransientError)


def parse_request_id(value: str | None) -> str:
    """The request id the async submit hands back: a GUID (the seed's `Uuid`), nothing else.

    An answer without one is unreadable (transient); one with a value that is not a GUID is a
    `MalformedAnswer`, refused before it becomes the job's `provider_request_id`.
    """
    if value is None:
        raise TransientError("MYSuite submit answer carries no request id")
    return _guid(value, "RequestID")


@dataclass(frozen=True)
class LookupHit:
    """An internal id MYSuite has already issued a document for (LOOKUP_ISSUED_INTERNAL_ID)."""

    guid: str | None
    batch: str | None
    serial: str | None


def parse_lookup(reply: TransactionReply) -> LookupHit | None:
    """ResponseData1 is a count; when positive, ResponseData2 is base64 XML with uuid/batch/serial.

    The wrapper of that XML is not documented, so the three names are searched anywhere in it, as
    elements or attributes, in any letter case.
    """
    count = _as_int(reply.response_data1)
    if count is None:
        raise TransientError("MYSuite lookup answer has no readable count")
    if count <= 0:
        return None
    if reply.response_data2 is None:
        raise TransientError("MYSuite lookup found the document but did not describe it")
    root = parse_document(decode_base64_text(reply.response_data2, "ResponseData2"), "lookup record")
    found: dict[str, str] = {}
    for element in root.iter():
        for name, value in element.attrib.items():
            text = value.strip()
            if text:
                found.setdefault(_local(name).lower(), text)
        if len(element) == 0:
            text = _text(element)
            if text is not None:
                found.setdefault(_local(element.tag).lower(), text)
    guid = found.get("uuid") or found.get("documentguid")
    if guid is None and found.get("serial") is None:
        raise TransientError("MYSuite lookup record names no document")
    return LookupHit(
        guid=None if guid is None else _guid(guid, "lookup uuid"),
        batch=_optional_text(found.get("batch"), "lookup batch", MAX_SERIE),
        serial=_optional_text(found.get("serial"), "lookup serial", MAX_FOLIO),
    )


def parse_issued_document(reply: TransactionReply, what: str) -> tuple[DocumentIds, dict[str, bytes]]:
    """CONVERT_NATIVE_XML / GET_DOCUMENT: the DocID plus base64 XML (ResponseData1) and PDF (…3)."""
    ids = document_ids(reply.identifier)
    if ids is None:
        raise TransientError(f"MYSuite {what} answer has no DocumentGUID")
    files: dict[str, bytes] = {}
    for name, encoded in (("xml", reply.response_data1), ("pdf", reply.response_data3)):
        if encoded is not None:
            files[name] = decode_base64_text(encoded, f"{what} {name.upper()}")
    return ids, files


def sniff_content_type(head: bytes) -> str | None:
    """What the first bytes of a downloaded file say it is, or None when they say nothing."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "application/zip"
    if head.startswith(b"%PDF"):
        return "application/pdf"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "application/xml"
    return None


def looks_like_base64(head: bytes) -> bool:
    return bool(head.strip()) and _BASE64_TEXT.match(head) is not None
