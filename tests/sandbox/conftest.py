"""The MYSuite sandbox served over real HTTP, mounted under /mysuite as `sandbox.app` does."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount

from sandbox.mysuite import MySuiteSandboxConfig, create_app
from sandbox.server import ServerThread

WS = "http://www.fact.com.mx/schema/ws"
NS = {"ws": WS, "soap": "http://schemas.xmlsoap.org/soap/envelope/"}
REQUESTOR = "12211111-1111-1111-1111-111111111111"
ENTITY = "JES900109Q90"
ACTION = f"{WS}/RequestTransaction"
ASYNC = "/mysuite/async/factwsfront.asmx"
SYNC = "/mysuite/sync/FactWSFront.asmx"

# Small thresholds and short processing so the suite stays fast; tests of the real defaults set them.
TEST_CONFIG = MySuiteSandboxConfig(min_bytes=1024, processing_base_seconds=0.25, seconds_per_mb=0.0)


def native_xml(
    size: int = 2048,
    *,
    numero_interno: str | None = None,
    serie: str | None = None,
    folio: str | None = None,
    version: str = "8",
    rfc: str = ENTITY,
) -> bytes:
    """A v8 native document padded with Concepto elements to at least `size` bytes."""
    ident = "<fx:CdgPaisEmisor>MX</fx:CdgPaisEmisor><fx:TipoDeComprobante>FACTURA</fx:TipoDeComprobante>"
    ident += f"<fx:RFCEmisor>{rfc}</fx:RFCEmisor><fx:RazonSocialEmisor>EMPRESA SA</fx:RazonSocialEmisor>"
    if numero_interno is not None:
        ident += f"<fx:NumeroInterno>{numero_interno}</fx:NumeroInterno>"
    assignment = ""
    if serie is not None:
        assignment += f"<fx:Serie>{serie}</fx:Serie>"
    if folio is not None:
        assignment += f"<fx:Folio>{folio}</fx:Folio>"
    assignment += "<fx:TiempoDeEmision>2024-05-01T10:00:00</fx:TiempoDeEmision>"
    ident += f"<fx:AsignacionSolicitada>{assignment}</fx:AsignacionSolicitada>"
    ident += "<fx:LugarExpedicion>64000</fx:LugarExpedicion>"
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<fx:FactDocMX xmlns:fx="http://www.fact.com.mx/schema/fx" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<fx:Version>{version}</fx:Version><fx:Identificacion>{ident}</fx:Identificacion>"
        "<fx:Receptor><fx:RFCReceptor>XAXX010101000</fx:RFCReceptor>"
        "<fx:NombreReceptor>PUBLICO EN GENERAL</fx:NombreReceptor></fx:Receptor><fx:Conceptos>"
    )
    tail = (
        "</fx:Conceptos><fx:Totales><fx:Moneda>MXN</fx:Moneda><fx:SubTotal>100.00</fx:SubTotal>"
        "<fx:Total>116.00</fx:Total></fx:Totales></fx:FactDocMX>"
    )
    concepto = (
        "<fx:Concepto><fx:Cantidad>1</fx:Cantidad><fx:ClaveUnidad>H87</fx:ClaveUnidad>"
        "<fx:Descripcion>Articulo</fx:Descripcion><fx:ValorUnitario>1.00</fx:ValorUnitario></fx:Concepto>"
    )
    room = max(size - len(head) - len(tail), 0)
    count = -(-room // len(concepto))
    body = (head + concepto * count + tail).encode()
    return body


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def envelope(
    transaction: str,
    data1: str = "",
    data2: str = "",
    data3: str = "",
    *,
    requestor: str = REQUESTOR,
    entity: str = ENTITY,
) -> bytes:
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap:Body><RequestTransaction xmlns="{WS}">'
        f"<Requestor>{requestor}</Requestor><Transaction>{transaction}</Transaction><Country>MX</Country>"
        f"<Entity>{entity}</Entity><User>{requestor}</User><UserName>MX.{entity}.Pepito</UserName>"
        f"<Data1>{escape(data1)}</Data1><Data2>{escape(data2)}</Data2><Data3>{escape(data3)}</Data3>"
        "</RequestTransaction></soap:Body></soap:Envelope>"
    ).encode()


@dataclass
class Answer:
    """A parsed RequestTransactionResponse."""

    http: httpx.Response
    root: etree._Element

    def text(self, path: str) -> str | None:
        found = self.root.find(f".//ws:{path.replace('/', '/ws:')}", NS)
        return None if found is None else (found.text or "")

    @property
    def result(self) -> bool:
        return self.text("Response/Result") == "true"

    @property
    def code(self) -> int:
        return int(self.text("Response/Code") or "0")

    def data(self, n: int) -> str | None:
        return self.text(f"ResponseData/ResponseData{n}")

    def decoded(self, n: int) -> bytes:
        return base64.b64decode(self.data(n) or "")


class Client:
    """Speaks to the sandbox the way a MYSuite client does (SOAP 1.1, SOAPAction header)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def post(self, path: str, body: bytes, action: str = ACTION) -> httpx.Response:
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}
        return self.http.post(path, content=body, headers=headers)

    def call(self, transaction: str, data1: str = "", data2: str = "", data3: str = "", **kw: str) -> Answer:
        path = kw.pop("path", ASYNC if transaction.startswith("ASYNC_") else SYNC)
        response = self.post(path, envelope(transaction, data1, data2, data3, **kw))
        assert response.status_code == 200, response.text[:500]
        return Answer(response, etree.fromstring(response.content))

    def submit(self, internal_id: str, size: int = 2048, **kw: str) -> Answer:
        return self.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(size)), internal_id, **kw)

    def admin(self, **changes: object) -> dict[str, object]:
        response = self.http.post("/mysuite/_admin/config", json=changes)
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()
        return result

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/mysuite/_admin/counters").json()
        return result


@pytest.fixture(scope="session")
def mysuite_server() -> Iterator[ServerThread]:
    app = Starlette(routes=[Mount("/mysuite", app=create_app(TEST_CONFIG))])
    with ServerThread(app) as server:
        yield server


@pytest.fixture
def mysuite(mysuite_server: ServerThread) -> Iterator[Client]:
    """A client on a sandbox with no documents and the test configuration."""
    c = Client(mysuite_server.url)
    assert c.http.post("/mysuite/_admin/reset").status_code == 200
    c.admin(preset="default")
    try:
        yield c
    finally:
        c.http.close()
