"""The HTTP face of the simulator: IIS-style routing, the WSDL, fault injection, files and admin.

Faults are decided per call from one seeded random stream. The ones that model a request that never
reached MYSuite (HTTP 500, SOAP fault, dropped connection, outage) are applied before the transaction
runs, so they have no effect; `drop_after` and `malformed` run the transaction first and then lose or
garble the answer, which is what a client must survive to prove it adopts 3196 on a resend.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandbox.admin import admin_routes
from sandbox.mysuite.config import MySuiteSandboxConfig
from sandbox.mysuite.soap import (
    ZERO_GUID,
    Answer,
    EnvelopeReader,
    SoapFault,
    SoapRequest,
    content_type,
    dotnet_timestamp,
    is_guid,
    load_transactions,
    render_fault,
    render_response,
    soap_action,
    soap_version,
)
from sandbox.mysuite.store import Store
from sandbox.mysuite.transactions import CODE_UNSUPPORTED, Transactions, fail

WSDL_PATH = Path(__file__).with_name("FactWSFront.wsdl")
SERVICES = {"async/factwsfront.asmx": "async", "sync/factwsfront.asmx": "sync"}
_ADDRESS_RE = re.compile(rb'(<soap(?:12)?:address location=")[^"]*(")')

IIS_500 = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n<html><head><title>500 - Internal server error.'
    b"</title></head><body><h2>500 - Internal server error.</h2><h3>There is a problem with the resource you "
    b"are looking for, and it cannot be displayed.</h3></body></html>"
)
IIS_503 = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    b"<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2>"
    b"<hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>"
)


class DroppedConnection(Exception):
    """Raised after the response has started so uvicorn closes the socket mid-answer (a lost response)."""


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every connection the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(item, _QuietDrops) for item in logger.filters):
        logger.addFilter(_QuietDrops())


class MySuiteSandbox:
    """State and handlers of one simulated MYSuite installation (both services share documents)."""

    def __init__(self, config: MySuiteSandboxConfig) -> None:
        self.initial_config = config
        self.config = config
        self.store = Store()
        self.transactions = Transactions(self.store, lambda: self.config)
        self.wsdl = WSDL_PATH.read_bytes()
        self.known_transactions = frozenset(load_transactions(self.wsdl))
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    # Faults

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def _fault_for(self, transaction: str) -> str | None:
        """One draw decides at most one fault, in a fixed order of the rate knobs."""
        config = self.config
        if config.fault_transactions and transaction not in config.fault_transactions:
            return None
        rates = (
            ("http500", config.http500_rate),
            ("soap_fault", config.soap_fault_rate),
            ("drop", config.drop_rate),
            ("drop_after", config.drop_after_rate),
            ("malformed", config.malformed_rate),
        )
        if not any(rate for _, rate in rates):
            return None
        draw = self._draw()
        threshold = 0.0
        for name, rate in rates:
            threshold += rate
            if draw < threshold:
                return name
        return None

    # SOAP endpoint

    async def service_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        service = SERVICES.get(request.path_params["path"].lower())
        if service is None:
            await Response("Not Found", status_code=404, media_type="text/plain")(scope, receive, send)
            return
        config = self.config
        if config.outage:
            await self._outage(scope, receive, send)
            return
        if request.method == "GET":
            await self._get(request, scope, receive, send)
            return
        if request.method != "POST":
            await Response(status_code=405, headers={"Allow": "GET, POST"})(scope, receive, send)
            return
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        await self._post(request, service, scope, receive, send)

    async def _outage(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config.outage_mode == "drop":
            await _drop(send, b"")
        await Response(IIS_503, status_code=503, media_type="text/html")(scope, receive, send)

    async def _get(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        query = request.url.query.lower()
        if query.split("&")[0] == "wsdl" or "wsdl" in (key.lower() for key in request.query_params):
            location = self._public_url(request, request.url.path)
            body = _ADDRESS_RE.sub(lambda match: match.group(1) + location.encode() + match.group(2), self.wsdl)
            await Response(body, media_type="text/xml; charset=utf-8")(scope, receive, send)
            return
        page = b"<html><body><h1>FactWSFront</h1><p>Simulated MYSuite service. Append ?WSDL.</p></body></html>"
        await Response(page, media_type="text/html; charset=utf-8")(scope, receive, send)

    def _public_url(self, request: Request, path: str) -> str:
        """The absolute URL the client used (or `public_url` when the sandbox sits behind a proxy)."""
        if self.config.public_url:
            root = request.scope.get("root_path", "")
            return self.config.public_url + path[len(root) :] if path.startswith(root) else path
        return str(request.url.replace(path=path, query=""))

    async def _post(self, request: Request, service: str, scope: Scope, receive: Receive, send: Send) -> None:
        ctype = request.headers.get("content-type", "")
        soap12 = soap_version(ctype)
        action = soap_action(request.headers.get("soapaction"), ctype, soap12)
        received_ns = time.time_ns()
        try:
            reader = EnvelopeReader(soap12, action)
            async for chunk in request.stream():
                reader.feed(chunk)
            call = reader.close()
        except SoapFault as refused:
            await _send(send, 500, render_fault(refused, soap12), content_type(soap12))
            return
        transaction = call.transaction
        counted_id = call.text("Data2") if transaction == "ASYNC_CONVERT_NATIVE_XML" else None
        self.store.count_call(transaction, counted_id)
        fault = self._fault_for(transaction)
        if fault is not None:
            self.store.count_fault(transaction, counted_id)
        if fault == "http500":
            await _send(send, 500, IIS_500, "text/html")
            return
        if fault == "soap_fault":
            injected = SoapFault("Server was unable to process request. ---> Timeout expired.", client=False)
            await _send(send, 500, render_fault(injected, soap12), content_type(soap12))
            return
        if fault == "drop":
            await _drop(send, b"")
        base_url = self._public_url(request, request.scope.get("root_path", ""))
        answer = await run_in_threadpool(self._execute, call, service, base_url)
        payload = self._render(call, answer, received_ns)
        if fault == "drop_after":
            await _drop(send, payload[: len(payload) // 2], total=len(payload))
        if fault == "malformed":
            payload = payload[: len(payload) * 2 // 3] + b"<ResponseData1>&#x"
        await _send(send, 200, payload, content_type(soap12))

    def _execute(self, call: SoapRequest, service: str, base_url: str) -> Answer:
        if call.transaction not in self.known_transactions:
            return fail(CODE_UNSUPPORTED, "Transacción desconocida.", "Transacción no soportada")
        return self.transactions.execute(call, service, base_url)

    def _render(self, call: SoapRequest, answer: Answer, received_ns: int) -> bytes:
        transaction = call.transaction if call.transaction in self.known_transactions else "NO_TRANSACTION"
        requestor = call.text("Requestor")
        user = call.text("User")
        return render_response(
            call,
            answer,
            transaction=transaction,
            requestor=requestor if is_guid(requestor) else ZERO_GUID,
            user=user if is_guid(user) else ZERO_GUID,
            request_id=str(uuid.uuid4()),
            request_timestamp=dotnet_timestamp(received_ns),
            processor=self.config.effective_processor,
        )

    # Files

    async def file_endpoint(self, request: Request) -> Response:
        config = self.config
        if config.faults_on_files:
            if config.outage:
                if config.outage_mode == "drop":
                    return _DropResponse()
                return Response(IIS_503, status_code=503, media_type="text/html")
            if config.latency_ms:
                await asyncio.sleep(config.latency_ms / 1000)
            fault = self._fault_for("FILES")
            if fault is not None:
                self.store.count_file("faults")
                if fault in ("drop", "drop_after"):
                    return _DropResponse()
                if fault == "malformed":
                    return Response(b"PK\x03\x04", media_type="application/octet-stream")
                return Response(IIS_500, status_code=500, media_type="text/html")
        link = self.transactions.verify_token(request.path_params["token"])
        if link is None or link.expires_at <= time.time():
            self.store.count_file("expired")
            return Response(
                b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
                b"<Message>The link is invalid or has expired.</Message></Error>",
                status_code=403,
                media_type="application/xml",
            )
        content = await run_in_threadpool(self.transactions.file_content, link)
        if content is None:
            self.store.count_file("not_found")
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        self.store.count_file("downloads")
        body, media, name = content
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # Admin

    def apply_config(self, changes: dict[str, Any]) -> None:
        new = self.config.updated(changes, default=self.initial_config)
        if new.seed != self.config.seed:
            with self._rng_lock:
                self._rng = random.Random(new.seed)
        self.config = new

    def reset(self) -> None:
        self.store.reset()
        with self._rng_lock:
            self._rng = random.Random(self.config.seed)


async def _send(send: Send, status: int, body: bytes, media_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"private"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _drop(send: Send, partial: bytes, total: int = 4096) -> NoReturn:
    """Start an answer and abandon it: the client gets headers (maybe some body) and then a closed socket.

    ASGI offers no way to close a socket before the status line; uvicorn answers 500 if the app fails
    that early, so the drop is made just after it, which clients see as an incomplete response.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/xml; charset=utf-8"),
                (b"content-length", str(total).encode()),
            ],
        }
    )
    if partial:
        await send({"type": "http.response.body", "body": partial, "more_body": True})
    raise DroppedConnection


class _DropResponse(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _drop(send, b"")


class _Endpoint:
    """A raw ASGI endpoint: Starlette wraps plain functions in a Request/Response cycle, which a
    handler that must sometimes abandon its answer half-way cannot use."""

    def __init__(self, sandbox: MySuiteSandbox) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.sandbox.service_endpoint(scope, receive, send)


def create_app(config: MySuiteSandboxConfig | None = None) -> Starlette:
    """The MYSuite simulator as an ASGI app; the `MySuiteSandbox` is at `app.state.sandbox`."""
    _install_log_filter()
    sandbox = MySuiteSandbox(config or MySuiteSandboxConfig.from_env())
    app = Starlette(
        routes=[
            *admin_routes(
                show=lambda: sandbox.config.as_dict(),
                apply=sandbox.apply_config,
                reset=sandbox.reset,
                counters=sandbox.store.snapshot,
            ),
            Route("/files/{token}", sandbox.file_endpoint, methods=["GET"]),
            Route("/{path:path}", _Endpoint(sandbox)),
        ]
    )
    app.state.sandbox = sandbox
    return app
