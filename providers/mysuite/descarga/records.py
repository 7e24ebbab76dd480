"""What one CFDI in a downloaded package says about itself, read from its XML or its metadata line.

Both readers are pure (bytes or text in, a `CfdiRecord` out) and raise only `EntryError`
subclasses, whatever they are given: a package holds tens of thousands of entries from outside, and
one bad entry must cost that entry only (see `providers.mysuite.descarga.package`).

The XML reader is an lxml *target* parser: it never builds a tree, it only looks at the attributes of
the four elements that matter (the root, Emisor, Receptor and the TimbreFiscalDigital of the root's
Complemento) and ignores the rest, so a CFDI with a thousand Concepto lines costs little more than
one with a single line. It refuses any DOCTYPE before an entity could be declared, never resolves
entities, never touches the network and keeps libxml2's size limits (huge_tree off).
"""

from __future__ import annotations

import contextlib
import enum
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

MEXICO_CITY = timezone(timedelta(hours=-6), "America/Mexico_City")
"""CFDI and metadata times carry no offset; they are Mexico City wall time (UTC-6 since 2022)."""

MAX_XML_BYTES = 8 << 20
"""Largest CFDI XML read from a package. Real CFDI with thousands of concepts stay under 5 MB."""
MAX_METADATA_LINE = 16 << 10
"""Longest metadata line accepted; a real one is a few hundred characters."""

CFDI_NAMESPACES = {
    "http://www.sat.gob.mx/cfd/3": "3.3",
    "http://www.sat.gob.mx/cfd/4": "4.0",
}
RETENCIONES_NAMESPACES = {
    "http://www.sat.gob.mx/esquemas/retencionpago/1": "1.0",
    "http://www.sat.gob.mx/esquemas/retencionpago/2": "2.0",
}
TFD_NAMESPACE = "http://www.sat.gob.mx/TimbreFiscalDigital"

RETENCION_TYPE = "RET"
"""`type` of a Retenciones document: they have no TipoDeComprobante, and none of its letters is RET."""

_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,7})?$")
_MAX_FIELD = 300


class Direction(enum.StrEnum):
    ISSUED = "issued"
    RECEIVED = "received"


class CfdiStatus(enum.StrEnum):
    """What SAT says of the document (metadata `Estatus`: 1 vigente, 0 cancelado)."""

    VIGENTE = "vigente"
    CANCELADO = "cancelado"


class EntryError(ValueError):
    """One package entry (an XML file, a metadata line) that cannot be indexed; the rest can."""


class UnsafeXml(EntryError):
    """The XML declares a DOCTYPE (the door to entity expansion and external fetches)."""


class MalformedXml(EntryError):
    """Not well-formed XML."""


class NotACfdi(EntryError):
    """Well-formed XML that is not a CFDI 3.3/4.0 or Retenciones 1.0/2.0 with a readable stamp."""


class EntryTooLarge(EntryError):
    """An entry over the size cap: refused before it is parsed (or decompressed) any further."""


class BadMetadataLine(EntryError):
    """A metadata line whose fields do not match the header or cannot be read."""


@dataclass(frozen=True, slots=True)
class CfdiRecord:
    """The key fields of one CFDI, from its XML or its metadata line (fields a source lacks are None).

    The XML is the document as issued and cannot know whether SAT has cancelled it since; the
    metadata carries the status and the cancellation time. The `cfdi` table merges both.
    """

    uuid: str
    direction: Direction
    issuer_rfc: str | None
    issuer_name: str | None
    receiver_rfc: str | None
    receiver_name: str | None
    issued_at: datetime | None
    certified_at: datetime | None
    total: Decimal | None
    type: str | None
    status: CfdiStatus | None = None
    cancelled_at: datetime | None = None
    pac_rfc: str | None = None
    source: str = "xml"

    def as_row(self) -> dict[str, Any]:
        """The columns of the `cfdi` table (models.cfdi), as plain values."""
        return {
            "uuid": self.uuid,
            "direction": self.direction.value,
            "issuer_rfc": self.issuer_rfc,
            "issuer_name": self.issuer_name,
            "receiver_rfc": self.receiver_rfc,
            "receiver_name": self.receiver_name,
            "issued_at": self.issued_at,
            "certified_at": self.certified_at,
            "total": self.total,
            "type": self.type,
            "status": None if self.status is None else self.status.value,
            "cancelled_at": self.cancelled_at,
            "pac_rfc": self.pac_rfc,
        }


def parse_time(value: str | None) -> datetime | None:
    """An aware UTC datetime from `YYYY-MM-DD[T ]HH:MM:SS[.f]` in Mexico City time; None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value or not _DATE.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1)[:26])
    except ValueError:
        return None
    return parsed.replace(tzinfo=MEXICO_CITY).astimezone(UTC)


def parse_amount(value: str | None) -> Decimal | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 40:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _field(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    return text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD]


def _rfc(value: str | None) -> str | None:
    text = _field(value)
    return None if text is None else text.upper()[:20]


def check_uuid(value: str | None, what: type[EntryError]) -> str:
    text = (value or "").strip()
    if not _UUID.match(text):
        raise what("the entry carries no readable UUID")
    return text.lower()


# -- CFDI XML -----------------------------------------------------------------------------------


class _Collector:
    """lxml parser target: keeps the attributes of the few elements the record needs, nothing else.

    One collector and its parser are reused for every document of a thread (`reset` between
    documents): building an lxml target parser inspects the target's methods, which costs more
    than parsing a typical CFDI.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.depth = 0
        self.root_ns: str | None = None
        self.root: dict[str, str] = {}
        self.emisor: dict[str, str] = {}
        self.receptor: dict[str, str] = {}
        self.receptor_detail: dict[str, str] = {}
        self.totales: dict[str, str] = {}
        self.tfd: dict[str, str] = {}
        self.unsafe = False
        self._in_complemento = False
        self._in_receptor = False

    def doctype(self, *args: Any) -> None:
        self.unsafe = True
        raise UnsafeXml("the entry declares a DOCTYPE")

    def start(self, tag: str, attrib: Any) -> None:
        self.depth += 1
        if self.depth <= 3:
            attrib = _attributes(attrib)
        namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        if self.depth == 1:
            self.root_ns = namespace
            self.root = attrib
        elif self.depth == 2 and namespace == self.root_ns:
            if name == "Emisor":
                self.emisor = attrib
            elif name == "Receptor":
                self.receptor = attrib
                self._in_receptor = True
            elif name == "Totales":
                self.totales = attrib
            elif name == "Complemento":
                self._in_complemento = True
        elif self.depth == 3:
            if self._in_complemento and namespace == TFD_NAMESPACE and name == "TimbreFiscalDigital" and not self.tfd:
                self.tfd = attrib
            elif self._in_receptor and namespace == self.root_ns and name in ("Nacional", "Extranjero"):
                self.receptor_detail = attrib

    def end(self, tag: str) -> None:
        if self.depth == 2:
            self._in_complemento = False
            self._in_receptor = False
        self.depth -= 1

    def data(self, data: str) -> None:
        return None

    def close(self) -> None:
        return None


def _attributes(attrib: Any) -> dict[str, str]:
    """Attribute values as written. With entity resolution off, libxml2 hands a target every `&` of
    an attribute value as the text `&#38;` (so an unexpanded reference stays recognisable); every
    literal `&` is written that way, so turning each `&#38;` back into `&` restores the value exactly."""
    return {key: value.replace("&#38;", "&") if "&" in value else value for key, value in attrib.items()}


class _Reader(threading.local):
    def __init__(self) -> None:
        self.collector = _Collector()
        self.parser = etree.XMLParser(
            target=self.collector,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )


_reader = _Reader()


def collect(chunks: Iterable[bytes], limit: int = MAX_XML_BYTES) -> _Collector:
    """Feed an XML document, chunk by chunk, to this thread's collecting target; stops at `limit` bytes.

    The returned collector is valid until the thread's next call.
    """
    collector, parser = _reader.collector, _reader.parser
    collector.reset()
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise EntryTooLarge(f"the entry is larger than {limit} bytes")
            parser.feed(chunk)
        parser.close()
    except EntryError:
        _discard(parser)
        raise
    except (etree.LxmlError, ValueError, TypeError) as exc:
        _discard(parser)
        if collector.unsafe:  # lxml may wrap the target's own exception
            raise UnsafeXml("the entry declares a DOCTYPE") from None
        raise MalformedXml(f"the entry is not well-formed XML: {str(exc)[:120]}") from None
    return collector


def _discard(parser: Any) -> None:
    """Drop a half-fed document so the reused parser starts clean on the next one."""
    with contextlib.suppress(etree.LxmlError, ValueError, TypeError, EntryError):
        parser.close()


def parse_cfdi_xml(data: bytes | Iterable[bytes], direction: Direction, limit: int = MAX_XML_BYTES) -> CfdiRecord:
    """The record of one CFDI 3.3/4.0 or Retenciones 1.0/2.0 XML; `EntryError` for anything else."""
    chunks: Iterable[bytes] = (data,) if isinstance(data, bytes) else data
    found = collect(chunks, limit)
    namespace = found.root_ns or ""
    uuid = check_uuid(found.tfd.get("UUID"), NotACfdi)
    certified_at = parse_time(found.tfd.get("FechaTimbrado"))
    if namespace in CFDI_NAMESPACES:
        return CfdiRecord(
            uuid=uuid,
            direction=direction,
            issuer_rfc=_rfc(found.emisor.get("Rfc")),
            issuer_name=_field(found.emisor.get("Nombre")),
            receiver_rfc=_rfc(found.receptor.get("Rfc")),
            receiver_name=_field(found.receptor.get("Nombre")),
            issued_at=parse_time(found.root.get("Fecha")),
            certified_at=certified_at,
            total=parse_amount(found.root.get("Total")),
            type=_field(found.root.get("TipoDeComprobante")),
        )
    if namespace in RETENCIONES_NAMESPACES:
        # 1.0 spells RFCEmisor/RFCRecep/montoTotOperacion; 2.0 RfcE/RfcR/MontoTotOperacion.
        detail = found.receptor_detail
        return CfdiRecord(
            uuid=uuid,
            direction=direction,
            issuer_rfc=_rfc(found.emisor.get("RfcE") or found.emisor.get("RFCEmisor")),
            issuer_name=_field(found.emisor.get("NomDenRazSocE")),
            receiver_rfc=_rfc(detail.get("RfcR") or detail.get("RFCRecep") or detail.get("NumRegIdTribR")),
            receiver_name=_field(detail.get("NomDenRazSocR")),
            issued_at=parse_time(found.root.get("FechaExp")),
            certified_at=certified_at,
            total=parse_amount(found.totales.get("MontoTotOperacion") or found.totales.get("montoTotOperacion")),
            type=RETENCION_TYPE,
        )
    raise NotACfdi("the entry is not a CFDI 3.3/4.0 or Retenciones 1.0/2.0 document")


# -- metadata ---------------------------------------------------------------------------------

METADATA_COLUMNS = (
    "Uuid",
    "RfcEmisor",
    "NombreEmisor",
    "RfcReceptor",
    "NombreReceptor",
    "RfcPac",
    "FechaEmision",
    "FechaCertificacionSat",
    "Monto",
    "EfectoComprobante",
    "Estatus",
    "FechaCancelacion",
)
"""SAT's metadata header. Newer files append columns (RfcACuentaTerceros, NombreACuentaTerceros),
so fields are looked up by the header's names, never by position."""

_REQUIRED_COLUMNS = ("Uuid", "Estatus")


class MetadataHeader:
    """The column positions of one metadata file, read from its header line."""

    def __init__(self, line: str) -> None:
        names = [name.strip().lstrip("\ufeff") for name in line.rstrip("\r\n").split("~")]
        if len(names) > 64 or len(line) > MAX_METADATA_LINE:
            raise BadMetadataLine("the metadata header is not a header")
        self.width = len(names)
        self.index = {name.lower(): position for position, name in enumerate(names) if name}
        missing = [name for name in _REQUIRED_COLUMNS if name.lower() not in self.index]
        if missing:
            raise BadMetadataLine(f"the metadata header lacks {', '.join(missing)}")

    def parse(self, line: str, direction: Direction) -> CfdiRecord:
        """One metadata line; a line with more or fewer fields than the header is refused.

        A `~` inside a name would shift every later field, and guessing which name it was in could
        index a wrong status; refusing the line leaves the row to the XML or a later file.
        """
        if len(line) > MAX_METADATA_LINE:
            raise BadMetadataLine("the metadata line is too long")
        fields = line.rstrip("\r\n").split("~")
        if len(fields) != self.width:
            raise BadMetadataLine(f"the metadata line has {len(fields)} fields, the header {self.width}")

        def get(name: str) -> str | None:
            position = self.index.get(name.lower())
            return None if position is None else fields[position]

        status_text = (get("Estatus") or "").strip().lower()
        if status_text in ("1", "vigente"):
            status = CfdiStatus.VIGENTE
        elif status_text in ("0", "cancelado"):
            status = CfdiStatus.CANCELADO
        else:
            raise BadMetadataLine("the metadata line has no readable Estatus")
        return CfdiRecord(
            uuid=check_uuid(get("Uuid"), BadMetadataLine),
            direction=direction,
            issuer_rfc=_rfc(get("RfcEmisor")),
            issuer_name=_field(get("NombreEmisor")),
            receiver_rfc=_rfc(get("RfcReceptor")),
            receiver_name=_field(get("NombreReceptor")),
            issued_at=parse_time(get("FechaEmision")),
            certified_at=parse_time(get("FechaCertificacionSat")),
            total=parse_amount(get("Monto")),
            type=_field(get("EfectoComprobante")),
            status=status,
            cancelled_at=parse_time(get("FechaCancelacion")) if status is CfdiStatus.CANCELADO else None,
            pac_rfc=_rfc(get("RfcPac")),
            source="metadata",
        )
