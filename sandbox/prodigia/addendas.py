"""Addenda generation and attachment, as the simulator does them.

INVENTED: Prodigia's `datos` formats ("Formato CSV - CFDI 3.3", one per retailer) are not public, so
the grammar read here and the nodes written are the simulator's own, and every generated element
lives in a `urn:sandbox:prodigia:addenda:<type>` namespace that says so. The grammar:

    <addenda type>            first non-empty line: a type of the seed's list, by name or code
    <Field>|<value>           every further non-empty line: one field (names are XML names)

Types whose retailer schemas hold attributes get the fields as attributes of one element (a field
may then appear once); the others get one child element per line, repeats allowed (item lines).
Anything the generator cannot read is a `DatosError`, which the service reports as code 6.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

CFDI_NAMESPACES = ("http://www.sat.gob.mx/cfd/4", "http://www.sat.gob.mx/cfd/3")
TFD = "http://www.sat.gob.mx/TimbreFiscalDigital"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)


class DatosError(ValueError):
    """`datos` or `xmlcfdi` cannot be processed; the message is the service's `mensaje`."""


@dataclass(frozen=True)
class Kind:
    code: str
    name: str
    root: str
    attributes: bool


KINDS: tuple[Kind, ...] = (
    Kind("casaley", "Casa Ley", "AddendaCasaLey", False),
    Kind("mabe", "Mabe", "Factura", False),
    Kind("soriana", "Soriana", "DSCargaRemisionProv", False),
    Kind("lowes", "Lowes", "AddendaLowes", True),
    Kind("soriana-extemporanea", "Soriana Extemporánea", "DSCargaRemisionProvExtemporanea", False),
    Kind("homedepot", "HomeDepot", "requestForPayment", False),
    Kind("americanstandard", "AmericanStandard", "AddendaAmericanStandard", True),
    Kind("chedraui", "Chedraui", "requestForPayment", False),
    Kind("kbfoam", "KBFoam", "AddendaKBFoam", True),
    Kind("acerosmx", "AcerosMx", "AddendaAcerosMx", True),
    Kind("liverpool-heb", "Liverpool/HEB", "detallista", False),
    Kind("cityfresko", "City Fresko (Comercial Mexicana)", "AddendaComercialMexicana", False),
    Kind("koblenz", "Koblenz", "AddendaKoblenz", True),
)


def _fold(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if ch.isalnum()).lower()


_BY_NAME = {_fold(key): kind for kind in KINDS for key in (kind.code, kind.name)}


def generate(datos: str) -> Any:
    """The retailer node (not yet wrapped in cfdi:Addenda) that `datos` describes."""
    lines = [line.strip() for line in datos.split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise DatosError("Los datos están vacíos.")
    kind = _BY_NAME.get(_fold(lines[0]))
    if kind is None:
        raise DatosError(f"Tipo de addenda no soportado en la línea 1: {lines[0][:40]}")
    if len(lines) < 2:
        raise DatosError("La addenda no tiene campos.")
    namespace = f"urn:sandbox:prodigia:addenda:{kind.code}"
    node = etree.Element(f"{{{namespace}}}{kind.root}", nsmap={"sbx": namespace})
    for number, line in enumerate(lines[1:], start=2):
        name, bar, value = line.partition("|")
        name = name.strip()
        if not bar or not _FIELD.match(name):
            raise DatosError(f"Línea {number}: se esperaba Campo|valor.")
        if kind.attributes:
            if node.get(name) is not None:
                raise DatosError(f"Línea {number}: el campo {name} está repetido.")
            node.set(name, value.strip())
        else:
            etree.SubElement(node, f"{{{namespace}}}{name}").text = value.strip()
    return node


def addenda_document(node: Any, cfdi_namespace: str = CFDI_NAMESPACES[0]) -> bytes:
    """procesarAddenda's document: the node inside a `cfdi:Addenda`."""
    addenda = etree.Element(f"{{{cfdi_namespace}}}Addenda", nsmap={"cfdi": cfdi_namespace})
    addenda.append(node)
    return bytes(etree.tostring(addenda, xml_declaration=True, encoding="UTF-8"))


def attach(xmlcfdi: str, node: Any, tamper: str = "") -> bytes:
    """The CFDI with `node` in a new `cfdi:Addenda` as its last child (an existing Addenda is replaced).

    Nothing is re-signed, as the seed says. `tamper` makes this a dishonest service for tests of the
    client's signed-part check: `total` alters Comprobante/@Total, `tfd` the TimbreFiscalDigital,
    `two_addendas` leaves a second Addenda, `misplaced` puts the Addenda before the Complemento.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    try:
        root = etree.fromstring(_DECLARATION.sub("", xmlcfdi, count=1).strip().encode("utf-8"), parser=parser)
    except (etree.LxmlError, ValueError):
        raise DatosError("El XML del CFDI no está bien formado.") from None
    if root is None or root.getroottree().docinfo.doctype:
        raise DatosError("El XML del CFDI no es válido.")
    namespace = etree.QName(root).namespace
    if etree.QName(root).localname != "Comprobante" or namespace not in CFDI_NAMESPACES:
        raise DatosError("El XML no es un CFDI (cfdi:Comprobante).")
    addenda_tag = f"{{{namespace}}}Addenda"
    for old in [child for child in root if child.tag == addenda_tag]:
        root.remove(old)
    addenda = etree.SubElement(root, addenda_tag)
    addenda.append(node)
    if len(root) > 1:  # keep an indented document indented: the Addenda takes the old last child's place
        previous = root[-2]
        addenda.tail, previous.tail = previous.tail, root.text
    _tamper(root, addenda, tamper, addenda_tag)
    return bytes(etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8"))


def _tamper(root: Any, addenda: Any, mode: str, addenda_tag: str) -> None:
    if mode == "total":
        try:
            total = Decimal(root.get("Total", "0"))
        except InvalidOperation:
            total = Decimal(0)
        root.set("Total", f"{total + 1:.2f}")
    elif mode == "tfd":
        for stamp in root.iter(f"{{{TFD}}}TimbreFiscalDigital"):
            stamp.set("FechaTimbrado", "2000-01-01T00:00:00")
    elif mode == "two_addendas":
        extra = etree.SubElement(root, addenda_tag)
        etree.SubElement(extra, "{urn:sandbox:prodigia:addenda:extra}Extra")
    elif mode == "misplaced" and len(root) > 1:
        root.remove(addenda)
        root.insert(0, addenda)
