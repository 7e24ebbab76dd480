"""The native-document reader: values found wherever chunk boundaries fall, bad input refused."""

from __future__ import annotations

import pytest

from sandbox.mysuite.native import NativeError, decode_base64, decoded_length, parse_native

FX = 'xmlns:fx="http://www.fact.com.mx/schema/fx"'
CHUNK = 1024 * 1024


def document(padding: int, *, nested: bool = False) -> bytes:
    """Identificacion placed after `padding` bytes of concepts, so it can straddle a parser chunk."""
    item = "<fx:Concepto><fx:Cantidad>1</fx:Cantidad></fx:Concepto>"
    filler = item * (padding // len(item))
    if nested:
        filler = f"<fx:Complementos><fx:Otro><fx:Lista>{filler}</fx:Lista></fx:Otro></fx:Complementos>"
    else:
        filler = f"<fx:Conceptos>{filler}</fx:Conceptos>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><fx:FactDocMX {FX}><fx:Version>8</fx:Version>{filler}'
        "<!-- a comment --><fx:Identificacion><fx:RFCEmisor>AAA010101AAA</fx:RFCEmisor>"
        "<fx:NumeroInterno> INT-9 </fx:NumeroInterno><fx:AsignacionSolicitada><fx:Serie>S</fx:Serie>"
        "<fx:Folio>42</fx:Folio></fx:AsignacionSolicitada></fx:Identificacion>"
        "<fx:Totales><fx:Total>10.00</fx:Total></fx:Totales></fx:FactDocMX>"
    ).encode()


@pytest.mark.parametrize("shift", range(-300, 301, 60))
def test_values_are_read_across_chunk_boundaries(shift: int) -> None:
    doc = document(CHUNK - 100 + shift)
    native = parse_native(doc)
    assert (native.rfc_emisor, native.numero_interno, native.serie, native.folio, native.total) == (
        "AAA010101AAA",
        "INT-9",
        "S",
        "42",
        "10.00",
    )
    assert native.size == len(doc)


def test_deeply_nested_large_sections_are_handled() -> None:
    native = parse_native(document(3 * CHUNK, nested=True))
    assert native.rfc_emisor == "AAA010101AAA" and native.folio == "42"


def test_truncation_anywhere_is_refused() -> None:
    doc = document(2 * CHUNK)
    for cut in (10, CHUNK, 2 * CHUNK + 50, len(doc) - 3):
        with pytest.raises(NativeError):
            parse_native(doc[:cut])


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"   ",
        b"<fx:FactDocMX " + FX.encode() + b"><fx:Version>8</fx:Version></fx:FactDocMX>",
        b'<!DOCTYPE r [<!ENTITY x "y">]><r/>',
        b"<a:FactDocMX xmlns:a='urn:x'/>",
    ],
    ids=["empty", "blank", "no-rfc", "doctype", "foreign"],
)
def test_refused_documents(doc: bytes) -> None:
    with pytest.raises(NativeError):
        parse_native(doc)


def test_base64_helpers_follow_dotnet() -> None:
    assert decode_base64(" QUJD\r\nREVG \n") == b"ABCDEF"
    assert decoded_length(" QUJDRA== ") == 4
    with pytest.raises(NativeError):
        decode_base64("QUJ*")
