"""Local checks of the clave (Nota 3) and of the XML, before anything is sent."""

from __future__ import annotations

import contextlib
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import InvalidPayload
from providers.hacienda import HaciendaClient, HaciendaSettings
from providers.hacienda.comprobante import parse_clave
from providers.hacienda.samples import COSTA_RICA, build_clave, consecutivo, sample_comprobante

GOOD = build_clave("3101123456", consecutivo(1), security_code="12345678")


@pytest.fixture(scope="module")
def client():
    client = HaciendaClient(
        HaciendaSettings(username="cpj-3-101-123456@stag.comprobanteselectronicos.go.cr", max_payload_bytes=64_000)
    )
    yield client
    client.close()


def test_good_clave_is_split_per_nota_3():
    clave = parse_clave(GOOD)
    assert GOOD == "50601052400310112345600100001010000000001112345678"
    assert clave.issued_on.isoformat() == "2024-05-01"
    assert clave.identification == "003101123456"
    assert (clave.branch, clave.terminal, clave.document_type, clave.sequence) == ("001", "00001", "01", 1)
    assert clave.situation == "1"
    assert clave.security_code == "12345678"


@pytest.mark.parametrize("doc_type", ["01", "02", "03", "04", "08", "09", "10"])
@pytest.mark.parametrize("situation", ["1", "2", "3"])
def test_every_document_type_and_situation_validates(client, doc_type, situation):
    client.validate(sample_comprobante(42, doc_type=doc_type, situation=situation), "inv-42")


def test_tiquete_without_receptor_validates(client):
    client.validate(sample_comprobante(3, doc_type="04", receptor=None), "inv-3")


def _with(position: int, text: str) -> str:
    return GOOD[:position] + text + GOOD[position + len(text) :]


@pytest.mark.parametrize(
    ("clave", "message"),
    [
        (GOOD[:-1], "50 dígitos"),
        (GOOD + "1", "50 dígitos"),
        (_with(10, "A"), "50 dígitos"),
        (_with(0, "507"), "código de país"),
        (_with(3, "310224"), "fecha"),  # 31 February
        (_with(3, "011324"), "fecha"),  # month 13
        (_with(3, "000524"), "fecha"),  # day 0
        (_with(9, "000000000000"), "identificación"),
        (_with(29, "00"), "tipo de documento"),
        (_with(29, "11"), "tipo de documento"),
        (_with(31, "0000000000"), "consecutivo"),
        (_with(41, "0"), "situación"),
        (_with(41, "9"), "situación"),  # the documentation's own example uses 9
        (" " + GOOD[1:], "50 dígitos"),
        ("\u0665" * 50, "50 dígitos"),  # Arabic-Indic digits are digits to str.isdigit, not to Hacienda
    ],
)
def test_bad_claves_are_refused_with_a_clear_message(clave, message):
    with pytest.raises(InvalidPayload, match=message):
        parse_clave(clave)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "vacío"),
        (b"<FacturaElectronica", "bien formado"),
        (b"\xff\xfe<x/>", "bien formado"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "DOCTYPE"),
        (b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x/>', "DOCTYPE"),
        (
            b"<Otro xmlns='https://cdn.comprobanteselectronicos.go.cr/xml-schemas/v4.4/x'/>",
            "no es un comprobante",
        ),
        (b"<FacturaElectronica xmlns='urn:other'/>", "espacio de nombres"),
        (
            b"<FacturaElectronica xmlns='https://cdn.comprobanteselectronicos.go.cr/xml-schemas/v4.4/f'/>",
            "Clave",
        ),
        (b"<x>" + b"a" * 70_000 + b"</x>", "máximo"),
    ],
)
def test_bad_xml_is_refused(client, payload, message):
    with pytest.raises(InvalidPayload, match=message):
        client.validate(payload, "inv")


def _replace(payload: bytes, old: str, new: str) -> bytes:
    assert old.encode() in payload
    return payload.replace(old.encode(), new.encode(), 1)


def test_clave_must_match_the_numero_consecutivo(client):
    payload = sample_comprobante(1)
    with pytest.raises(InvalidPayload, match="NumeroConsecutivo"):
        client.validate(_replace(payload, consecutivo(1), consecutivo(2)), "inv")


def test_clave_type_must_match_the_root_element(client):
    nota = sample_comprobante(1, doc_type="03")
    with pytest.raises(InvalidPayload, match="tipo 03"):
        client.validate(nota.replace(b"NotaCreditoElectronica", b"FacturaElectronica"), "inv")


def test_clave_identification_must_be_the_emisor(client):
    payload = sample_comprobante(1)
    with pytest.raises(InvalidPayload, match="emisor no coincide"):
        client.validate(_replace(payload, "<Numero>3101123456</Numero>", "<Numero>3101999999</Numero>"), "inv")


def test_document_of_another_emisor_is_refused(client):
    payload = sample_comprobante(1, emisor=("01", "114480790", "Otra Persona"))
    with pytest.raises(InvalidPayload, match="contribuyente"):
        client.validate(payload, "inv")


def test_fecha_emision_is_required(client):
    payload = sample_comprobante(1)
    with pytest.raises(InvalidPayload, match="FechaEmision"):
        client.validate(_replace(payload, "2024-05-01T10:00:00-06:00", "01/05/2024"), "inv")


def test_entity_comes_from_the_username_or_the_setting():
    assert HaciendaSettings(username="cpf-01-1234-5678@comprobanteselectronicos.go.cr").entity == "112345678"
    assert HaciendaSettings(username="cpj-3-101-123456@stag.comprobanteselectronicos.go.cr").entity == "3101123456"
    assert HaciendaSettings(username="x@y", entity_override="155812345678").entity == "155812345678"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_validate_of_any_bytes_raises_nothing_but_invalid_payload(client, payload):
    with contextlib.suppress(InvalidPayload):
        client.validate(payload, "inv")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_clave_text_in_the_xml_raises_nothing_but_invalid_payload(client, clave):
    from xml.sax.saxutils import escape

    payload = sample_comprobante(1, clave=escape(clave))
    with contextlib.suppress(InvalidPayload):
        client.validate(payload, "inv")


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=datetime(2016, 1, 1).date(), max_value=datetime(2099, 12, 31).date()),
    doc_type=st.sampled_from(["01", "02", "03", "04", "08", "09", "10"]),
    sequence=st.integers(1, 9_999_999_999),
    situation=st.sampled_from("123"),
    code=st.integers(0, 99_999_999),
)
def test_every_well_built_clave_validates(client, day, doc_type, sequence, situation, code):
    issued = datetime(day.year, day.month, day.day, 8, 30, tzinfo=COSTA_RICA)
    payload = sample_comprobante(
        sequence, doc_type=doc_type, issued=issued, situation=situation, security_code=f"{code:08d}"
    )
    client.validate(payload, "inv")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=50, max_size=50))
def test_any_50_digits_parse_or_raise_invalid_payload(clave):
    try:
        parsed = parse_clave(clave)
    except InvalidPayload:
        return
    assert parsed.value == clave
    assert parsed.consecutivo == clave[21:41]
