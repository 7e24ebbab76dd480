"""Hostile provider answers: entity declarations, external entities and entity bombs anywhere in
a MYSuite answer are never resolved, and only our error classes come out.

The parsers' general property tests live with the client (tests/providers); these add the attacks
a compromised or spoofed endpoint could send.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import ProviderError, TransientError
from providers.mysuite.parsing import (
    TransactionReply,
    interpret_http_answer,
    parse_issued_document,
    parse_links,
    parse_lookup,
    parse_verify,
)
from tests.inputs.corpus import PASSWD_MARK
from tests.providers.mysuite_samples import SEED_REQUEST_ID, SEED_VERIFY_XML, TIMBRAR_RESPONSE, b64, envelope

XXE = b'<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
XXE_PARAMETER = b'<!DOCTYPE soap:Envelope [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
BOMB = (
    b'<!DOCTYPE soap:Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    b'<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
    b'<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>'
)


def _after_declaration(doctype: bytes, body: bytes) -> bytes:
    if body.startswith(b"<?xml"):
        end = body.index(b"?>") + 2
        return body[:end] + doctype + body[end:]
    return doctype + body


def _texts(value: Any) -> str:
    return repr(value)


def _read(body: bytes) -> str:
    """Everything the client would take from this answer, as text; '' when it is refused."""
    try:
        reply = interpret_http_answer(200, {}, body)
    except ProviderError as exc:
        return str(exc)
    seen = [_texts(reply)]
    for reader in (
        lambda: parse_links(reply),
        lambda: parse_lookup(reply),
        lambda: parse_issued_document(reply, "X"),
        lambda: parse_verify(reply.response_data1, reply.response_data2, SEED_REQUEST_ID),
    ):
        try:
            seen.append(_texts(reader()))
        except ProviderError as exc:
            seen.append(str(exc))
    return "\n".join(seen)


ATTACKS = {
    "external entity in Data": _after_declaration(
        XXE, envelope(result=False, code="9003", data="&xxe;").replace(b"&amp;xxe;", b"&xxe;")
    ),
    "external entity in ResponseData1": _after_declaration(XXE, envelope(rd1="&xxe;").replace(b"&amp;xxe;", b"&xxe;")),
    "parameter entity": _after_declaration(XXE_PARAMETER, envelope(rd1="x")),
    "entity bomb": _after_declaration(BOMB, envelope(description="&h;").replace(b"&amp;h;", b"&h;")),
    "external DTD": _after_declaration(b'<!DOCTYPE soap:Envelope SYSTEM "file:///etc/passwd">', TIMBRAR_RESPONSE),
}


@pytest.mark.parametrize("body", ATTACKS.values(), ids=list(ATTACKS))
def test_attacks_in_the_envelope_are_not_resolved(body: bytes) -> None:
    seen = _read(body)
    assert PASSWD_MARK not in seen
    assert "aaaaaaaaaa" * 100 not in seen


@pytest.mark.parametrize("doctype", [XXE, BOMB], ids=["external entity", "entity bomb"])
def test_attacks_in_the_base64_verify_record(doctype: bytes) -> None:
    record = _after_declaration(doctype.replace(b"soap:Envelope", b"AsyncRequest"), SEED_VERIFY_XML)
    record = record.replace(b"<Batch>", b"<Batch>&xxe;&h;")
    try:
        result = parse_verify(b64(record), None, SEED_REQUEST_ID)
    except TransientError:
        return
    assert PASSWD_MARK not in repr(result) and "aaaaaaaaaa" * 100 not in repr(result)


def test_attack_in_the_lookup_record() -> None:
    listing = (
        XXE.replace(b"soap:Envelope", b"Documents") + b'<Documents><Document uuid="&xxe;" serial="1"/></Documents>'
    )
    reply = TransactionReply(result=True, code="1", response_data1="1", response_data2=b64(listing))
    try:
        hit = parse_lookup(reply)
    except TransientError:
        return
    assert PASSWD_MARK not in repr(hit)


DECLARATION_END = TIMBRAR_RESPONSE.index(b"?>") + 2 if TIMBRAR_RESPONSE.startswith(b"<?xml") else 0


@settings(max_examples=150, deadline=None)
@given(
    doctype=st.sampled_from([XXE, XXE_PARAMETER, BOMB, b"<!DOCTYPE x>", b""]),
    reference=st.sampled_from([b"&xxe;", b"&h;", b"&p;", b"&#x0;", b"&lt;", b"&unknown;"]),
    where=st.integers(min_value=DECLARATION_END, max_value=len(TIMBRAR_RESPONSE)),
)
def test_entity_references_anywhere_in_a_real_answer(doctype: bytes, reference: bytes, where: int) -> None:
    body = _after_declaration(doctype, TIMBRAR_RESPONSE[:where] + reference + TIMBRAR_RESPONSE[where:])
    seen = _read(body)
    assert PASSWD_MARK not in seen
    assert "aaaaaaaaaa" * 100 not in seen
