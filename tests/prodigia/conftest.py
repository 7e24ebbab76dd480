"""The Prodigia addendas sandbox over real HTTP, clients pointed at it, and stamped CFDI to attach to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from providers.prodigia import AddendaClient, ProdigiaConfig
from sandbox.mysuite.native import NativeDocument, cfdi_xml
from sandbox.prodigia import ProdigiaSandboxConfig, create_app
from sandbox.server import ServerThread

SERVICE = "/prodigia/PadeServ/IntegracionAddendas"
DATOS = "Soriana\nProveedor|12345\nRemision|R-0001\nFolioPedido|P-77\nCantidad|3\n"


def stamped_cfdi(total: str = "116.00", uuid: str = "6F1C9A52-2B0E-4F4B-9C7E-0D2A1B3C4D5E") -> bytes:
    """A CFDI 4.0 with a TimbreFiscalDigital, exactly as the MYSuite sandbox issues it."""
    doc = NativeDocument(
        size=1,
        version="8",
        rfc_emisor="JES900109Q90",
        razon_social_emisor="EMPRESA SA",
        rfc_receptor="SOR810511HN9",
        nombre_receptor="TIENDAS SORIANA",
        subtotal="100.00",
        total=total,
    )
    return cfdi_xml(doc, uuid=uuid, serie="A", folio="17", issued="2024-05-01T10:00:00", stamped="2024-05-01T10:00:05")


class ProdigiaSandbox:
    """Handle on the running simulator: its service URL, knobs and counters (through its admin API)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = base_url + SERVICE
        self._admin = httpx.Client(base_url=f"{base_url}/prodigia/_admin", timeout=10)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        response = self._admin.post("/config", json=knobs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self._admin.post("/reset").raise_for_status()
        self.configure(preset="default")

    def counters(self) -> dict[str, Any]:
        response = self._admin.get("/counters")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def calls(self) -> int:
        return int(self.counters()["totals"]["calls"])

    def close(self) -> None:
        self._admin.close()


@pytest.fixture(scope="session")
def prodigia_server() -> Iterator[ProdigiaSandbox]:
    app = Starlette(routes=[Mount("/prodigia", app=create_app(ProdigiaSandboxConfig()))])
    with ServerThread(app) as server:
        sandbox = ProdigiaSandbox(server.url)
        yield sandbox
        sandbox.close()


@pytest.fixture
def prodigia(prodigia_server: ProdigiaSandbox) -> ProdigiaSandbox:
    """The simulator with no counters, no locks and its start-up knobs."""
    prodigia_server.reset()
    return prodigia_server


@pytest.fixture
def make_client(prodigia: ProdigiaSandbox) -> Iterator[Any]:
    """Build clients pointed at the sandbox; every one is closed after the test."""
    made: list[AddendaClient] = []
    base = ProdigiaConfig(url=prodigia.url, connect_timeout=2.0, read_timeout=10.0)

    def make(**overrides: Any) -> AddendaClient:
        client = AddendaClient(replace(base, **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
