"""The simulator: Keycloak token endpoint, API de Recepción v1, fault knobs and admin endpoints.

Behaviour follows `providers/hacienda-cr.md` §7 (the recommended simulator column): 202 with an
empty body, duplicate clave as 400 + `X-Error-Cause … ya fue recibido anteriormente.`, 404 +
`X-Error-Cause: No existe el recurso con Clave = [...]`, hyphenated lower-case status keys, and the
STAG quota with `X-Ratelimit-*` headers. All handlers are coroutines on one event loop, so the
state needs no locks: nothing awaits between reading and updating it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.admin import admin_routes
from sandbox.faults import injected_fault
from sandbox.hacienda.config import HaciendaSandboxConfig

MENSAJE_NS = "https://cdn.comprobanteselectronicos.go.cr/xml-schemas/v4.4/mensajeHacienda"
_SIGNING_KEY = secrets.token_bytes(32)


@dataclass
class IssuedToken:
    username: str
    kind: str  # "access" or "refresh"
    expires_at: float


@dataclass
class Document:
    clave: str
    fecha: str
    received_at: float
    outcome: str
    detail: str
    emisor: dict[str, str]
    receptor: dict[str, str] | None
    nombre_emisor: str
    nombre_receptor: str | None
    total: str
    tax: str | None
    callback_url: str | None


@dataclass
class SandboxState:
    config: HaciendaSandboxConfig
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    documents: dict[str, Document] = field(default_factory=dict)
    quota: dict[float, tuple[float, int]] = field(default_factory=dict)  # period -> (opened at, count)
    totals: Counter[str] = field(default_factory=Counter)
    per_clave: dict[str, Counter[str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        self.tokens.clear()
        self.documents.clear()
        self.quota.clear()
        self.totals.clear()
        self.per_clave.clear()
        self.rng = random.Random(self.config.seed)

    def count(self, clave: str, name: str) -> None:
        self.per_clave.setdefault(clave, Counter())[name] += 1


def _server_error(status: int) -> Response:
    if status == 499:
        return _error(499, "La petición no pudo ser recibida por la plataforma. Debe reintentarse el proceso.")
    return _error(status, "Error interno del API de recepción (falla simulada)")


def _error(status: int, cause: str, *, validation: bool = False, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"X-Error-Cause": cause, **(headers or {})}
    if validation:
        all_headers["validation-exception"] = "true"
    return Response(status_code=status, headers=all_headers)


def create_app(config: HaciendaSandboxConfig | None = None) -> Starlette:
    """The Hacienda simulator as an ASGI app, meant to be mounted under `/hacienda`."""
    state = SandboxState(config or HaciendaSandboxConfig.from_env())
    state.reset()

    # ---- faults and quota -------------------------------------------------------------------

    def outage() -> Response | None:
        if not state.config.outage:
            return None
        state.totals["fault_outage"] += 1
        return _error(503, "Servicio no disponible: la plataforma está en mantenimiento")

    async def faults(target: str) -> Response | str | None:
        """An injected failure, "malformed" for a garbled answer after processing, or None."""
        return await injected_fault(
            state.config,
            state.rng,
            state.totals,
            target,
            _server_error,
            (("malformed", state.config.malformed_share),),
        )

    def quota() -> tuple[Response | None, dict[str, str]]:
        """Count one recepción call; a 429 once any window is spent.

        A window opens with the first call after the previous one closed (rather than on the clock's
        hour), so a test sees the same counts whenever it runs.
        """
        config = state.config
        windows = [
            (limit, period)
            for limit, period in (
                (config.quota_per_hour, config.quota_hour_seconds),
                (config.quota_per_day, config.quota_day_seconds),
            )
            if limit > 0
        ]
        if not windows:
            return None, {}
        now = time.time()
        usage = []
        for limit, period in windows:
            opened, used = state.quota.get(period, (now, 0))
            if now >= opened + period:
                opened, used = now, 0
            usage.append((limit, period, opened, used))
        spent = [(limit, opened + period) for limit, period, opened, used in usage if used >= limit]
        if spent:
            reset = max(closes for _, closes in spent)
            headers = {
                "Retry-After": str(max(1, math.ceil(reset - now))),
                "X-Ratelimit-Limit": str(min(limit for limit, _ in spent)),
                "X-Ratelimit-Remaining": "0",
                "X-Ratelimit-Reset": str(math.ceil(reset)),
            }
            state.totals["status_429"] += 1
            return _error(429, "Se excedió el límite de cuota de peticiones", headers=headers), headers
        for _, period, opened, used in usage:
            state.quota[period] = (opened, used + 1)
        limit, period, opened, used = min(usage, key=lambda u: u[0] - u[3])
        return None, {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(limit - used - 1),
            "X-Ratelimit-Reset": str(math.ceil(opened + period)),
        }

    def with_headers(response: Response, headers: dict[str, str]) -> Response:
        for name, value in headers.items():
            response.headers[name] = value
        return response

    # ---- IDP -------------------------------------------------------------------------------

    def issue(username: str, client_id: str) -> dict[str, Any]:
        config = state.config
        now = time.time()
        if len(state.tokens) > 1000:
            for key in [k for k, t in state.tokens.items() if t.expires_at < now]:
                del state.tokens[key]
        session = secrets.token_hex(8)
        access = _jwt("Bearer", username, client_id, now, config.access_token_seconds, session)
        refresh = _jwt("Refresh", username, client_id, now, config.refresh_token_seconds, session)
        state.tokens[access] = IssuedToken(username, "access", now + config.access_token_seconds)
        state.tokens[refresh] = IssuedToken(username, "refresh", now + config.refresh_token_seconds)
        return {
            "access_token": access,
            "expires_in": int(config.access_token_seconds),
            "refresh_expires_in": int(config.refresh_token_seconds),
            "refresh_token": refresh,
            "token_type": "bearer",
            "id_token": _jwt("ID", username, client_id, now, config.access_token_seconds, session),
            "not-before-policy": 0,
            "session_state": session,
        }

    async def token(request: Request) -> Response:
        down = outage()
        if down is not None:
            return down
        fault = await faults("idp")
        if isinstance(fault, Response):
            return fault
        config = state.config
        if request.path_params["realm"] not in config.realms:
            return JSONResponse({"error": "Realm does not exist"}, status_code=404)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        grant = form.get("grant_type")
        if form.get("client_id") not in config.client_ids:
            state.totals["login_failures"] += 1
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client credentials"},
                status_code=401,
            )
        if grant == "password":
            username, password = form.get("username", ""), form.get("password", "")
            expected = config.users.get(username)
            if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                state.totals["login_failures"] += 1
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid user credentials"},
                    status_code=401,
                )
            state.totals["logins"] += 1
            body = issue(username, form["client_id"])
        elif grant == "refresh_token":
            issued = state.tokens.get(form.get("refresh_token", ""))
            if issued is None or issued.kind != "refresh" or issued.expires_at <= time.time():
                state.totals["refresh_failures"] += 1
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid refresh token"}, status_code=400
                )
            state.totals["refreshes"] += 1
            body = issue(issued.username, form["client_id"])
        else:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"},
                status_code=400,
            )
        if fault == "malformed":
            return Response(json.dumps(body)[:40], media_type="application/json")
        return JSONResponse(body)

    def authenticate(request: Request) -> Response | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        issued = state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if state.config.refuse_tokens or issued is None or issued.kind != "access" or issued.expires_at <= time.time():
            state.totals["status_401"] += 1
            return _error(
                401,
                "Token de acceso inválido o expirado",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if issued.username in state.config.blocked_users:
            state.totals["status_403"] += 1
            return _error(403, "El acceso al API está bloqueado")
        return None

    async def gate(request: Request) -> tuple[Response | str | None, dict[str, str]]:
        """Outage, quota, faults and the bearer token, in the order a gateway would apply them."""
        down = outage()
        if down is not None:
            return down, {}
        refused, headers = quota()
        if refused is not None:
            return refused, headers
        fault = await faults("recepcion")
        if isinstance(fault, Response):
            return with_headers(fault, headers), headers
        denied = authenticate(request)
        if denied is not None:
            return with_headers(denied, headers), headers
        return fault, headers

    # ---- Recepción -------------------------------------------------------------------------

    async def post_recepcion(request: Request) -> Response:
        state.totals["posts"] += 1
        fault, headers = await gate(request)
        if isinstance(fault, Response):
            return fault
        response = receive_document(await request.body())
        if fault == "malformed" and response.status_code == 202:
            # The document was taken; only the answer is garbled, as by a misbehaving proxy.
            response = Response("<html><body>Bad Gateway", status_code=200, media_type="text/html")
        return with_headers(response, headers)

    def receive_document(raw: bytes) -> Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "El cuerpo de la petición no es un JSON válido", validation=True)
        if not isinstance(body, dict):
            return _error(400, "El cuerpo de la petición no es un JSON válido", validation=True)
        for name in ("clave", "fecha", "emisor", "comprobanteXml"):
            if not body.get(name):
                return _error(400, f"El campo {name} es requerido", validation=True)
        clave = body["clave"]
        problem = _clave_problem(clave, strict=state.config.strict_clave)
        if problem:
            return _error(400, f"La clave [{str(clave)[:60]}] no es válida: {problem}", validation=True)
        emisor = body["emisor"]
        if (
            not isinstance(emisor, dict)
            or not emisor.get("tipoIdentificacion")
            or not emisor.get("numeroIdentificacion")
        ):
            return _error(400, "El campo emisor requiere tipoIdentificacion y numeroIdentificacion", validation=True)
        callback = body.get("callbackUrl")
        valid_callback = isinstance(callback, str) and re.match(r"https?://[^/\s]+", callback)
        if callback is not None and not valid_callback:
            return _error(400, "El campo callbackUrl no es una URL válida", validation=True)
        try:
            xml = base64.b64decode(body["comprobanteXml"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return _error(400, "El campo comprobanteXml no está codificado en base64", validation=True)
        state.count(clave, "posts")
        if clave in state.documents:
            state.count(clave, "duplicates")
            state.totals["duplicates"] += 1
            return _error(400, f"El comprobante con la Clave [{clave}] ya fue recibido anteriormente.", validation=True)
        state.documents[clave] = _process(state.config, clave, body, xml)
        state.count(clave, "created")
        state.totals["created"] += 1
        return Response(status_code=202)

    async def get_recepcion(request: Request) -> Response:
        state.totals["gets"] += 1
        fault, headers = await gate(request)
        if isinstance(fault, Response):
            return fault
        key = request.path_params["clave"]
        document = state.documents.get(key)
        if document is None:
            state.totals["status_404"] += 1
            return with_headers(_error(404, f"No existe el recurso con Clave = [{key[:60]}]"), headers)
        state.count(key, "gets")
        body = _status_body(state.config, document)
        if fault == "malformed":
            return Response(json.dumps(body)[:25], status_code=200, media_type="application/json", headers=headers)
        return JSONResponse(body, headers=headers)

    # ---- Admin -----------------------------------------------------------------------------

    def apply(changes: dict[str, Any]) -> None:
        new = state.config.updated(changes)
        if new.seed != state.config.seed:
            state.rng = random.Random(new.seed)
        state.config = new

    def counters() -> dict[str, Any]:
        return {
            "totals": dict(state.totals),
            "claves": {clave: dict(c) for clave, c in state.per_clave.items()},
            "tokens": {
                name: state.totals[name] for name in ("logins", "refreshes", "login_failures", "refresh_failures")
            },
        }

    async def expire_tokens(request: Request) -> Response:
        """Invalidate issued access tokens (and refresh tokens with `{"refresh": true}`)."""
        body = json.loads(await request.body() or b"{}")
        kinds = {"access", "refresh"} if isinstance(body, dict) and body.get("refresh") else {"access"}
        gone = [key for key, issued in state.tokens.items() if issued.kind in kinds]
        for key in gone:
            del state.tokens[key]
        return JSONResponse({"expired": len(gone)})

    routes = [
        Route("/idp/auth/realms/{realm}/protocol/openid-connect/token", token, methods=["POST"]),
        *admin_routes(show=lambda: state.config.as_json(), apply=apply, reset=state.reset, counters=counters),
        Route("/_admin/expire-tokens", expire_tokens, methods=["POST"]),
    ]
    for base in ("/recepcion/v1", "/recepcion-sandbox/v1"):
        routes += [
            Route(f"{base}/recepcion", post_recepcion, methods=["POST"]),
            Route(f"{base}/recepcion/", post_recepcion, methods=["POST"]),
            Route(f"{base}/recepcion/{{clave}}", get_recepcion, methods=["GET"]),
        ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(kind: str, username: str, client_id: str, now: float, lifetime: float, session: str) -> str:
    """A JWT-shaped token (the simulator looks tokens up rather than verifying them)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "jti": secrets.token_hex(12),
        "exp": int(now + lifetime),
        "iat": int(now),
        "typ": kind,
        "azp": client_id,
        "session_state": session,
        "preferred_username": username,
    }
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def _clave_problem(clave: Any, *, strict: bool) -> str | None:
    """Nota 3 checks; the date, type and situación only in strict mode (the doc's own example fails them)."""
    if not isinstance(clave, str) or not re.fullmatch(r"506[0-9]{47}", clave):
        return "debe tener 50 dígitos y comenzar con 506"
    if not strict:
        return None
    try:
        date(2000 + int(clave[7:9]), int(clave[5:7]), int(clave[3:5]))
    except ValueError:
        return "la fecha (DDMMAA) no es válida"
    if not 1 <= int(clave[29:31]) <= 10:
        return "el tipo de documento no existe"
    if clave[41] not in "123":
        return "la situación del comprobante no existe"
    return None


def _local(node: etree._Element, *path: str) -> str | None:
    current: etree._Element | None = node
    for name in path:
        if current is None:
            return None
        current = next((c for c in current if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
    if current is None or current.text is None:
        return None
    return str(current.text).strip()


def _process(config: HaciendaSandboxConfig, clave: str, body: dict[str, Any], xml: bytes) -> Document:
    """Decide now what the processing will conclude; the GET reveals it after `processing_seconds`."""
    emisor = {k: str(v) for k, v in body["emisor"].items()}
    receptor = body.get("receptor") if isinstance(body.get("receptor"), dict) else None
    detail = ""
    root = None
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(xml, parser=parser)
    except etree.XMLSyntaxError:
        detail = "El documento XML no está bien formado."
    if root is not None:
        if _local(root, "Clave") != clave:
            detail = "La clave del comprobante no coincide con la clave enviada en la petición."
        elif _local(root, "NumeroConsecutivo") != clave[21:41]:
            detail = "El número consecutivo del comprobante no coincide con el de la clave."
        elif (_local(root, "Emisor", "Identificacion", "Numero") or "").zfill(12) != clave[9:21]:
            detail = "La identificación del emisor no coincide con la de la clave."
    share = int(hashlib.sha256(clave.encode()).hexdigest()[:8], 16) / 2**32
    if not detail and share < config.reject_share:
        detail = config.reject_message
    return Document(
        clave=clave,
        fecha=str(body["fecha"]),
        received_at=time.monotonic(),
        outcome="rechazado" if detail else "aceptado",
        detail=detail or "Este comprobante fue aceptado.",
        emisor=emisor,
        receptor={k: str(v) for k, v in receptor.items()} if receptor else None,
        nombre_emisor=(_local(root, "Emisor", "Nombre") if root is not None else None) or "Emisor",
        nombre_receptor=_local(root, "Receptor", "Nombre") if root is not None else None,
        total=(_local(root, "ResumenFactura", "TotalComprobante") if root is not None else None) or "0",
        tax=_local(root, "ResumenFactura", "TotalImpuesto") if root is not None else None,
        callback_url=str(body["callbackUrl"]) if body.get("callbackUrl") else None,
    )


def _status_body(config: HaciendaSandboxConfig, document: Document) -> dict[str, Any]:
    elapsed = time.monotonic() - document.received_at
    if elapsed >= config.processing_seconds:
        estado = document.outcome
    elif elapsed < config.processing_seconds / 2:
        estado = "recibido"
    else:
        estado = "procesando"
    camel = config.status_style == "camel"
    body: dict[str, Any] = {
        "clave": document.clave,
        "fecha": document.fecha,
        ("indEstado" if camel else "ind-estado"): estado.upper() if camel else estado,
    }
    if document.callback_url:
        body["callbackUrl"] = document.callback_url
    if estado in ("aceptado", "rechazado"):
        encoded = base64.b64encode(_mensaje(document)).decode("ascii")
        body["respuestaXml" if camel else "respuesta-xml"] = encoded
    return body


def _mensaje(document: Document) -> bytes:
    """A MensajeHacienda v4.4 with a placeholder signature (real ones are XAdES-XL)."""
    accepted = document.outcome == "aceptado"
    receptor = ""
    if document.receptor:
        receptor = (
            f"<NombreReceptor>{escape(document.nombre_receptor or 'Receptor')}</NombreReceptor>"
            f"<TipoIdentificacionReceptor>{escape(document.receptor.get('tipoIdentificacion', ''))}"
            "</TipoIdentificacionReceptor>"
            f"<NumeroCedulaReceptor>{escape(document.receptor.get('numeroIdentificacion', ''))}"
            "</NumeroCedulaReceptor>"
        )
    tax = f"<MontoTotalImpuesto>{escape(document.tax)}</MontoTotalImpuesto>" if document.tax else ""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<MensajeHacienda xmlns="{MENSAJE_NS}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        f"<Clave>{document.clave}</Clave>"
        f"<NombreEmisor>{escape(document.nombre_emisor)}</NombreEmisor>"
        f"<TipoIdentificacionEmisor>{escape(document.emisor.get('tipoIdentificacion', ''))}"
        "</TipoIdentificacionEmisor>"
        f"<NumeroCedulaEmisor>{escape(document.emisor.get('numeroIdentificacion', ''))}</NumeroCedulaEmisor>"
        f"{receptor}"
        f"<Mensaje>{1 if accepted else 3}</Mensaje>"
        f"<EstadoMensaje>{'Aceptado' if accepted else 'Rechazado'}</EstadoMensaje>"
        f"<DetalleMensaje>{escape(document.detail)}</DetalleMensaje>"
        f"{tax}<TotalFactura>{escape(document.total)}</TotalFactura>"
        '<ds:Signature Id="id-sandbox"><ds:SignatureValue>U0FORELPWA==</ds:SignatureValue></ds:Signature>'
        "</MensajeHacienda>"
    )
    return xml.encode("utf-8")
