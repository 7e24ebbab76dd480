"""The Prodigia addendas sandbox over real HTTP, clients pointed at it, and stamped CFDI to attach to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from providers.prodigia import AddendaClient, ProdigiaConfig
from sandbox.mysuite.native import NativeDocument, cfdi_xml
from sandbox.prodigia import ProdigiaSandboxConfig, create_app
from tests.sandboxes import Admin, client_factory, served

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


class ProdigiaSandbox(Admin):
    """Handle on the running simulator: its service URL, knobs and counters (through its admin API)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = base_url + SERVICE
        super().__init__(f"{base_url}/prodigia")

    def reset(self) -> None:
        self.clear()
        self.configure(preset="default")

    def calls(self) -> int:
        return int(self.totals()["calls"])


@pytest.fixture(scope="session")
def prodigia_server() -> Iterator[ProdigiaSandbox]:
    with served("prodigia", create_app(ProdigiaSandboxConfig())) as url:
        sandbox = ProdigiaSandbox(url)
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
    base = ProdigiaConfig(url=prodigia.url, connect_timeout=2.0, read_timeout=10.0)
    yield from client_factory(lambda **overrides: AddendaClient(replace(base, **overrides)))
