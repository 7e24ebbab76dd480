"""Request envelopes built by zeep from the reconstructed WSDL, in the namespace the settings name.

The WSDL ships with a guessed target namespace (the real one is not public). The namespace is
substituted in the WSDL text before zeep reads it, so every element zeep writes is in the configured
namespace and nothing else about the binding changes.
"""

from __future__ import annotations

import functools
import io
import threading
from pathlib import Path
from typing import Any

import zeep
from lxml import etree
from zeep.transports import Transport

WSDL_PATH = Path(__file__).with_name("IntegracionAddendas.wsdl")
SHIPPED_NAMESPACE = "addendas.ws.pade.mx"
"""The namespace written in the shipped WSDL: a guess shaped after the timbrado service's
`timbrado.ws.pade.mx`."""
BINDING = "IntegracionAddendasPortBinding"
OPERATIONS = ("procesarAddenda", "procesarAdjuntarAddenda")
SOAP11_CONTENT_TYPE = "text/xml; charset=utf-8"


class _LocalOnlyTransport(Transport):
    """Reads the shipped WSDL and refuses the network: a worker must never fetch schemas at runtime."""

    def _load_remote_data(self, url: str) -> bytes:
        raise RuntimeError("the addendas WSDL must not reference remote documents")


def wsdl_text(namespace: str) -> bytes:
    """The shipped WSDL with its target namespace replaced by `namespace`."""
    text = WSDL_PATH.read_bytes()
    return text.replace(f'"{SHIPPED_NAMESPACE}"'.encode(), f'"{namespace}"'.encode())


class EnvelopeBuilder:
    """Thread-safe builder of the two operations' envelopes for one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._operations = _operations(namespace)
        self._lock = threading.Lock()

    def build(self, operation: str, **fields: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of one call; `fields` are the operation's parameters by their names."""
        with self._lock:  # zeep does not document its schema objects as thread-safe
            serialized = self._operations[operation].input.serialize(**fields)
        body = etree.tostring(serialized.content, xml_declaration=True, encoding="utf-8")
        # JAX-WS publishes an empty soapAction; the header must still be present in SOAP 1.1.
        return {"Content-Type": SOAP11_CONTENT_TYPE, "SOAPAction": '""'}, body


@functools.cache
def _operations(namespace: str) -> dict[str, Any]:
    """Load the WSDL once per namespace and process; the binding operations are read-only."""
    client = zeep.Client(io.BytesIO(wsdl_text(namespace)), transport=_LocalOnlyTransport())
    binding = client.wsdl.bindings[f"{{{namespace}}}{BINDING}"]
    return {name: binding.get(name) for name in OPERATIONS}
