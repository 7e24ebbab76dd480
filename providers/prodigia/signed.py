"""The signed-part check: an attached addenda must leave every sealed byte of the CFDI as it was.

The issuer's seal (`Sello`) and the PAC's TimbreFiscalDigital are computed over the Comprobante
without its Addenda (Anexo 20 leaves the Addenda out of the cadena original precisely so that it can
be added after stamping). A service that changed anything else, a Total rounded differently, a
TimbreFiscalDigital re-serialised with another attribute, would hand back a CFDI whose seal no longer
verifies, and a retailer's portal would reject it, or worse, accept an invoice that is not the one
the SAT holds. So the returned document is compared with the original, Addenda removed from both, in
canonical form, and anything but an identical result is refused.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from providers.base import InvalidPayload, PermanentError
from providers.prodigia.inputs import parse_cfdi

XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{{{XSI}}}schemaLocation"


class AddendaRefused(PermanentError):
    """The service answered success with a document that is not kept: it is not what was asked for."""


class SignedPartChanged(AddendaRefused):
    """The returned CFDI is not the original plus one Addenda; the message says what differs."""


def verify_attached(original: bytes, returned: bytes) -> bytes:
    """`returned` unchanged if it is `original` with exactly one `cfdi:Addenda` added as the last child.

    Rules, and why:
    - Both documents are parsed with the safe parser (no entities, no DTD, no network); a returned
      document that is not well-formed, or carries a DOCTYPE, is refused.
    - The returned Comprobante has exactly one `cfdi:Addenda`, as its last child, holding at least one
      element: the schema allows one Addenda, retailers read it at the end, and an empty one is not
      the addenda that was asked for.
    - An Addenda already in the original is outside the seal, so it is left out of the comparison
      whatever the service did with it (replaced it, or merged its content with the new one).
    - The rest is compared as exclusive canonical XML (C14N, comments kept): attribute order, quoting,
      the XML declaration and namespace declarations that only the new Addenda uses do not count;
      every attribute, element, text and comment does. Whitespace is ignored only at the seam where
      the Addenda was cut out, where the service has to write some.
    - The root `xsi:schemaLocation` may gain namespace/location pairs after the original ones, as
      addenda schemas are declared there; it is not part of the cadena original.

    `original` problems raise InvalidPayload (our input); `returned` problems raise SignedPartChanged.
    """
    original_root = parse_cfdi(original, "the original CFDI").getroot()
    try:
        returned_root = parse_cfdi(returned, "the CFDI returned with the addenda").getroot()
    except InvalidPayload as exc:
        raise SignedPartChanged(exc.message) from None
    namespace = etree.QName(original_root).namespace
    if etree.QName(returned_root).namespace != namespace:
        raise SignedPartChanged("the returned CFDI has another version (namespace) than the original")
    addenda_tag = f"{{{namespace}}}Addenda"
    found = [child for child in returned_root if child.tag == addenda_tag]
    if len(found) != 1:
        raise SignedPartChanged(f"the returned CFDI has {len(found)} cfdi:Addenda elements instead of exactly one")
    if returned_root[-1] is not found[0]:
        raise SignedPartChanged("the cfdi:Addenda is not the last child of cfdi:Comprobante")
    if not any(isinstance(child.tag, str) for child in found[0]):
        raise SignedPartChanged("the cfdi:Addenda is empty")

    expected = _without_addenda(original_root, addenda_tag)
    actual = _without_addenda(returned_root, addenda_tag)
    _accept_added_schema_locations(expected, actual)
    try:
        expected_form = _canonical(expected)
    except etree.C14NError:
        raise InvalidPayload("the original CFDI cannot be canonicalised (a relative namespace URI?)") from None
    try:
        actual_form = _canonical(actual)
    except etree.C14NError:
        raise SignedPartChanged("the returned CFDI cannot be canonicalised (a relative namespace URI?)") from None
    if expected_form != actual_form:
        raise SignedPartChanged(f"the signed part of the CFDI changed: {_first_difference(expected, actual)}")
    return returned


def _without_addenda(root: Any, addenda_tag: str) -> Any:
    """A copy of `root` with its Addenda children removed and the whitespace of the seam dropped."""
    clone = copy.deepcopy(root)
    for child in [child for child in clone if child.tag == addenda_tag]:
        # lxml removes an element's tail with it: the text after the Addenda goes too.
        clone.remove(child)
    if len(clone):
        last = clone[-1]
        if last.tail is not None and not last.tail.strip():
            last.tail = None
    elif clone.text is not None and not clone.text.strip():
        clone.text = None
    return clone


def _accept_added_schema_locations(expected: Any, actual: Any) -> None:
    """Let `actual` keep the original schemaLocation if it only appended whole pairs to it."""
    before = (expected.get(SCHEMA_LOCATION) or "").split()
    after = (actual.get(SCHEMA_LOCATION) or "").split()
    if after == before or after[: len(before)] != before or (len(after) - len(before)) % 2:
        return
    if before:
        actual.set(SCHEMA_LOCATION, expected.get(SCHEMA_LOCATION))
    else:
        del actual.attrib[SCHEMA_LOCATION]


def _canonical(root: Any) -> bytes:
    return bytes(etree.tostring(root, method="c14n", exclusive=True, with_comments=True))


def _name(element: Any) -> str:
    if not isinstance(element.tag, str):
        return "a comment or processing instruction"
    qname = etree.QName(element)
    prefix = element.prefix
    return f"{prefix}:{qname.localname}" if prefix else qname.localname


def _first_difference(expected: Any, actual: Any, path: str = "") -> str:
    """Where two trees first differ, by element path and attribute name; never the values (payload)."""
    here = f"{path}/{_name(expected)}" if path else _name(expected)
    if expected.tag != actual.tag:
        return f"{here} became {_name(actual)}"
    if not isinstance(expected.tag, str):
        return f"{here} changed" if expected.text != actual.text else ""
    for name in sorted(set(expected.attrib) | set(actual.attrib)):
        label = etree.QName(name).localname
        if name not in actual.attrib:
            return f"attribute {label} of {here} was removed"
        if name not in expected.attrib:
            return f"attribute {label} was added to {here}"
        if expected.get(name) != actual.get(name):
            return f"attribute {label} of {here} changed"
    if (expected.text or "") != (actual.text or ""):
        return f"the text of {here} changed"
    for left, right in zip(expected, actual, strict=False):
        found = _first_difference(left, right, here)
        if found:
            return found
        if (left.tail or "") != (right.tail or ""):
            return f"the text after {here}/{_name(left)} changed"
    if len(expected) != len(actual):
        return f"{here} has {len(actual)} children instead of {len(expected)}"
    if path:
        return ""
    return "the canonical forms differ (namespace declarations or prefixes)"
