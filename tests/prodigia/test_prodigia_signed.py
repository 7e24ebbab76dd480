"""The signed-part check: honest attachments pass, anything that touches the sealed part is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from providers.base import InvalidPayload
from providers.prodigia import SignedPartChanged, verify_attached
from sandbox.prodigia.addendas import attach, generate
from tests.prodigia.conftest import DATOS, stamped_cfdi

CFDI = "http://www.sat.gob.mx/cfd/4"
TFD = "http://www.sat.gob.mx/TimbreFiscalDigital"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def honest(original: bytes, datos: str = DATOS) -> bytes:
    return attach(original.decode(), generate(datos))


def pretty(content: bytes) -> bytes:
    root = etree.fromstring(content)
    etree.indent(root, space="  ")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def edit(content: bytes, change) -> bytes:
    root = etree.fromstring(content)
    change(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def test_an_honest_attachment_is_returned_byte_for_byte() -> None:
    original = stamped_cfdi()
    returned = honest(original)
    assert verify_attached(original, returned) is returned
    root = etree.fromstring(returned)
    assert root[-1].tag == f"{{{CFDI}}}Addenda"


def test_a_pretty_printed_cfdi_keeps_its_whitespace_and_passes() -> None:
    original = pretty(stamped_cfdi())
    assert verify_attached(original, honest(original))


def test_a_pre_existing_addenda_may_be_replaced_or_merged() -> None:
    original = honest(stamped_cfdi(), "Chedraui\nOrden|1\n")
    replaced = honest(original)
    assert verify_attached(original, replaced)

    def merge(root: etree._Element) -> None:
        root[-1].append(etree.fromstring(b'<s:Nuevo xmlns:s="urn:x"/>'))

    assert verify_attached(original, edit(original, merge))


def test_namespace_declarations_and_schema_locations_added_for_the_addenda_pass() -> None:
    original = stamped_cfdi()
    returned = honest(original)
    text = returned.replace(
        b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4"',
        b'<cfdi:Comprobante xmlns:sor="urn:soriana" xmlns:cfdi="http://www.sat.gob.mx/cfd/4"',
    )
    root = etree.fromstring(text)
    root.set(f"{{{XSI}}}schemaLocation", root.get(f"{{{XSI}}}schemaLocation", "") + " urn:soriana soriana.xsd")
    assert verify_attached(original, etree.tostring(root))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.set("Total", "117.00"), "attribute Total of cfdi:Comprobante changed"),
        (
            lambda r: r.find(f".//{{{TFD}}}TimbreFiscalDigital").set("SelloSAT", "X"),
            "attribute SelloSAT of cfdi:Comprobante/cfdi:Complemento/tfd:TimbreFiscalDigital changed",
        ),
        (lambda r: r.attrib.pop("Folio"), "attribute Folio of cfdi:Comprobante was removed"),
        (lambda r: r.set("Descuento", "1.00"), "attribute Descuento was added"),
        (lambda r: r.find(f"{{{CFDI}}}Receptor").set("Rfc", "XAXX010101000"), "cfdi:Comprobante/cfdi:Receptor"),
        (lambda r: r.insert(1, etree.Comment("nota")), "cfdi:Comprobante"),
        (
            lambda r: r.set(f"{{{XSI}}}schemaLocation", "urn:otro otro.xsd"),
            "attribute schemaLocation of cfdi:Comprobante changed",
        ),
        (lambda r: r.find(f"{{{CFDI}}}Emisor").addnext(etree.Element(f"{{{CFDI}}}Conceptos")), "became cfdi:Conceptos"),
    ],
    ids=["total", "tfd", "removed", "added", "receptor", "comment", "schema-location", "element"],
)
def test_changes_to_the_signed_part_are_refused_and_named(change, fragment: str) -> None:
    original = stamped_cfdi()
    with pytest.raises(SignedPartChanged) as caught:
        verify_attached(original, edit(honest(original), change))
    assert fragment in str(caught.value)
    assert "117.00" not in str(caught.value)  # names what changed, never the values


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        ("total", "attribute Total"),
        ("tfd", "attribute FechaTimbrado"),
        ("two_addendas", "2 cfdi:Addenda"),
        ("misplaced", "not the last child"),
    ],
)
def test_the_sandbox_tampering_modes_are_refused(tamper: str, fragment: str) -> None:
    original = stamped_cfdi()
    with pytest.raises(SignedPartChanged) as caught:
        verify_attached(original, attach(original.decode(), generate(DATOS), tamper))
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        (b"<cfdi:Comprobante", "not well-formed"),
        (b'<!DOCTYPE c><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4"/>', "DOCTYPE"),
        (b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3"/>', "another version"),
        (b"<Addenda/>", "not a CFDI"),
    ],
)
def test_returned_documents_that_are_not_the_cfdi_are_refused(returned: bytes, fragment: str) -> None:
    with pytest.raises(SignedPartChanged) as caught:
        verify_attached(stamped_cfdi(), returned)
    assert fragment in str(caught.value)


def test_no_addenda_or_an_empty_one_is_refused() -> None:
    original = stamped_cfdi()
    with pytest.raises(SignedPartChanged, match="0 cfdi:Addenda"):
        verify_attached(original, original)
    emptied = edit(honest(original), lambda r: r[-1].remove(r[-1][0]))
    with pytest.raises(SignedPartChanged, match="empty"):
        verify_attached(original, emptied)


def test_a_bad_original_is_our_input_error_not_the_service_s() -> None:
    with pytest.raises(InvalidPayload) as caught:
        verify_attached(b"<a/>", honest(stamped_cfdi()))
    assert not isinstance(caught.value, SignedPartChanged)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_attribute_change_in_the_signed_part_is_refused(data: st.DataObject) -> None:
    original = stamped_cfdi()
    root = etree.fromstring(honest(original))
    elements = [
        e for e in root.iter() if e.attrib and not any(a.tag == f"{{{CFDI}}}Addenda" for a in e.iterancestors())
    ]
    elements = [e for e in elements if e.tag != f"{{{CFDI}}}Addenda"]
    element = data.draw(st.sampled_from(elements))
    name = data.draw(st.sampled_from(sorted(element.attrib)))
    value = data.draw(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, codec="utf-8"), max_size=20))
    if element is root and name == f"{{{XSI}}}schemaLocation":
        value = "x" + value  # appending whole pairs is allowed: keep this a real change
    if value == element.get(name):
        return
    element.set(name, value)
    with pytest.raises(SignedPartChanged):
        verify_attached(original, etree.tostring(root))


def test_a_returned_cfdi_that_cannot_be_canonicalised_is_refused() -> None:
    original = stamped_cfdi()
    returned = edit(honest(original), lambda r: r.find(f"{{{CFDI}}}Emisor").append(etree.Element("{relativo}Nota")))
    with pytest.raises(SignedPartChanged, match="canonicalised"):
        verify_attached(original, returned)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_returned_bytes_are_refused_with_our_error(returned: bytes) -> None:
    with pytest.raises(SignedPartChanged):
        verify_attached(stamped_cfdi(), returned)
