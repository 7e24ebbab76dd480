"""Property tests: whatever MYSuite (or a broken proxy) sends, the parsers answer or raise our errors."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import unicodedata
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from providers.base import InvalidPayload, ProviderError, TransientError, VerifyStatus
from providers.links import PDF, XML, ZIP, LinkPolicy, UnexpectedContent
from providers.mysuite.client import DownloadSink
from providers.mysuite.parsing import (
    interpret_http_answer,
    parse_async_record,
    parse_issued_document,
    parse_links,
    parse_lookup,
    parse_timestamp,
    parse_transaction_reply,
    parse_verify,
)
from providers.mysuite.soap import ENCODE_SLICE, EnvelopeBuilder, _operation
from providers.mysuite.validation import check_internal_id, check_payload
from providers.ratelimit import parse_retry_after
from tests.providers.mysuite_samples import SEED_REQUEST_ID, b64, envelope

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

xml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
maybe_text = st.none() | xml_text
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "Entity",
    "Uuid",
    "InternalID",
    "EnrolledTimeStamp",
    "Status",
    "DocumentGUID",
    "Year",
    "Batch",
    "Serial",
    "ErrorMsg",
]


def _xml_safe(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd"))


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_as_soap_answer(body: bytes) -> None:
    with contextlib.suppress(TransientError):
        parse_transaction_reply(body)


@FAST
@given(
    st.integers(min_value=100, max_value=599),
    st.dictionaries(st.sampled_from(["retry-after", "content-type"]), st.text(max_size=30), max_size=2),
    st.binary(max_size=200) | st.builds(lambda b: envelope(data=b), xml_text.map(_xml_safe)),
)
def test_any_http_answer_raises_only_our_errors(status: int, headers: dict[str, str], body: bytes) -> None:
    with contextlib.suppress(ProviderError):
        interpret_http_answer(status, headers, body)


@FAST
@given(
    result=st.booleans(),
    code=st.none() | st.text(max_size=6).map(_xml_safe),
    rd1=maybe_text.map(lambda t: None if t is None else _xml_safe(t)),
    rd2=maybe_text.map(lambda t: None if t is None else _xml_safe(t)),
    rd3=maybe_text.map(lambda t: None if t is None else _xml_safe(t)),
    identifier=st.none()
    | st.dictionaries(
        st.sampled_from(["DocumentGUID", "Batch", "Serial", "AYear", "IssuedTimeStamp"]),
        xml_text.map(_xml_safe),
        max_size=5,
    ),
)
def test_structured_envelopes(
    result: bool,
    code: str | None,
    rd1: str | None,
    rd2: str | None,
    rd3: str | None,
    identifier: dict[str, str] | None,
) -> None:
    body = envelope(result=result, code=code, rd1=rd1, rd2=rd2, rd3=rd3, identifier=identifier)
    try:
        reply = parse_transaction_reply(body)
    except TransientError:
        return
    for reader in (
        lambda: parse_links(reply),
        lambda: parse_lookup(reply),
        lambda: parse_issued_document(reply, "X"),
        lambda: parse_verify(reply.response_data1, reply.response_data2, SEED_REQUEST_ID),
    ):
        with contextlib.suppress(TransientError):
            reader()


@FAST
@given(maybe_text, maybe_text, st.text(max_size=40))
def test_any_text_as_verify_copies(rd1: str | None, rd2: str | None, request_id: str) -> None:
    with contextlib.suppress(TransientError):
        parse_async_record(rd1, rd2, request_id)


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS), xml_text.map(_xml_safe), max_size=10), st.booleans())
def test_random_async_request_xml(values: dict[str, str], encode_error: bool) -> None:
    root = etree.Element("AsyncRequest")
    for name, value in values.items():
        etree.SubElement(root, name).text = b64(value) if name == "ErrorMsg" and encode_error else value
    try:
        result = parse_verify(b64(etree.tostring(root)), None, SEED_REQUEST_ID)
    except TransientError:
        return
    expected = {VerifyStatus.PENDING: 1, VerifyStatus.ISSUED: 2, VerifyStatus.FAILED: 3}[result.status]
    assert int(values["Status"].strip()) == expected


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), json_values, max_size=10) | json_values)
def test_random_json_copy(document: object) -> None:
    try:
        result = parse_verify(None, b64(json.dumps(document)), SEED_REQUEST_ID)
    except TransientError:
        return
    if result.status is VerifyStatus.ISSUED:
        assert result.document is not None and result.document.guid


@FAST
@given(st.text(max_size=60))
def test_any_timestamp_text(text: str) -> None:
    value = parse_timestamp(text)
    assert value is None or (isinstance(value, datetime) and value.tzinfo is not None)
    assert parse_retry_after(text) is None or parse_retry_after(text) >= 0  # type: ignore[operator]


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_document(payload: bytes) -> None:
    with contextlib.suppress(InvalidPayload):
        check_payload(payload, 4 << 20, "test")


@FAST
@given(st.text(max_size=70))
def test_any_internal_id(internal_id: str) -> None:
    try:
        check_internal_id(internal_id)
    except InvalidPayload:
        assert (
            not (1 <= len(internal_id) <= 50)
            or internal_id != internal_id.strip()
            or any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in internal_id)
        )


def _stream(served: bytes, cuts: list[int], out: io.BytesIO) -> tuple[str, int, str]:
    """Feed `served` to a DownloadSink in chunks of the given sizes (then the rest), as a network would."""
    sink = DownloadSink(out)
    position = 0
    for cut in cuts:
        sink.write(served[position : position + cut])
        position += cut
    sink.write(served[position:])
    return sink.finish()


@FAST
@given(
    st.sampled_from([b"PK\x03\x04", b"%PDF-1.7\n", b"<?xml version='1.0'?>"]),
    st.binary(max_size=3000),
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    st.sampled_from([b"", b"\n", b"\r\n"]),
)
def test_download_sink_round_trip(magic: bytes, rest: bytes, encoded: bool, cuts: list[int], newline: bytes) -> None:
    content = magic + rest
    served = content
    if encoded:
        text = base64.b64encode(content)
        served = newline.join(text[i : i + 76] for i in range(0, len(text), 76)) if newline else text
    out = io.BytesIO()
    digest, size, content_type = _stream(served, cuts, out)
    assert out.getvalue() == content
    assert (digest, size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert content_type in {"application/zip", "application/pdf", "application/xml"}


@FAST
@given(st.binary(max_size=500), st.lists(st.integers(min_value=1, max_value=100), max_size=5))
def test_download_sink_never_crashes(served: bytes, cuts: list[int]) -> None:
    out = io.BytesIO()
    try:
        digest, size, _ = _stream(served, cuts, out)
    except (TransientError, UnexpectedContent):
        return
    assert size == len(out.getvalue()) and digest == hashlib.sha256(out.getvalue()).hexdigest()


@FAST
@given(
    st.sampled_from([b"PK\x03\x04", b"%PDF-1.7\n", b"<?xml version='1.0'?>"]),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=20, max_value=2000),
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
)
def test_download_sink_stops_at_the_cap(magic: bytes, extra: int, cap: int, encoded: bool, cuts: list[int]) -> None:
    content = magic + b"x" * extra
    served = base64.b64encode(content) if encoded else content
    policy = LinkPolicy(frozenset(), max_bytes={XML: cap, PDF: cap, ZIP: cap})
    out = io.BytesIO()
    sink = DownloadSink(out, policy)
    try:
        position = 0
        for cut in cuts:
            sink.write(served[position : position + cut])
            position += cut
        sink.write(served[position:])
        size = sink.finish()[1]
    except UnexpectedContent:
        assert len(content) > cap
    else:
        assert size == len(content) <= cap
    assert len(out.getvalue()) <= cap  # nothing past the cap is ever written


@settings(max_examples=12, deadline=None)
@given(
    st.sampled_from([0, 1, 2, 3, ENCODE_SLICE - 1, ENCODE_SLICE, ENCODE_SLICE + 1, 2 * ENCODE_SLICE + 2]),
    st.text(alphabet="abc-_<&>", min_size=1, max_size=20),
)
def test_streamed_envelope_is_what_zeep_would_send(size: int, internal_id: str) -> None:
    payload = bytes(i % 251 for i in range(size))
    builder = EnvelopeBuilder("req-guid", "JES900109Q90", "req-guid", "MX.JES900109Q90.x")
    built = builder.build("ASYNC_CONVERT_NATIVE_XML", payload, internal_id)
    body = built.body()
    streamed = body if isinstance(body, bytes) else b"".join(body)
    operation, _ = _operation()
    whole = operation.input.serialize(
        Requestor="req-guid",
        Transaction="ASYNC_CONVERT_NATIVE_XML",
        Country="MX",
        Entity="JES900109Q90",
        User="req-guid",
        UserName="MX.JES900109Q90.x",
        Data1=base64.b64encode(payload).decode(),
        Data2=internal_id,
        Data3="",
    )
    assert streamed == etree.tostring(whole.content, xml_declaration=True, encoding="utf-8")
    assert built.content_length == len(streamed)


def _zeep_envelope(transaction: str, data1: str, data2: str, data3: str) -> bytes:
    operation, _ = _operation()
    whole = operation.input.serialize(
        Requestor="req-guid",
        Transaction=transaction,
        Country="MX",
        Entity="JES900109Q90",
        User="req-guid",
        UserName="MX.JES900109Q90.x",
        Data1=data1,
        Data2=data2,
        Data3=data3,
    )
    serialized: bytes = etree.tostring(whole.content, xml_declaration=True, encoding="utf-8")
    return serialized


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["ASYNC_CONVERT_VERIFY", "ASYNC_RETRIEVE_DOCUMENT", "LOOKUP_ISSUED_INTERNAL_ID"]),
    st.text(max_size=40),
    st.text(max_size=20),
    st.sampled_from(["", "XML PDF"]),
)
def test_an_envelope_from_the_template_says_what_zeep_says(
    transaction: str, data1: str, data2: str, data3: str
) -> None:
    builder = EnvelopeBuilder("req-guid", "JES900109Q90", "req-guid", "MX.JES900109Q90.x")
    builder.build(transaction, "warm", "up", data3)  # the template exists before the envelope under test
    try:
        expected = _zeep_envelope(transaction, data1, data2, data3)
    except ValueError:  # text XML cannot carry: zeep refuses it, and so must the builder
        with pytest.raises(ValueError):
            builder.build(transaction, data1, data2, data3)
        return
    built = builder.build(transaction, data1, data2, data3)
    body = built.body()
    assert isinstance(body, bytes)
    canonical = functools.partial(etree.tostring, method="c14n")
    assert canonical(etree.fromstring(body)) == canonical(etree.fromstring(expected))
    assert built.content_length == len(body)
