"""A hostile MYSuite: the async protocol spoken correctly, with answers chosen to hurt the client.

Each document's behaviour is chosen by its internal id (Data2), so one run can mix well-behaved and
hostile documents: `GUID:<name>` answers verify and retrieve with the DocumentGUID `HOSTILE_IDS[name]`,
`RID:<name>` answers the submit with that request id, `LINK:<case>` hands out an XML link to one of
the cases of `file_link`, `PDF:<case>` does the same for the PDF link, and any other id behaves. The internal admin endpoint (`/internal-admin`) stands for a service a link must
never reach; it counts its hits, and is also served by a second server (another origin).
"""

from __future__ import annotations

import io
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.providers.mysuite_samples import b64, envelope

GOOD_XML = b'<?xml version="1.0" encoding="utf-8"?><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4"/>'
GOOD_PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
OVERSIZE_BYTES = 4 << 20
NAMESPACE = uuid.UUID("6c0f3c51-8a3d-4c5e-9f62-2a0b1c9d7e11")
VALID = "687bc63c-e03e-4c64-8eff-602de879bd1e"
HOSTILE_IDS = {
    "long": "A" * 300,
    "long-uuid": VALID + "0" * 300,
    "dotdot": "..",
    "dots": "...",
    "traversal": "../../x",
    "absolute": "/etc/passwd",
    "uuid-path": f"{VALID}/../../x",
    "spaces": "687bc63c e03e 4c64 8eff 602de879bd1e",
}
"""Values XML can carry; NUL and other control characters are covered by the parser's property tests."""


def zipped(name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
        bundle.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def damaged_zip() -> bytes:
    data = bytearray(zipped("a.xml", GOOD_XML * 50))
    data[40] ^= 0xFF  # inside the compressed member: the CRC check fails
    return bytes(data)


def bomb_zip() -> bytes:
    """A small ZIP whose one member inflates to 64 MiB: over the default 50 MiB XML cap."""
    out = io.BytesIO()
    info = zipfile.ZipInfo("bomb.xml", date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as bundle, bundle.open(info, "w") as member:
        block = b"\0" * (1 << 20)
        for _ in range(64):
            member.write(block)
    return out.getvalue()


async def _endless_zip() -> AsyncIterator[bytes]:
    yield b"PK\x03\x04"
    block = b"\0" * (64 << 10)
    for _ in range(OVERSIZE_BYTES // len(block)):
        yield block


@dataclass
class Hostile:
    """The server's state: the other origin links may point to, and the admin endpoint's hits."""

    other_origin: str = ""
    admin_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    by_request: dict[str, str] = field(default_factory=dict)

    def request_id(self, internal_id: str) -> str:
        value = str(uuid.uuid5(NAMESPACE, internal_id))
        with self.lock:
            self.by_request[value] = internal_id
        return value

    def internal_id(self, request_id: str) -> str:
        with self.lock:
            return self.by_request.get(request_id, "")

    def hit_admin(self) -> None:
        with self.lock:
            self.admin_hits += 1


def file_link(base: str, other: str, case: str, kind: str) -> str:
    """The link a document of `case` gets for `kind` (xml or pdf)."""
    return {
        "foreign": f"{other}/internal-admin",
        "redirect-out": f"{base}/redirect?to={other}/internal-admin",
        "redirect-in": f"{base}/redirect?to=/files/good-{kind}.zip",
        "redirect-loop": f"{base}/loop",
        "oversize": f"{base}/files/oversize",
        "json": f"{base}/files/json",
        "doctype": f"{base}/files/doctype",
        "broken-xml": f"{base}/files/broken-xml",
        "damaged-zip": f"{base}/files/damaged-zip",
        "bomb": f"{base}/files/bomb",
        "xml-as-pdf": f"{base}/files/raw-xml",
    }.get(case, f"{base}/files/good-{kind}.zip")


def _record(request_id: str, guid: str) -> str:
    xml = (
        "<AsyncRequest><Entity>JES900109Q90</Entity>"
        f"<Uuid>{request_id}</Uuid><InternalID>x</InternalID>"
        "<EnrolledTimeStamp>2026-11-29T11:49:15</EnrolledTimeStamp><Status>2</Status>"
        f"<DocumentGUID>{escape(guid)}</DocumentGUID><Year>2026</Year><Batch>A</Batch><Serial>1</Serial>"
        "</AsyncRequest>"
    )
    return b64(xml)


def _fields(body: bytes) -> dict[str, str]:
    root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
    wanted = {"Transaction", "Data1", "Data2"}
    return {etree.QName(e).localname: (e.text or "") for e in root.iter() if etree.QName(e).localname in wanted}


def create_app(state: Hostile) -> Starlette:
    files = {
        "good-xml.zip": (zipped("cfdi.xml", GOOD_XML), "application/zip"),
        "good-pdf.zip": (zipped("cfdi.pdf", GOOD_PDF), "application/zip"),
        "raw-xml": (GOOD_XML, "application/xml"),
        "json": (b'{"status": "ok", "items": []}', "application/json"),
        "doctype": (b'<?xml version="1.0"?><!DOCTYPE html><html><body>login</body></html>', "text/html"),
        "broken-xml": (b"<?xml version='1.0'?><cfdi><unclosed></cfdi>", "application/xml"),
        "damaged-zip": (damaged_zip(), "application/zip"),
        "bomb": (bomb_zip(), "application/zip"),
    }

    async def soap(request: Request) -> Response:
        fields = _fields(await request.body())
        transaction = fields.get("Transaction", "")
        base = str(request.base_url).rstrip("/")
        if transaction == "ASYNC_CONVERT_NATIVE_XML":
            internal_id = fields.get("Data2", "").strip()
            if internal_id.startswith("RID:"):
                request_id = HOSTILE_IDS[internal_id[4:]]
            else:
                request_id = state.request_id(internal_id)
            return Response(envelope(transaction=transaction, rd1=request_id), media_type="text/xml")
        internal_id = state.internal_id(fields.get("Data1", "").strip())
        case = internal_id.split(":", 1)[1] if ":" in internal_id else ""
        guid = str(uuid.uuid5(NAMESPACE, f"cfdi:{internal_id}"))
        if internal_id.startswith("GUID:"):
            guid = HOSTILE_IDS[case]
        if transaction == "ASYNC_CONVERT_VERIFY":
            record = _record(fields.get("Data1", "").strip(), guid)
            return Response(envelope(transaction=transaction, rd1=record), media_type="text/xml")
        if transaction == "ASYNC_RETRIEVE_DOCUMENT":
            xml_case = case if internal_id.startswith("LINK:") else ""
            pdf_case = case if internal_id.startswith("PDF:") else ""
            links = (
                file_link(base, state.other_origin, xml_case, "xml"),
                file_link(base, state.other_origin, pdf_case, "pdf"),
            )
            answer = envelope(
                transaction=transaction,
                identifier={"DocumentGUID": guid, "Batch": "A", "Serial": "1", "AYear": "2026"},
                rd1=b64(links[0]),
                rd3=b64(links[1]),
            )
            return Response(answer, media_type="text/xml")
        return Response(envelope(result=False, code="9999", transaction=transaction), media_type="text/xml")

    async def serve_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "oversize":
            return StreamingResponse(_endless_zip(), media_type="application/zip")
        content, media_type = files[name]
        return Response(content, media_type=media_type)

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    async def internal_admin(request: Request) -> Response:
        state.hit_admin()
        return JSONResponse({"admin": True, "secret": "must never be archived"})

    return Starlette(
        routes=[
            Route("/mysuite/async/factwsfront.asmx", soap, methods=["POST"]),
            Route("/mysuite/sync/FactWSFront.asmx", soap, methods=["POST"]),
            Route("/files/{name}", serve_file),
            Route("/redirect", redirect),
            Route("/loop", loop),
            Route("/internal-admin", internal_admin),
        ]
    )
