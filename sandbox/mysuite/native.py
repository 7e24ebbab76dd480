"""MYSuite native XML in, CFDI files out.

The native document can be 40 MB, so it is checked with a pull parser that discards each subtree as
soon as it is read: the whole document is proven well-formed while only the handful of values the
simulator needs (issuer, receiver, serie/folio, internal number, total) are kept. The CFDI XML and
PDF are generated from those values at download time instead of being stored.
"""

from __future__ import annotations

import base64
import binascii
import io
import zipfile
from dataclasses import dataclass

from lxml import etree

FX_NS = "http://www.fact.com.mx/schema/fx"
SUPPORTED_VERSIONS = ("8",)
_CHUNK = 1024 * 1024

ROOT_TAG = f"{{{FX_NS}}}FactDocMX"

# Values kept, by the root child that holds them and their path below it (local names, fx namespace).
_WANTED: dict[str, dict[str, str]] = {
    "Version": {"": "version"},
    "Identificacion": {
        "RFCEmisor": "rfc_emisor",
        "RazonSocialEmisor": "razon_social_emisor",
        "TipoDeComprobante": "tipo",
        "NumeroInterno": "numero_interno",
        "LugarExpedicion": "lugar_expedicion",
        "AsignacionSolicitada/Serie": "serie",
        "AsignacionSolicitada/Folio": "folio",
        "AsignacionSolicitada/TiempoDeEmision": "tiempo_de_emision",
    },
    "Receptor": {"RFCReceptor": "rfc_receptor", "NombreReceptor": "nombre_receptor"},
    "Totales": {"Moneda": "moneda", "SubTotal": "subtotal", "Total": "total"},
}
_WANTED_TAGS = {f"{{{FX_NS}}}{name}": name for name in _WANTED}


class NativeError(ValueError):
    """The input is not a native document MYSuite would accept; the message is safe to show."""


@dataclass(frozen=True)
class NativeDocument:
    """What the simulator keeps of a native document: never its content."""

    size: int
    version: str
    rfc_emisor: str
    razon_social_emisor: str = ""
    tipo: str = ""
    numero_interno: str | None = None
    lugar_expedicion: str = ""
    serie: str = ""
    folio: str = ""
    tiempo_de_emision: str = ""
    rfc_receptor: str = ""
    nombre_receptor: str = ""
    moneda: str = "MXN"
    subtotal: str = ""
    total: str = ""


def decoded_length(text: str) -> int:
    """Byte length of a base64 text without decoding it, so oversize input is refused cheaply."""
    stripped = text.strip()
    if not stripped:
        return 0
    padding = len(stripped) - len(stripped.rstrip("="))
    return len(stripped) * 3 // 4 - padding


def decode_base64(text: str) -> bytes:
    """Decode like .NET Convert.FromBase64String: surrounding and embedded whitespace is ignored."""
    stripped = text.strip()
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        raise NativeError("El contenido de Data1 no es una cadena Base64 válida.") from None


def _parser(**options: object) -> etree.XMLPullParser:
    return etree.XMLPullParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True, **options)


def parse_native(data: bytes) -> NativeDocument:
    """Check root, namespace, Version and RFCEmisor; refuse DTDs; keep only the values listed above.

    The whole document is parsed (so it is proven well-formed), but Python only sees one event, the
    root's start. After each chunk, finished subtrees are cut off along the path of still-open
    elements, which libxml2 does in C: memory stays at about one chunk and a 40 MB document with
    hundreds of thousands of concepts parses at C speed.
    """
    _check_prolog(data)
    parser = _parser(events=("start",), tag=ROOT_TAG, remove_comments=True, remove_pis=True)
    values: dict[str, str] = {}
    root: etree._Element | None = None
    view = memoryview(data)
    try:
        for offset in range(0, len(data), _CHUNK):
            parser.feed(bytes(view[offset : offset + _CHUNK]))
            if root is None:
                root = next((element for _, element in parser.read_events()), None)
            if root is not None:
                _prune(root, values, final=False)
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        raise NativeError(f"El XML nativo no está bien formado: {exc.msg}") from None
    finally:
        view.release()
    _prune(root, values, final=True)
    version = values.get("version", "")
    if version not in SUPPORTED_VERSIONS:
        raise NativeError(f"Versión de XML nativo no soportada: '{version[:10]}'; se espera fx:Version 8.")
    if not values.get("rfc_emisor"):
        raise NativeError("El XML nativo no contiene fx:Identificacion/fx:RFCEmisor.")
    numero = values.pop("numero_interno", None)
    values.pop("version")
    return NativeDocument(size=len(data), version=version, numero_interno=numero or None, **values)


def _check_prolog(data: bytes) -> None:
    """Look at the first element only: refuse a DOCTYPE or a foreign root before parsing 40 MB."""
    parser = _parser(events=("start",))
    view = memoryview(data)
    try:
        for offset in range(0, len(data), 64 * 1024):
            parser.feed(bytes(view[offset : offset + 64 * 1024]))
            first = next((element for _, element in parser.read_events()), None)
            if first is not None:
                if first.getroottree().docinfo.doctype:
                    raise NativeError("El XML nativo no puede contener una declaración DOCTYPE.")
                if first.tag != ROOT_TAG:
                    raise NativeError(f"El elemento raíz debe ser fx:FactDocMX del espacio de nombres {FX_NS}.")
                return
    except etree.XMLSyntaxError as exc:
        raise NativeError(f"El XML nativo no está bien formado: {exc.msg}") from None
    finally:
        view.release()
    raise NativeError("El XML nativo está vacío.")


def _prune(root: etree._Element, values: dict[str, str], *, final: bool) -> None:
    """Read and drop the root's finished children, then drop finished subtrees below the open one.

    While parsing, the last child at each level is the element still open; everything before it is
    complete and can go. The small containers holding wanted values are never pruned inside.
    """
    children = list(root)
    finished = children if final else children[:-1]
    for child in finished:
        name = _WANTED_TAGS.get(child.tag) if isinstance(child.tag, str) else None
        if name is not None:
            for path, key in _WANTED[name].items():
                found = child if not path else child.find("/".join(f"{{{FX_NS}}}{p}" for p in path.split("/")))
                if found is not None and key not in values:
                    values[key] = (found.text or "").strip()
    if finished:
        del root[: len(finished)]
    node = None if final or not children else children[-1]
    if node is not None and node.tag in _WANTED_TAGS:
        return
    while node is not None and len(node):
        if len(node) > 1:
            del node[:-1]
        node = node[-1]


def cfdi_xml(doc: NativeDocument, *, uuid: str, serie: str, folio: str, issued: str, stamped: str) -> bytes:
    """A CFDI 4.0 shaped after the native document, with a TFD; seals say plainly that it is simulated."""
    cfdi = "http://www.sat.gob.mx/cfd/4"
    tfd = "http://www.sat.gob.mx/TimbreFiscalDigital"
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    root = etree.Element(f"{{{cfdi}}}Comprobante", nsmap={"cfdi": cfdi, "xsi": xsi, "tfd": tfd})
    root.set(
        f"{{{xsi}}}schemaLocation",
        f"{cfdi} http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd "
        f"{tfd} http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd",
    )
    attrs = {
        "Version": "4.0",
        "Serie": serie,
        "Folio": folio,
        "Fecha": issued,
        "Sello": "SANDBOX",
        "NoCertificado": "00000000000000000000",
        "Certificado": "SANDBOX",
        "SubTotal": doc.subtotal or doc.total or "0",
        "Moneda": doc.moneda or "MXN",
        "Total": doc.total or "0",
        "TipoDeComprobante": _TIPOS.get(doc.tipo.upper(), "I"),
        "Exportacion": "01",
        "LugarExpedicion": doc.lugar_expedicion or "00000",
    }
    for name, value in attrs.items():
        if value:
            root.set(name, value)
    emisor = etree.SubElement(root, f"{{{cfdi}}}Emisor")
    emisor.set("Rfc", doc.rfc_emisor)
    emisor.set("Nombre", doc.razon_social_emisor or doc.rfc_emisor)
    receptor = etree.SubElement(root, f"{{{cfdi}}}Receptor")
    receptor.set("Rfc", doc.rfc_receptor or "XAXX010101000")
    receptor.set("Nombre", doc.nombre_receptor or "PUBLICO EN GENERAL")
    complemento = etree.SubElement(root, f"{{{cfdi}}}Complemento")
    stamp = etree.SubElement(complemento, f"{{{tfd}}}TimbreFiscalDigital")
    for name, value in (
        ("Version", "1.1"),
        ("UUID", uuid),
        ("FechaTimbrado", stamped),
        ("RfcProvCertif", "SPR190613I52"),
        ("SelloCFD", "SANDBOX"),
        ("NoCertificadoSAT", "00000000000000000000"),
        ("SelloSAT", "SANDBOX"),
    ):
        stamp.set(name, value)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


_TIPOS = {"FACTURA": "I", "NOTA_DE_CREDITO": "E", "TRASLADO": "T", "PAGO": "P"}


def cfdi_pdf(lines: list[str]) -> bytes:
    """A one-page PDF listing the fiscal ids: real enough for clients that sniff `%PDF` and store it."""
    text_ops = ["BT", "/F1 11 Tf", "50 780 Td", "14 TL"]
    for line in lines:
        safe = line.encode("latin-1", "replace").decode("latin-1")
        safe = safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({safe}) Tj T*")
    text_ops.append("ET")
    stream = "\n".join(text_ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def zipped(name: str, content: bytes) -> bytes:
    """The seed calls the async links "links a los archivos ZIP en la nube": one file per archive."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return out.getvalue()
