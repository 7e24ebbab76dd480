"""Local checks of a Costa Rican comprobante before it is sent, and the fields the POST needs.

Hacienda answers a malformed clave or XML with a 400 (or a rejection minutes later) and counts the
call against a quota of 100 an hour on STAG; catching the mistake here costs nothing and gives the
ERP a clear message. The clave rules are those of Nota 3 of the v4.4 annexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from lxml import etree

from providers.base import InvalidPayload

COUNTRY_CODE = "506"
DOCUMENT_TYPES = {
    "01": "Factura electrónica",
    "02": "Nota de débito electrónica",
    "03": "Nota de crédito electrónica",
    "04": "Tiquete electrónico",
    "05": "Confirmación de aceptación",
    "06": "Confirmación de aceptación parcial",
    "07": "Confirmación de rechazo",
    "08": "Factura electrónica de compras",
    "09": "Factura electrónica de exportación",
    "10": "Recibo electrónico de pago",
}
SITUATIONS = {"1": "normal", "2": "contingencia", "3": "sin internet"}

# Root element of each comprobante → the document type its consecutivo must carry. Receiver
# messages (05-07, MensajeReceptor) have another shape and key, and are not sent by this worker.
ROOT_TYPES = {
    "FacturaElectronica": "01",
    "NotaDebitoElectronica": "02",
    "NotaCreditoElectronica": "03",
    "TiqueteElectronico": "04",
    "FacturaElectronicaCompra": "08",
    "FacturaElectronicaExportacion": "09",
    "ReciboElectronicoPago": "10",
}
NAMESPACE_PREFIX = "https://cdn.comprobanteselectronicos.go.cr/xml-schemas/"

_CLAVE_RE = re.compile(r"[0-9]{50}")


@dataclass(frozen=True)
class Clave:
    """The 50-digit key, split as Nota 3 lays it out."""

    value: str
    issued_on: date
    identification: str
    consecutivo: str
    situation: str
    security_code: str

    @property
    def branch(self) -> str:
        return self.consecutivo[:3]

    @property
    def terminal(self) -> str:
        return self.consecutivo[3:8]

    @property
    def document_type(self) -> str:
        return self.consecutivo[8:10]

    @property
    def sequence(self) -> int:
        return int(self.consecutivo[10:])


def parse_clave(value: str) -> Clave:
    """Split and check a clave; InvalidPayload says which part is wrong."""
    if not isinstance(value, str) or not _CLAVE_RE.fullmatch(value):
        shown = value[:60] if isinstance(value, str) else type(value).__name__
        raise InvalidPayload(f"la clave debe tener exactamente 50 dígitos (recibida: {shown!r})")
    if not value.startswith(COUNTRY_CODE):
        raise InvalidPayload(f"la clave debe comenzar con el código de país {COUNTRY_CODE}, no {value[:3]}")
    day, month, year = int(value[3:5]), int(value[5:7]), 2000 + int(value[7:9])
    try:
        issued_on = date(year, month, day)
    except ValueError:
        raise InvalidPayload(f"la fecha de la clave ({value[3:9]}, DDMMAA) no es una fecha válida") from None
    identification = value[9:21]
    if int(identification) == 0:
        raise InvalidPayload("la identificación del emisor en la clave está vacía")
    consecutivo = value[21:41]
    if consecutivo[8:10] not in DOCUMENT_TYPES:
        raise InvalidPayload(f"tipo de documento {consecutivo[8:10]} en la clave no existe (01-10)")
    if int(consecutivo[10:]) == 0:
        raise InvalidPayload("el número del consecutivo en la clave debe empezar en 1")
    situation = value[41]
    if situation not in SITUATIONS:
        raise InvalidPayload(f"situación {situation} en la clave no existe (1 normal, 2 contingencia, 3 sin internet)")
    return Clave(value, issued_on, identification, consecutivo, situation, value[42:])


@dataclass(frozen=True)
class Party:
    id_type: str
    number: str

    def as_json(self) -> dict[str, str]:
        return {"tipoIdentificacion": self.id_type, "numeroIdentificacion": self.number}


@dataclass(frozen=True)
class Comprobante:
    """What the POST /recepcion body needs from the signed XML."""

    clave: Clave
    root: str
    fecha: str
    emisor: Party
    receptor: Party | None


def _parser() -> etree.XMLParser:
    # No entity expansion, no DTD, no network: ERP payloads come from outside.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )


def parse_xml(payload: bytes, max_bytes: int) -> etree._Element:
    """Parse untrusted XML safely: size first, DOCTYPE refused, errors become InvalidPayload."""
    if not isinstance(payload, bytes | bytearray):
        raise InvalidPayload("el comprobante debe ser XML en bytes")
    if len(payload) == 0:
        raise InvalidPayload("el comprobante está vacío")
    if len(payload) > max_bytes:
        raise InvalidPayload(f"el comprobante mide {len(payload)} bytes; el máximo es {max_bytes}")
    try:
        tree = etree.fromstring(bytes(payload), parser=_parser()).getroottree()
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise InvalidPayload(f"el comprobante no es XML bien formado: {_first_line(exc)}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise InvalidPayload("el comprobante no puede declarar DOCTYPE")
    root = tree.getroot()
    if not isinstance(root.tag, str):
        raise InvalidPayload("el comprobante no tiene un elemento raíz")
    return root


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _child(parent: etree._Element, *path: str) -> etree._Element | None:
    node: etree._Element | None = parent
    for name in path:
        if node is None:
            return None
        node = next((c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
    return node


def child_text(parent: etree._Element, *path: str) -> str | None:
    node = _child(parent, *path)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def _party(root: etree._Element, role: str) -> Party | None:
    id_type = child_text(root, role, "Identificacion", "Tipo")
    number = child_text(root, role, "Identificacion", "Numero")
    if id_type is None and number is None:
        return None
    if id_type is None or number is None:
        raise InvalidPayload(f"{role}/Identificacion necesita Tipo y Numero")
    if not re.fullmatch(r"0[1-6]", id_type):
        raise InvalidPayload(f"{role}/Identificacion/Tipo {id_type[:10]!r} no existe (01-06)")
    if len(number) > 20 or (id_type != "05" and not re.fullmatch(r"[0-9]{9,12}", number)):
        raise InvalidPayload(f"{role}/Identificacion/Numero {number[:20]!r} no es una identificación válida")
    return Party(id_type, number)


def parse_comprobante(payload: bytes, *, max_bytes: int, entity: str | None = None) -> Comprobante:
    """Check the XML and its clave against each other; raise InvalidPayload with the first problem."""
    root = parse_xml(payload, max_bytes)
    qname = etree.QName(root)
    expected_type = ROOT_TYPES.get(qname.localname)
    if expected_type is None:
        raise InvalidPayload(f"raíz {qname.localname[:60]!r} no es un comprobante electrónico soportado")
    if not (qname.namespace or "").startswith(NAMESPACE_PREFIX):
        raise InvalidPayload(f"{qname.localname} debe estar en un espacio de nombres de Hacienda ({NAMESPACE_PREFIX}…)")
    clave_text = child_text(root, "Clave")
    if clave_text is None:
        raise InvalidPayload(f"{qname.localname} no tiene Clave")
    clave = parse_clave(clave_text)
    if clave.document_type != expected_type:
        raise InvalidPayload(
            f"la clave es de tipo {clave.document_type} pero el comprobante es {qname.localname} ({expected_type})"
        )
    consecutivo = child_text(root, "NumeroConsecutivo")
    if consecutivo != clave.consecutivo:
        raise InvalidPayload("NumeroConsecutivo no coincide con el consecutivo de la clave (posiciones 22-41)")
    fecha = child_text(root, "FechaEmision")
    if fecha is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})", fecha):
        raise InvalidPayload("FechaEmision falta o no tiene el formato yyyy-MM-ddTHH:mm:ss±hh:mm")
    emisor = _party(root, "Emisor")
    if emisor is None:
        raise InvalidPayload("el comprobante no tiene Emisor/Identificacion")
    if emisor.number.zfill(12) != clave.identification:
        raise InvalidPayload("la identificación del emisor no coincide con la de la clave (posiciones 10-21)")
    if entity is not None and emisor.number.lstrip("0") != entity.lstrip("0"):
        raise InvalidPayload("el emisor del comprobante no es el contribuyente de estas credenciales")
    return Comprobante(clave, qname.localname, fecha, emisor, _party(root, "Receptor"))
