"""The answer reader: the seed's `servicioAddendas` in every carrier, the codes, and hostile input."""

from __future__ import annotations

import base64
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.base import AuthError, PermanentError, ProviderError, RateLimitedError, TransientError
from providers.prodigia.parsing import AddendaAnswer, interpret_http_answer, parse_answer, refusal

DATA = Path(__file__).with_name("data")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDENDA = b'<cfdi:Addenda xmlns:cfdi="http://www.sat.gob.mx/cfd/4"><s:X xmlns:s="urn:x"/></cfdi:Addenda>'


def envelope(
    inner: str, operation: str = "procesarAddenda", soap: str = "http://schemas.xmlsoap.org/soap/envelope/"
) -> bytes:
    return (
        f'<S:Envelope xmlns:S="{soap}"><S:Body><ns2:{operation}Response xmlns:ns2="addendas.ws.pade.mx">'
        f"<return>{inner}</return></ns2:{operation}Response></S:Body></S:Envelope>"
    ).encode()


def servicio(codigo: str = "0", mensaje: str = "", xml: bytes | None = ADDENDA) -> str:
    encoded = f"<xmlBase64>{base64.b64encode(xml).decode()}</xmlBase64>" if xml is not None else ""
    return (
        "<servicioAddendas><id>0f6c3d8e-6f0a-4b59-9a55-3f1f5a8c2b10</id><contrato>C-1</contrato>"
        f"<codigo>{codigo}</codigo><mensaje>{escape(mensaje)}</mensaje>{encoded}</servicioAddendas>"
    )


def test_the_seed_structure_escaped_in_return_is_a_success() -> None:
    answer = parse_answer((DATA / "seed004_response_escaped.xml").read_bytes())
    assert answer.ok
    assert answer.codigo == 0
    assert answer.id == "0f6c3d8e-6f0a-4b59-9a55-3f1f5a8c2b10"
    assert answer.contrato == "cfc3e3f1-7e53-45b1-8f1c-2c6f06d5fe1a"
    assert answer.mensaje is None
    assert answer.xml is not None and answer.xml.startswith(b"<cfdi:Addenda")


def test_an_error_answer_with_a_declaration_of_another_encoding_keeps_its_message() -> None:
    answer = parse_answer((DATA / "seed004_response_error.xml").read_bytes())
    assert not answer.ok
    assert answer.codigo == 6
    assert answer.mensaje == "Ocurrió un error en el procesamiento de su archivo."
    assert answer.xml is None
    error = refusal(answer, "procesarAdjuntarAddenda")
    assert type(error) is PermanentError
    assert error.description == answer.mensaje


@pytest.mark.parametrize(
    "inner",
    [
        escape(servicio()),
        f"<![CDATA[{servicio()}]]>",
        servicio(),
        escape('<?xml version="1.0" encoding="UTF-8"?>' + servicio()),
        escape(
            '<servicioAddendas ID="1" Contrato="C-1" Codigo="0" Mensaje="" '
            f'xmlBase64="{base64.b64encode(ADDENDA).decode()}"/>'
        ),
        escape(servicio().replace("codigo>", "CODIGO>").replace("xmlBase64>", "XMLBASE64>")),
    ],
    ids=["escaped", "cdata", "inline", "declaration", "attributes", "letter-case"],
)
def test_every_carrier_of_the_string_reads_the_same(inner: str) -> None:
    answer = parse_answer(envelope(inner))
    assert answer.codigo == 0
    assert answer.xml == ADDENDA


def test_soap_12_envelopes_and_base64_with_line_breaks_are_read() -> None:
    wrapped = base64.encodebytes(ADDENDA).decode()
    inner = escape(servicio().replace(base64.b64encode(ADDENDA).decode(), wrapped))
    answer = parse_answer(envelope(inner, soap="http://www.w3.org/2003/05/soap-envelope"))
    assert answer.xml == ADDENDA


@pytest.mark.parametrize(
    ("codigo", "expected"),
    [("1", AuthError), ("2", AuthError), ("3", PermanentError), ("5", TransientError), ("6", PermanentError)],
)
def test_each_documented_code_has_its_class(codigo: str, expected: type[ProviderError]) -> None:
    answer = parse_answer(envelope(escape(servicio(codigo, "texto", xml=None))))
    error = refusal(answer, "procesarAddenda")
    assert type(error) is expected
    assert error.code == codigo
    assert error.description == "texto"


def test_code_0_without_a_document_is_not_a_success() -> None:
    answer = parse_answer(envelope(escape(servicio(xml=None))))
    assert not answer.ok
    assert isinstance(refusal(answer, "procesarAddenda"), TransientError)


def test_undocumented_codes_are_permanent_unless_they_speak_of_credentials() -> None:
    plain = refusal(AddendaAnswer(codigo=99, mensaje="Formato no reconocido"), "procesarAddenda")
    locked = refusal(AddendaAnswer(codigo=99, mensaje="Usuario bloqueado"), "procesarAddenda")
    assert type(plain) is PermanentError
    assert type(locked) is AuthError


def test_a_soap_fault_is_transient_with_its_text() -> None:
    fault = (
        b'<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault>'
        b"<faultcode>S:Server</faultcode><faultstring>java.lang.NullPointerException</faultstring>"
        b"</S:Fault></S:Body></S:Envelope>"
    )
    with pytest.raises(TransientError) as caught:
        interpret_http_answer(500, {}, fault)
    assert caught.value.code == "S:Server"
    assert caught.value.description == "java.lang.NullPointerException"


def test_http_status_classes() -> None:
    with pytest.raises(RateLimitedError):
        interpret_http_answer(429, {}, b"")
    with pytest.raises(AuthError):
        interpret_http_answer(401, {}, b"")
    with pytest.raises(TransientError):
        interpret_http_answer(502, {}, b"<html>Bad Gateway</html>")
    with pytest.raises(PermanentError):
        interpret_http_answer(404, {}, b"Not Found")
    # A readable answer wins over the status code: JAX-WS may send it with HTTP 500.
    assert interpret_http_answer(500, {}, envelope(escape(servicio()))).ok


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502</body></html>",
        envelope("")[:-20],
        envelope(""),
        envelope(escape("<otraCosa/>")),
        envelope(escape(servicio(codigo="cero"))),
        envelope(escape(servicio().replace("<codigo>0</codigo>", ""))),
        envelope(escape(servicio().replace(base64.b64encode(ADDENDA).decode(), "***not base64***"))),
        envelope(escape("&lt;servicioAddendas/&gt;")),
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        + envelope("&b;").split(b"?>", 1)[-1],
        envelope(
            escape('<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><servicioAddendas>&x;</servicioAddendas>')
        ),
    ],
    ids=[
        "empty",
        "html",
        "truncated",
        "empty-return",
        "other-document",
        "non-numeric-code",
        "no-code",
        "bad-base64",
        "escaped-twice",
        "entity-expansion",
        "external-entity",
    ],
)
def test_unreadable_or_hostile_answers_are_transient(body: bytes) -> None:
    with pytest.raises(TransientError):
        parse_answer(body)


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_an_answer_or_one_of_our_errors(body: bytes) -> None:
    try:
        answer = parse_answer(body)
    except ProviderError:
        return
    assert isinstance(answer.codigo, int)


_text = st.text(st.characters(codec="utf-8"), max_size=60)


@FAST
@given(
    codigo=st.one_of(st.integers(-(10**12), 10**12).map(str), _text),
    mensaje=_text,
    xml=st.one_of(st.none(), st.binary(max_size=200)),
    style=st.sampled_from(["escaped", "cdata", "inline"]),
    garbage=_text,
)
def test_arbitrary_servicio_answers_read_back_or_fail_typed(
    codigo: str, mensaje: str, xml: bytes | None, style: str, garbage: str
) -> None:
    """Any field values, in any carrier: the reader returns what was written or raises our errors."""
    try:
        text = servicio(codigo=escape(codigo), mensaje=mensaje, xml=xml).replace(
            "</id>", f"</id><extra>{escape(garbage)}</extra>"
        )
    except ValueError:
        return
    inner = {"escaped": escape(text), "cdata": f"<![CDATA[{text}]]>", "inline": text}[style]
    try:
        answer = parse_answer(envelope(inner))
    except ProviderError:
        return
    assert answer.codigo == int(codigo.strip())
    assert answer.xml == (xml or None)
    try:
        refusal(answer, "procesarAddenda")
    except ProviderError:  # refusal returns errors; it never raises
        pytest.fail("refusal raised instead of returning the error")


@FAST
@given(
    style=st.sampled_from(["escaped", "cdata", "inline"]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)), min_size=1, max_size=6),
)
def test_mutated_real_answers_read_or_fail_typed(style: str, edits: list[tuple[int, int, bytes]]) -> None:
    """A valid answer with bytes cut, replaced or inserted anywhere: an answer or one of our errors."""
    text = servicio()
    inner = {"escaped": escape(text), "cdata": f"<![CDATA[{text}]]>", "inline": text}[style]
    body = bytearray(envelope(inner))
    for position, cut, insert in edits:
        at = position % (len(body) + 1)
        body[at : at + cut] = insert
    try:
        answer = parse_answer(bytes(body))
    except ProviderError:
        return
    assert isinstance(answer.codigo, int)
