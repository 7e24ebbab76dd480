"""A small seedable generator of CFDI 4.0 documents, their SAT metadata lines, and packages of them.

Every document is a pure function of a key (seed, taxpayer, direction, day, position), so a period
asked twice, or split in halves, yields exactly the same UUIDs: that is what lets a test prove that
every CFDI was indexed once. The XML is written from a string template (no tree), because the
benchmark writes 200,000 of them. Seals and certificates say plainly that they are simulated.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO
from xml.sax.saxutils import quoteattr

MEXICO = timezone(timedelta(hours=-6))
DAY = 86400
METADATA_HEADER = (
    "Uuid~RfcEmisor~NombreEmisor~RfcReceptor~NombreReceptor~RfcPac~FechaEmision~FechaCertificacionSat~Monto~"
    "EfectoComprobante~Estatus~FechaCancelacion"
)
_NAMES = ("COMERCIALIZADORA", "SERVICIOS", "DISTRIBUIDORA", "CONSTRUCTORA", "TRANSPORTES", "ALIMENTOS", "GRUPO")
_SUFFIXES = ("DEL NORTE", "DEL BAJIO", "INTEGRALES", "MX", "Y ASOCIADOS", "PACIFICO")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TYPES = "IIIIIIIEP"  # mostly ingresos, as in real mailboxes
PAC_RFC = "SPR190613I52"


@dataclass(frozen=True, slots=True)
class FakeCfdi:
    uuid: str
    issuer_rfc: str
    issuer_name: str
    receiver_rfc: str
    receiver_name: str
    issued: str
    certified: str
    total: str
    type: str
    cancelled: str | None


def _rfc(digest: bytes) -> str:
    letters = "".join(_LETTERS[byte % 26] for byte in digest[:3])
    date = f"{digest[3] % 30 + 70:02d}{digest[4] % 12 + 1:02d}{digest[5] % 28 + 1:02d}"
    tail = "".join(_LETTERS[byte % 26] if byte % 3 else str(byte % 10) for byte in digest[6:9])
    return letters + date + tail


def _name(digest: bytes) -> str:
    return f"{_NAMES[digest[9] % len(_NAMES)]} {_SUFFIXES[digest[10] % len(_SUFFIXES)]} SA DE CV"


def _local(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), MEXICO).strftime("%Y-%m-%dT%H:%M:%S")


def fake_cfdi(key: str, taxpayer: str, received: bool, issued_epoch: float, cancelled_rate: float = 0.0) -> FakeCfdi:
    """The document named by `key`, issued to (received) or by `taxpayer` at `issued_epoch`."""
    digest = hashlib.sha256(key.encode()).digest()
    other_rfc, other_name = _rfc(digest), _name(digest)
    own_name = f"EMPRESA {taxpayer} SA DE CV"
    cents = int.from_bytes(digest[16:20], "big") % 5_000_000 + 100
    cancelled = None
    if cancelled_rate > 0 and int.from_bytes(digest[20:24], "big") / 2**32 < cancelled_rate:
        cancelled = _local(issued_epoch + 3 * DAY)
    return FakeCfdi(
        uuid=str(uuidlib.UUID(bytes=digest[:16], version=4)).upper(),
        issuer_rfc=other_rfc if received else taxpayer,
        issuer_name=other_name if received else own_name,
        receiver_rfc=taxpayer if received else other_rfc,
        receiver_name=own_name if received else other_name,
        issued=_local(issued_epoch),
        certified=_local(issued_epoch + 60 + digest[24] % 120),
        total=f"{cents // 100}.{cents % 100:02d}",
        type=_TYPES[digest[25] % len(_TYPES)],
        cancelled=cancelled,
    )


def period_documents(
    seed: int,
    taxpayer: str,
    received: bool,
    start: float,
    end: float,
    per_day: int,
    cancelled_rate: float = 0.0,
) -> Iterator[FakeCfdi]:
    """The documents of [start, end] (epoch seconds, inclusive): `per_day` per calendar day at fixed times."""
    for day, position in _slots(start, end, per_day):
        issued = day + (position + 0.5) * DAY / per_day
        key = f"{seed}|{taxpayer}|{int(received)}|{int(day)}|{position}"
        yield fake_cfdi(key, taxpayer, received, issued, cancelled_rate)


def _slots(start: float, end: float, per_day: int) -> Iterator[tuple[float, int]]:
    if per_day <= 0 or end < start:
        return
    day = start - (start % DAY)
    while day <= end:
        for position in range(per_day):
            issued = day + (position + 0.5) * DAY / per_day
            if start <= issued <= end:
                yield day, position
        day += DAY


def period_count(start: float, end: float, per_day: int) -> int:
    """How many documents `period_documents` yields, in O(days) without building them."""
    if per_day <= 0 or end < start:
        return 0
    first_day = start - (start % DAY)
    last_day = end - (end % DAY)
    if first_day == last_day:
        return sum(1 for _ in _slots(start, end, per_day))
    head = sum(1 for _ in _slots(start, first_day + DAY - 1, per_day))
    tail = sum(1 for _ in _slots(last_day, end, per_day))
    middle = int((last_day - first_day) / DAY) - 1
    return head + middle * per_day + tail


def sample_documents(
    seed: int, count: int, taxpayer: str = "AAA010101AAA", received: bool = True
) -> Iterator[FakeCfdi]:
    """`count` documents one minute apart from 2025-01-01, for benchmarks and parser tests."""
    origin = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    for position in range(count):
        yield fake_cfdi(f"{seed}|sample|{position}", taxpayer, received, origin + 60 * position, cancelled_rate=0.05)


_XML_TEMPLATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" '
    'xsi:schemaLocation="http://www.sat.gob.mx/cfd/4 http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd" '
    'Version="4.0" Serie="A" Folio="{folio}" Fecha="{issued}" Sello="SANDBOX" NoCertificado="00000000000000000000" '
    'Certificado="SANDBOX" SubTotal="{total}" Moneda="MXN" Total="{total}" TipoDeComprobante="{type}" '
    'Exportacion="01" MetodoPago="PUE" FormaPago="03" LugarExpedicion="64000">'
    '<cfdi:Emisor Rfc={issuer_rfc} Nombre={issuer_name} RegimenFiscal="601"/>'
    '<cfdi:Receptor Rfc={receiver_rfc} Nombre={receiver_name} DomicilioFiscalReceptor="64000" '
    'RegimenFiscalReceptor="601" UsoCFDI="G03"/>'
    "<cfdi:Conceptos>"
    '<cfdi:Concepto ClaveProdServ="01010101" Cantidad="1" ClaveUnidad="H87" Descripcion="Articulo simulado" '
    'ValorUnitario="{total}" Importe="{total}" ObjetoImp="01"/>'
    "</cfdi:Conceptos>"
    "<cfdi:Complemento>"
    '<tfd:TimbreFiscalDigital xsi:schemaLocation="http://www.sat.gob.mx/TimbreFiscalDigital '
    'http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd" Version="1.1" '
    'UUID="{uuid}" FechaTimbrado="{certified}" RfcProvCertif="' + PAC_RFC + '" SelloCFD="SANDBOX" '
    'NoCertificadoSAT="00000000000000000000" SelloSAT="SANDBOX"/>'
    "</cfdi:Complemento>"
    "</cfdi:Comprobante>"
)


def cfdi_xml(doc: FakeCfdi) -> bytes:
    return _XML_TEMPLATE.format(
        folio=doc.uuid[:8],
        issued=doc.issued,
        total=doc.total,
        type=doc.type,
        issuer_rfc=quoteattr(doc.issuer_rfc),
        issuer_name=quoteattr(doc.issuer_name),
        receiver_rfc=quoteattr(doc.receiver_rfc),
        receiver_name=quoteattr(doc.receiver_name),
        uuid=doc.uuid,
        certified=doc.certified,
    ).encode("utf-8")


def metadata_line(doc: FakeCfdi) -> str:
    """One metadata line as SAT writes it: space-separated dates, Estatus 1/0, empty cancellation."""
    fields = (
        doc.uuid,
        doc.issuer_rfc,
        doc.issuer_name,
        doc.receiver_rfc,
        doc.receiver_name,
        PAC_RFC,
        doc.issued.replace("T", " "),
        doc.certified.replace("T", " "),
        doc.total,
        doc.type,
        "0" if doc.cancelled else "1",
        (doc.cancelled or "").replace("T", " "),
    )
    return "~".join(fields)


def write_package(target: Path | IO[bytes], documents: Iterable[FakeCfdi], kind: str, name: str = "package") -> int:
    """Write a SAT-style package: one `<UUID>.xml` per CFDI, or one `<name>.txt` of metadata.

    Entries are deflated as SAT's are, written one at a time, so 200,000 documents never sit in
    memory together. Returns the number of documents written.
    """
    if kind not in ("cfdi", "metadata"):
        raise ValueError("kind must be 'cfdi' or 'metadata'")
    count = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        if kind == "cfdi":
            for doc in documents:
                archive.writestr(f"{doc.uuid}.xml", cfdi_xml(doc))
                count += 1
        else:
            with archive.open(f"{name}.txt", "w", force_zip64=True) as out:
                out.write((METADATA_HEADER + "\r\n").encode())
                for doc in documents:
                    out.write((metadata_line(doc) + "\r\n").encode("utf-8"))
                    count += 1
    return count
