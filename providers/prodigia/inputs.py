"""What may be sent to the addendas service: a known addenda type, clean `datos`, a CFDI worth attaching to.

Every check here runs before the network, so a document that can never succeed never spends a call
(and never counts as one of Prodigia's logins).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lxml import etree

from providers.base import InvalidPayload
from providers.xml import parse_untrusted

MAX_DATOS_BYTES = 256 * 1024
"""The seed gives no limit. `datos` is a few lines of ERP text per invoice (header plus one line per
item); 256 KiB holds thousands of item lines while keeping a runaway export from being sent."""

MAX_CFDI_BYTES = 16 * 1024 * 1024
"""A CFDI travels inside the SOAP body as escaped text; 16 MiB covers CFDI with tens of thousands of
concepts. Larger files are refused before parsing."""

CFDI_NAMESPACES = frozenset({"http://www.sat.gob.mx/cfd/3", "http://www.sat.gob.mx/cfd/4"})


@dataclass(frozen=True)
class AddendaType:
    """One addenda the service offers: `code` is what operators type, `name` how the seed prints it."""

    code: str
    name: str


ADDENDA_TYPES: tuple[AddendaType, ...] = (
    AddendaType("casaley", "Casa Ley"),
    AddendaType("mabe", "Mabe"),
    AddendaType("soriana", "Soriana"),
    AddendaType("lowes", "Lowes"),
    AddendaType("soriana-extemporanea", "Soriana Extemporánea"),
    AddendaType("homedepot", "HomeDepot"),
    AddendaType("americanstandard", "AmericanStandard"),
    AddendaType("chedraui", "Chedraui"),
    AddendaType("kbfoam", "KBFoam"),
    AddendaType("acerosmx", "AcerosMx"),
    AddendaType("liverpool-heb", "Liverpool/HEB"),
    AddendaType("cityfresko", "City Fresko (Comercial Mexicana)"),
    AddendaType("koblenz", "Koblenz"),
)
"""The types of "Tipos de Addendas que ofrece Prodigia" (seed 004, revision 2021-10-13)."""

ADDENDA_TYPE_CODES: tuple[str, ...] = tuple(item.code for item in ADDENDA_TYPES)


def _fold(text: str) -> str:
    """Case, accents, spaces and punctuation do not distinguish two types ("Soriana Extemporánea")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isalnum()).lower()


_ALIASES = {"cityfresko": ("City Fresko", "Comercial Mexicana")}
"""The seed prints one cell as "City Fresko (Comercial Mexicana)": either half names it."""

_BY_FOLDED = {
    _fold(key): item for item in ADDENDA_TYPES for key in (item.code, item.name, *_ALIASES.get(item.code, ()))
}


class UnknownAddendaType(InvalidPayload):
    """The type is none of those the service offers; the message lists the known ones."""


def addenda_type(value: str) -> AddendaType:
    """The known type `value` names (by code or by the seed's name), or UnknownAddendaType."""
    found = _BY_FOLDED.get(_fold(value)) if isinstance(value, str) else None
    if found is None:
        raise UnknownAddendaType(
            f"unknown addenda type {str(value)[:60]!r}; known types: {', '.join(ADDENDA_TYPE_CODES)}"
        )
    return found


# Control characters (C0 but \n, DEL, C1) and the two code points XML 1.0 cannot carry at all.
_FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def clean_datos(datos: str | bytes, limit: int = MAX_DATOS_BYTES) -> str:
    """`datos` as it is sent: UTF-8 text lines joined by \\n, or InvalidPayload saying what is wrong.

    CRLF line ends are turned into \\n, because ERPs on Windows write them and the seed defines the
    separator as \\n; a lone \\r is refused, since it would be read as a line end by some parsers and
    as data by others. A leading byte-order mark is dropped. Tabs are refused like every other control
    character: the service defines no use for them.
    """
    if isinstance(datos, bytes):
        if len(datos) > limit:
            raise InvalidPayload(f"addenda data is larger than {limit} bytes")
        try:
            text = datos.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPayload(f"addenda data is not UTF-8 (byte {exc.start})") from None
    elif isinstance(datos, str):
        text = datos
    else:
        raise InvalidPayload("addenda data must be text")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPayload("addenda data contains unpaired surrogates") from None
    if size > limit:
        raise InvalidPayload(f"addenda data is larger than {limit} bytes")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise InvalidPayload(
            f"addenda data contains the control character U+{ord(bad.group()):04X} on line {line}; "
            "only plain text lines separated by \\n are allowed"
        )
    if not text.strip():
        raise InvalidPayload("addenda data is empty")
    return text


def parse_cfdi(content: bytes, what: str, limit: int = MAX_CFDI_BYTES) -> etree._ElementTree:
    """Parse a CFDI safely: size first, then well-formedness, no DOCTYPE, a `cfdi:Comprobante` root.

    Raises InvalidPayload; callers that read a provider's answer translate it into their own error.
    """
    if not isinstance(content, bytes):
        raise InvalidPayload(f"{what} must be bytes")
    if len(content) > limit:
        raise InvalidPayload(f"{what} is larger than {limit} bytes")
    root = parse_untrusted(content, what, InvalidPayload)
    qname = etree.QName(root)
    if qname.localname != "Comprobante" or qname.namespace not in CFDI_NAMESPACES:
        raise InvalidPayload(f"{what} is not a CFDI (root is not cfdi:Comprobante)")
    return root.getroottree()


def cfdi_text(content: bytes) -> str:
    """The CFDI as the String the service takes; CFDI are UTF-8 by rule (Anexo 20)."""
    try:
        return content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"CFDI is not UTF-8 (byte {exc.start})") from None
