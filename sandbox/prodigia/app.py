"""The HTTP face of the simulator: the generated WSDL, both operations, the account lock, faults, admin.

Behaviour follows `providers/prodigia.md` §1.4: JAX-WS answers (`<ns2:{operation}Response><return>`
holding the entity-escaped `servicioAddendas`), `xmlBase64` only on success, and a login lock: the
refused logins of each `usuario` are counted, and after `lock_after` in a row (3, as Prodigia's
account rules say) the user gets code 1 even with the right password until `POST /_admin/reset`.
All handlers are coroutines on one event loop and never await between reading and updating the
state, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections import Counter
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.admin import admin_routes
from sandbox.prodigia.addendas import DatosError, addenda_document, attach, generate
from sandbox.prodigia.config import ProdigiaSandboxConfig
from sandbox.prodigia.wsdl import render_wsdl

SERVICE_PATH = "padeserv/integracionaddendas"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_PARAMETERS = ("contrato", "usuario", "passwd", "datos")
OPERATIONS: dict[str, tuple[str, ...]] = {
    "procesarAddenda": _PARAMETERS,
    "procesarAdjuntarAddenda": (*_PARAMETERS, "xmlcfdi"),
}

# The seed's "Tabla 2: Códigos de respuestas comunes" (2 repeats the text of 1 there).
MESSAGES = {
    1: "El usuario del webservice no existe o proporcionó una contraseña incorrecta.",
    2: "El usuario del webservice no existe o proporcionó una contraseña incorrecta.",
    3: "Parámetro inválido. Uno de los parámetros de la operación del webservice es incorrecto o hace falta.",
    5: "Off-line por mantenimiento.",
    6: "Ocurrió un error en el procesamiento de su archivo.",
}
LOCKED_MESSAGE = "Bloqueo de acceso: el usuario ingresó incorrectamente sus credenciales 3 veces."

HTTP_500_PAGE = (
    b"<!DOCTYPE html><html><head><title>Error 500 - Internal Server Error</title></head>"
    b"<body><h1>HTTP Status 500 - Internal Server Error</h1></body></html>"
)
HTTP_503_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>HTTP Status 503 - Service Unavailable</h1></body></html>"
)


class SoapFault(Exception):
    """A request the JAX-WS runtime itself would refuse, before any operation runs."""


class ProdigiaSandbox:
    """State and handlers of one simulated IntegracionAddendas service."""

    def __init__(self, config: ProdigiaSandboxConfig) -> None:
        self.initial_config = config
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget every counter and lift every lock, as Prodigia's support would after a call."""
        self._rng = random.Random(self.config.seed)
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.codes: Counter[int] = Counter()
        self.consecutive_refusals: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.locked: set[str] = set()

    # -- the service ----------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        if request.path_params["path"].strip("/").lower() != SERVICE_PATH:
            return Response("Not Found", status_code=404, media_type="text/plain")
        config = self.config
        if config.outage:
            return Response(HTTP_503_PAGE, status_code=503, media_type="text/html")
        if request.method == "GET":
            if "wsdl" in (key.lower() for key in request.query_params):
                address = self._public_url(request)
                return Response(render_wsdl(config.namespace, address), media_type="text/xml; charset=utf-8")
            page = b"<html><body><h1>IntegracionAddendas</h1><p>Simulated service. Append ?wsdl.</p></body></html>"
            return Response(page, media_type="text/html; charset=utf-8")
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        try:
            operation, params = self._read_call(await request.body())
        except SoapFault as refused:
            return _fault(str(refused), client=True)
        self.calls[operation] += 1
        fault = self._fault()
        if fault is not None:
            self.faults[operation] += 1
        if fault == "http500":
            return Response(HTTP_500_PAGE, status_code=500, media_type="text/html")
        if fault == "soap_fault":
            return _fault("java.lang.RuntimeException: Connection reset", client=False)
        codigo, mensaje, document = self._execute(operation, params)
        self.codes[codigo] += 1
        body = self._render(operation, codigo, mensaje, document, params.get("contrato") or "")
        if fault == "malformed":
            body = body[: len(body) * 2 // 3] + b"<codigo>&#x"
        return Response(body, media_type="text/xml; charset=utf-8")

    def _public_url(self, request: Request) -> str:
        if self.config.public_url:
            root = request.scope.get("root_path", "")
            path = request.url.path
            return self.config.public_url + (path[len(root) :] if path.startswith(root) else path)
        return str(request.url.replace(query=""))

    def _fault(self) -> str | None:
        """One draw decides at most one fault, in a fixed order of the rate knobs."""
        config = self.config
        rates = (
            ("http500", config.http500_rate),
            ("soap_fault", config.soap_fault_rate),
            ("malformed", config.malformed_rate),
        )
        if not any(rate for _, rate in rates):
            return None
        draw = self._rng.random()
        threshold = 0.0
        for name, rate in rates:
            threshold += rate
            if draw < threshold:
                return name
        return None

    def _read_call(self, body: bytes) -> tuple[str, dict[str, str]]:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
        try:
            root = etree.fromstring(body, parser=parser)
        except (etree.LxmlError, ValueError):
            raise SoapFault("Couldn't parse the SOAP message: not well-formed XML") from None
        if root is None or root.tag != f"{{{SOAP11}}}Envelope":
            raise SoapFault("Expected a SOAP 1.1 Envelope")
        body_el = root.find(f"{{{SOAP11}}}Body")
        if body_el is None or len(body_el) == 0:
            raise SoapFault("The SOAP Body is empty")
        call = body_el[0]
        qname = etree.QName(call)
        if qname.namespace != self.config.namespace or qname.localname not in OPERATIONS:
            raise SoapFault(f"Cannot find dispatch method for {{{qname.namespace}}}{qname.localname}")
        names = OPERATIONS[qname.localname]
        params: dict[str, str] = {}
        for child in call:
            if isinstance(child.tag, str) and child.tag in names:  # JAX-WS parameters are unqualified
                params[child.tag] = child.text or ""
        return qname.localname, params

    def _execute(self, operation: str, params: dict[str, str]) -> tuple[int, str, bytes | None]:
        config = self.config
        now = time.gmtime()
        if config.in_maintenance(now.tm_hour * 60 + now.tm_min):
            return 5, MESSAGES[5], None
        contrato, usuario, passwd = (params.get(name, "") for name in ("contrato", "usuario", "passwd"))
        if not (contrato and usuario and passwd):
            return 3, MESSAGES[3], None
        if usuario in self.locked:
            self.refusals[usuario] += 1
            return 1, LOCKED_MESSAGE, None
        refused = 0
        if usuario != config.usuario or passwd != config.passwd:
            refused = 1
        elif contrato != config.contrato:
            refused = 2
        elif config.force_code in (1, 2):
            refused = config.force_code
        if refused:
            self.refusals[usuario] += 1
            self.consecutive_refusals[usuario] += 1
            if self.consecutive_refusals[usuario] >= config.lock_after:
                self.locked.add(usuario)
            return refused, config.force_message or MESSAGES[refused], None
        self.consecutive_refusals[usuario] = 0
        if config.force_code is not None and config.force_code != 0:
            return config.force_code, config.force_message or MESSAGES.get(config.force_code, "Error."), None
        datos = params.get("datos", "")
        if not datos.strip() or len(datos.encode("utf-8")) > config.max_datos_bytes:
            return 3, MESSAGES[3], None
        xmlcfdi = params.get("xmlcfdi", "")
        if operation == "procesarAdjuntarAddenda" and not xmlcfdi.strip():
            return 3, MESSAGES[3], None
        try:
            node = generate(datos)
            if operation == "procesarAddenda":
                return 0, "", addenda_document(node)
            return 0, "", attach(xmlcfdi, node, config.tamper)
        except DatosError as exc:
            return 6, f"{MESSAGES[6]} {exc}", None

    def _render(self, operation: str, codigo: int, mensaje: str, document: bytes | None, contrato: str) -> bytes:
        answer = etree.Element("servicioAddendas")
        etree.SubElement(answer, "id").text = str(uuid.uuid4())
        etree.SubElement(answer, "contrato").text = contrato
        etree.SubElement(answer, "codigo").text = str(codigo)
        etree.SubElement(answer, "mensaje").text = mensaje or None
        if document is not None:
            etree.SubElement(answer, "xmlBase64").text = base64.b64encode(document).decode("ascii")
        text = etree.tostring(answer, encoding="unicode")
        style = self.config.answer_style
        if style == "inline":
            inner = text
        elif style == "cdata":
            inner = "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
        else:
            inner = escape(text)
        namespace = escape(self.config.namespace, {'"': "&quot;"})
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP11}"><S:Body>'
            f'<ns2:{operation}Response xmlns:ns2="{namespace}"><return>{inner}</return></ns2:{operation}Response>'
            "</S:Body></S:Envelope>"
        ).encode()

    # -- admin ----------------------------------------------------------------------------------

    def apply_config(self, changes: dict[str, Any]) -> None:
        new = self.config.updated(changes, default=self.initial_config)
        if new.seed != self.config.seed:
            self._rng = random.Random(new.seed)
        self.config = new

    def snapshot(self) -> dict[str, Any]:
        users = set(self.refusals) | set(self.consecutive_refusals)
        return {
            "operations": {
                name: {"calls": self.calls[name], "faults": self.faults[name]} for name in sorted(OPERATIONS)
            },
            "codes": {str(code): count for code, count in sorted(self.codes.items())},
            "logins": {
                user: {
                    "consecutive_refusals": self.consecutive_refusals[user],
                    "refusals": self.refusals[user],
                    "locked": user in self.locked,
                }
                for user in sorted(users)
            },
            "locked": sorted(self.locked),
            "totals": {"calls": sum(self.calls.values()), "faults": sum(self.faults.values())},
        }


def _fault(message: str, *, client: bool) -> Response:
    """A JAX-WS (Metro) SOAP 1.1 fault, HTTP 500."""
    code = "S:Client" if client else "S:Server"
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP11}"><S:Body><S:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</S:Fault></S:Body></S:Envelope>"
    ).encode()
    return Response(body, status_code=500, media_type="text/xml; charset=utf-8")


def create_app(config: ProdigiaSandboxConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; the `ProdigiaSandbox` is at `app.state.sandbox`."""
    sandbox = ProdigiaSandbox(config or ProdigiaSandboxConfig.from_env())
    app = Starlette(
        routes=[
            *admin_routes(
                show=lambda: sandbox.config.as_dict(),
                apply=sandbox.apply_config,
                reset=sandbox.reset,
                counters=sandbox.snapshot,
            ),
            Route("/{path:path}", sandbox.endpoint, methods=["GET", "POST"]),
        ]
    )
    app.state.sandbox = sandbox
    return app
