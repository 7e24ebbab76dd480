"""Property tests: whatever identifier a provider sends, it is a checked value or a typed error.

The parsers are fed the JSON copy of MYSuite's verify record (JSON carries NUL and control
characters that XML cannot) and Hacienda's status answer; a value that passes must have its real
format, so it can neither overflow a column nor name a path.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.answers import CFDI_UUID, MalformedAnswer, message
from providers.base import TransientError, VerifyStatus
from providers.hacienda.client import _parse_status
from providers.hacienda.comprobante import parse_clave
from providers.mysuite.parsing import MAX_FOLIO, MAX_SERIE, document_ids, parse_request_id, parse_verify

REQUEST_ID = "a6b30f75-37c1-4972-aa9c-3cdf523b9bdd"
VALID = "687bc63c-e03e-4c64-8eff-602de879bd1e"
CLAVE = "50601012600310123456700100001010000000001112345678"
PROPS = settings(max_examples=300, deadline=None)

hostile_text = st.one_of(
    st.sampled_from(["..", "...", "../../x", "/etc/passwd", "a/b", "x\x00y", "\x1b[31m", VALID + "\x00", VALID + "\n"]),
    st.builds(lambda v, s: v + s, st.just(VALID), st.text(min_size=1, max_size=300)),
    st.text(max_size=400),
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=300),
)


def _record(**values: Any) -> str:
    body = {"Uuid": REQUEST_ID, "Status": 2, "DocumentGUID": VALID, "Year": 2026, "Serial": "1", **values}
    return base64.b64encode(json.dumps(body).encode()).decode()


def _is_path_safe(value: str) -> bool:
    return not re.search(r"[/\\\x00-\x1f\x7f-\x9f]", value) and value not in (".", "..")


@PROPS
@given(hostile_text)
def test_document_guid(value: str) -> None:
    try:
        result = parse_verify(None, _record(DocumentGUID=value), REQUEST_ID)
    except MalformedAnswer as exc:
        assert len(str(exc)) < 400 and "\x00" not in str(exc)
        return
    except TransientError:
        assert not value.strip()  # absent or blank: unreadable, not malformed
        return
    assert result.status is VerifyStatus.ISSUED and result.document is not None
    guid = result.document.guid
    assert guid is not None and CFDI_UUID.fullmatch(guid) and _is_path_safe(guid)


@PROPS
@given(hostile_text, hostile_text)
def test_batch_and_serial(batch: str, serial: str) -> None:
    try:
        result = parse_verify(None, _record(Batch=batch, Serial=serial), REQUEST_ID)
    except MalformedAnswer:
        return
    document = result.document
    assert document is not None
    for value, limit in ((document.batch, MAX_SERIE), (document.serial, MAX_FOLIO)):
        assert value is None or (len(value) <= limit and not re.search(r"[\x00-\x1f\x7f-\x9f]", value))


@PROPS
@given(st.one_of(st.integers(), st.text(max_size=30)))
def test_year(value: int | str) -> None:
    try:
        result = parse_verify(None, _record(Year=value), REQUEST_ID)
    except MalformedAnswer:
        return
    assert result.document is not None
    assert result.document.year is None or 1900 <= result.document.year <= 9999


@PROPS
@given(hostile_text)
def test_request_id(value: str) -> None:
    try:
        parsed = parse_request_id(value)
    except MalformedAnswer:
        return
    assert CFDI_UUID.fullmatch(parsed)


@PROPS
@given(hostile_text, hostile_text, hostile_text)
def test_identifier_of_a_document(guid: str, batch: str, serial: str) -> None:
    try:
        ids = document_ids({"DocumentGUID": guid, "Batch": batch, "Serial": serial, "AYear": "2026"})
    except MalformedAnswer:
        return
    assert ids is not None and ids.guid is not None and CFDI_UUID.fullmatch(ids.guid)


@PROPS
@given(st.text(max_size=5000))
def test_error_messages_are_bounded_and_printable(text: str) -> None:
    result = parse_verify(None, _record(Status=3, ErrorMsg=base64.b64encode(text.encode()).decode()), REQUEST_ID)
    shown = result.error_message or ""
    assert len(shown) <= 2000 and not re.search(r"[\x00-\x1f\x7f-\x9f]", shown)
    assert message("x" * 5000) == "x" * 1999 + "…"


@PROPS
@given(hostile_text, st.sampled_from(["aceptado", "procesando", "rechazado"]))
def test_hacienda_status_about_another_clave(echoed: str, estado: str) -> None:
    clave = parse_clave(CLAVE)
    response = httpx.Response(200, json={"clave": echoed, "ind-estado": estado})
    try:
        parsed = _parse_status(response, clave)
    except MalformedAnswer:
        assert echoed != CLAVE
        return
    assert echoed == CLAVE and parsed[0] == estado


@PROPS
@given(st.binary(min_size=1, max_size=300))
def test_hacienda_accepted_respuesta_must_be_our_xml(respuesta: bytes) -> None:
    clave = parse_clave(CLAVE)
    encoded = base64.b64encode(respuesta).decode()
    response = httpx.Response(200, json={"clave": CLAVE, "ind-estado": "aceptado", "respuesta-xml": encoded})
    try:
        _, kept, _ = _parse_status(response, clave)
    except MalformedAnswer:
        return
    assert kept == respuesta and respuesta.lstrip().startswith(b"<")


def test_hacienda_respuesta_naming_another_clave_is_refused() -> None:
    other = CLAVE[:-1] + "9"
    mensaje = f'<MensajeHacienda xmlns="urn:x"><Clave>{other}</Clave><Mensaje>1</Mensaje></MensajeHacienda>'
    body = {"clave": CLAVE, "ind-estado": "aceptado", "respuesta-xml": base64.b64encode(mensaje.encode()).decode()}
    try:
        _parse_status(httpx.Response(200, json=body), parse_clave(CLAVE))
    except MalformedAnswer as exc:
        assert "another clave" in str(exc)
    else:
        raise AssertionError("a respuesta about another clave was accepted")
