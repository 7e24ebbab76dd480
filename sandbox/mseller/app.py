"""The simulator: authentication, send, single and batch status, the plan, fault knobs, admin.

Shapes follow `providers/mseller-dgii.md` (MSeller's docs and the real answers quoted there).
Where MSeller documents nothing, the simulator invents, and says so in a comment marked
INVENTED: the error codes `DUPLICATE_ENCF`, `RATE_LIMIT_EXCEEDED`, `TOO_MANY_REQUESTS`,
`ECF_NOT_FOUND`, `INVALID_JSON`, `BATCH_TOO_LARGE`, the 201 of a send, the conditional
observation and the `Error` reply text. All handlers are coroutines on one event loop, so the
state needs no locks: nothing awaits between reading and updating it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.admin import admin_routes
from sandbox.faults import DroppedConnection, injected_fault
from sandbox.mseller.config import ENVIRONMENTS, MSellerSandboxConfig

_SIGNING_KEY = secrets.token_bytes(32)
DGII_TZ = timezone(timedelta(hours=-4))
ENCF = re.compile(r"[E-OQ-Z][0-9]{2}[0-9]{10}")
MAX_BATCH = 100
DOC_TYPES = {
    "31": "Factura de Crédito Fiscal Electrónico",
    "32": "Factura de Consumo Electrónico",
    "33": "Nota de Débito Electrónica",
    "34": "Nota de Crédito Electrónica",
    "41": "Compras Electrónico",
    "43": "Gastos Menores Electrónico",
    "44": "Regímenes Especiales Electrónico",
    "45": "Gubernamental Electrónico",
    "46": "Comprobante de Exportaciones Electrónico",
    "47": "Comprobante para Pagos al Exterior Electrónico",
}
# A real DGII rejection message, quoted in the provider notes (e-NCF E310000510916).
REJECTION = {"valor": "El campo MontoGravadoTotal del área Totales de la sección Encabezado", "codigo": 1920}
# INVENTED: the notes quote no conditional acceptance; this observation and its code are ours.
OBSERVATION = {"valor": "Simulador: aceptado con observaciones de prueba (texto inventado)", "codigo": 9004}
# INVENTED: MSeller's `Error` status is internal to MSeller; this reply text is ours.
ERROR_REPLY = {"trackId": None, "error": "Simulador: error al enviar a la DGII (texto inventado)", "mensaje": None}


@dataclass
class IssuedToken:
    email: str
    kind: str  # "id" or "access": only the idToken opens business calls
    expires_at: float


@dataclass
class Document:
    encf: str
    rnc: str
    buyer_rnc: str | None
    total: str
    doc_type: str
    issued_on: str
    received_at: float
    created_ms: int
    outcome: str
    internal_track_id: str
    dgii_track_id: str
    security_code: str
    signed_date: str
    qr_url: str
    environment: str


@dataclass
class SandboxState:
    config: MSellerSandboxConfig
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    documents: dict[tuple[str, str], Document] = field(default_factory=dict)  # (environment, e-NCF)
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # api key -> (tokens, at)
    usage: dict[str, tuple[str, int]] = field(default_factory=dict)  # api key -> (month, used)
    totals: Counter[str] = field(default_factory=Counter)
    per_encf: dict[str, Counter[str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        self.tokens.clear()
        self.documents.clear()
        self.buckets.clear()
        self.usage.clear()
        self.totals.clear()
        self.per_encf.clear()
        self.rng = random.Random(self.config.seed)

    def count(self, encf: str, name: str) -> None:
        self.per_encf.setdefault(encf, Counter())[name] += 1


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    body = {"message": message}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=status)


def create_app(config: MSellerSandboxConfig | None = None) -> Starlette:
    """The MSeller simulator as an ASGI app, meant to be mounted under `/mseller`."""
    state = SandboxState(config or MSellerSandboxConfig.from_env())
    state.reset()

    # ---- faults, authentication and the plan ---------------------------------------------

    def outage() -> Response | None:
        """The whole platform down: nothing is authenticated, counted or processed."""
        if not state.config.outage:
            return None
        state.totals["fault_outage"] += 1
        return _error(503, "Service Unavailable")

    async def faults(target: str) -> Response | str | None:
        """An injected failure, "lost"/"malformed" for an answer spoilt after the work, or None."""
        config = state.config
        spoilt = (("lost", config.lost_answer_share), ("malformed", config.malformed_share))
        return await injected_fault(
            config,
            state.rng,
            state.totals,
            target,
            lambda status: _error(status, "Internal server error (simulated)"),
            spoilt,
        )

    def authenticate(request: Request, environment: str) -> tuple[Response | None, str]:
        """Bearer idToken (401), API key of this environment (403), certificate (412)."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        issued = state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if state.config.refuse_tokens or issued is None or issued.kind != "id" or issued.expires_at <= time.time():
            state.totals["status_401"] += 1
            return _error(401, "Unauthorized", "UNAUTHORIZED"), ""
        key = request.headers.get("x-api-key", "")
        if state.config.api_keys.get(key) != environment:
            state.totals["status_403"] += 1
            return _error(403, "Forbidden: invalid API key"), ""
        if issued.email in state.config.uncertified_users:
            state.totals["status_412"] += 1
            return _error(
                412, "No hay un certificado de firma configurado para esta cuenta", "CERTIFICATE_NOT_CONFIGURED"
            ), ""
        return None, key

    def spend(key: str) -> Response | None:
        """The plan: a token bucket of one second's requests, then the month's count (UTC)."""
        config = state.config
        now = time.monotonic()
        rate = config.requests_per_second
        if rate > 0:
            tokens, at = state.buckets.get(key, (float(rate), now))
            tokens = min(float(rate), tokens + (now - at) * rate)
            if tokens < 1:
                state.buckets[key] = (tokens, now)
                state.totals["status_429_throttled"] += 1
                # INVENTED: MSeller documents no per-second answer; this is an API gateway's throttle.
                return JSONResponse(
                    {"message": "Too Many Requests", "code": "TOO_MANY_REQUESTS"},
                    status_code=429,
                    headers={"Retry-After": "1"},
                )
            state.buckets[key] = (tokens - 1, now)
        month = datetime.now(UTC).strftime("%Y-%m")
        used_month, used = state.usage.get(key, (month, 0))
        if used_month != month:
            used = 0
        limit = config.requests_per_month
        if limit > 0 and used >= limit:
            state.totals["status_429_monthly"] += 1
            # INVENTED code (the notes' recommendation); the body of MSeller's 429 is undocumented.
            return _error(429, "Límite de solicitudes del plan excedido", "RATE_LIMIT_EXCEEDED")
        state.usage[key] = (month, used + 1)
        state.totals["counted"] += 1
        return None

    async def gate(request: Request) -> tuple[Response | str | None, str]:
        """Faults, credentials and the plan, in the order a gateway applies them."""
        environment = request.path_params["entorno"]
        if environment not in ENVIRONMENTS:
            return _error(404, "Not Found"), ""
        down = outage()
        if down is not None:
            return down, environment
        denied, _ = authenticate(request, environment)
        if denied is not None:
            return denied, environment
        refused = spend(request.headers.get("x-api-key", ""))
        if refused is not None:
            return refused, environment
        fault = await faults("api")
        return fault, environment

    # ---- authentication --------------------------------------------------------------------

    def jwt(kind: str, email: str, now: float) -> str:
        lifetime = state.config.token_seconds
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "sandbox"}).encode())
        claims = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, email)),
            "email": email,
            "token_use": kind,
            "jti": secrets.token_hex(12),
            "iat": int(now),
            "exp": int(now + lifetime),
        }
        payload = _b64url(json.dumps(claims).encode())
        signature = _b64url(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    async def login(request: Request) -> Response:
        if request.path_params["entorno"] not in ENVIRONMENTS:
            return _error(404, "Not Found")
        fault = outage() or await faults("auth")
        if isinstance(fault, Response):
            return fault
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "El cuerpo de la petición no es un JSON válido", "INVALID_JSON")  # INVENTED code
        email = body.get("email") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        expected = state.config.users.get(email) if isinstance(email, str) else None
        if (
            not isinstance(email, str)
            or not isinstance(password, str)
            or expected is None
            or not hmac.compare_digest(expected.encode(), password.encode())
        ):
            state.totals["login_failures"] += 1
            return _error(401, "Credenciales inválidas", "UNAUTHORIZED")
        now = time.time()
        if len(state.tokens) > 1000:
            for key in [k for k, t in state.tokens.items() if t.expires_at < now]:
                del state.tokens[key]
        id_token, access_token = jwt("id", email, now), jwt("access", email, now)
        state.tokens[id_token] = IssuedToken(email, "id", now + state.config.token_seconds)
        state.tokens[access_token] = IssuedToken(email, "access", now + state.config.token_seconds)
        state.totals["logins"] += 1
        answer = {"accessToken": access_token, "idToken": id_token, "refreshToken": secrets.token_urlsafe(48)}
        if fault == "malformed":
            return Response(json.dumps(answer)[:30], media_type="application/json")
        return JSONResponse(answer)

    # ---- send ------------------------------------------------------------------------------

    async def send(request: Request) -> Response:
        state.totals["sends"] += 1
        fault, environment = await gate(request)
        if isinstance(fault, Response):
            return fault
        response = receive(environment, await request.body(), request.query_params.get("validate") == "true")
        if fault == "lost" and response.status_code < 300:
            return DroppedConnection()
        if fault == "malformed" and response.status_code < 300:
            return Response("<html><body>502 Bad Gateway", status_code=200, media_type="text/html")
        return response

    def receive(environment: str, raw: bytes, validate_only: bool) -> Response:
        try:
            body = json.loads(raw)
        except ValueError:
            # INVENTED code: the notes say only that a 400 carries {"message", "code"}.
            return _error(400, "El cuerpo de la petición no es un JSON válido", "INVALID_JSON")
        problems = _problems(body)
        if not problems and _outcome(state.config, body["ECF"]["Encabezado"]["IdDoc"]["eNCF"]) == "invalid":
            # A scripted refusal with the real code of MSeller's validation and a field it checks.
            problems = [("MontoGravadoTotal", "El campo MontoGravadoTotal del área Totales de la sección Encabezado")]
        if problems:
            state.totals["invalid"] += 1
            return JSONResponse(
                {
                    "message": "El e-CF no es válido",
                    "code": "ECF_VALIDATION_FAILED",
                    "requestId": str(uuid.uuid4()),
                    "details": {
                        "validationErrors": [
                            {"code": "invalid_field", "field": name, "details": text, "name": "EcfValidationError"}
                            for name, text in problems
                        ]
                    },
                },
                status_code=400,
            )
        if validate_only:
            return JSONResponse({"valid": True, "message": "El e-CF es válido"})
        ecf = body["ECF"]
        encf = ecf["Encabezado"]["IdDoc"]["eNCF"]
        state.count(encf, "posts")
        if (environment, encf) in state.documents:
            state.count(encf, "duplicates")
            state.totals["duplicates"] += 1
            # INVENTED: MSeller does not document a second send of an e-NCF.
            return _error(400, f"El e-NCF {encf} ya fue enviado", "DUPLICATE_ENCF")
        document = _document(state.config, environment, ecf)
        state.documents[(environment, encf)] = document
        state.count(encf, "created")
        state.totals["created"] += 1
        answer = {
            "rnc": document.rnc,
            "ecf": encf,
            "internalTrackId": document.internal_track_id,
            "securityCode": document.security_code,
            "qr_url": document.qr_url,
            "signedDate": document.signed_date,
        }
        # INVENTED: the HTTP code of a successful send is undocumented; 201 for a created resource.
        return JSONResponse(answer, status_code=201)

    # ---- status ----------------------------------------------------------------------------

    async def status_single(request: Request) -> Response:
        state.totals["status_single"] += 1
        fault, environment = await gate(request)
        if isinstance(fault, Response):
            return fault
        encf = request.query_params.get("ecf", "")
        document = state.documents.get((environment, encf))
        if document is None:
            # INVENTED: MSeller documents no answer for an unknown e-NCF on the single query.
            return _error(404, f"No se encontró el e-NCF {encf[:20]}", "ECF_NOT_FOUND")
        state.count(encf, "queries")
        body = _record(state.config, document)
        if fault == "lost":
            return DroppedConnection()
        if fault == "malformed":
            return Response(json.dumps(body)[:25], media_type="application/json")
        return JSONResponse(body)

    async def status_batch(request: Request) -> Response:
        state.totals["status_batch"] += 1
        fault, environment = await gate(request)
        if isinstance(fault, Response):
            return fault
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "El cuerpo de la petición no es un JSON válido", "INVALID_JSON")  # INVENTED code
        ecfs = body.get("ecfs") if isinstance(body, dict) else None
        if not isinstance(ecfs, list) or not ecfs or not all(isinstance(e, str) for e in ecfs):
            return _error(400, "ecfs debe ser una lista de e-NCF", "INVALID_REQUEST")  # INVENTED code
        if len(ecfs) > MAX_BATCH:
            return _error(400, f"Máximo {MAX_BATCH} e-NCF por consulta", "BATCH_TOO_LARGE")  # INVENTED code
        state.totals["batch_ecfs"] += len(ecfs)
        results = []
        for encf in ecfs:
            document = state.documents.get((environment, encf))
            if document is None:
                results.append({"ecf": encf, "status": "No encontrado", "found": False})
                continue
            state.count(encf, "queries")
            record = _record(state.config, document)
            data = {
                "buyerRnc": document.buyer_rnc,
                "createdAt": record["createdAt"],
                "dgiiResponse": record["dgiiResponse"],
                "documentType": record["documentType"],
                "fileName": record["fileName"],
                "internalTrackId": document.internal_track_id,
                "invoiceTotal": document.total,
                "ncf": encf,
                "qr_url": document.qr_url,
                "secretId": hashlib.sha256(document.internal_track_id.encode()).hexdigest()[:24],
                "securityCode": document.security_code,
                "signedXml": record["signedXml"],
                "status": record["status"],
                "updateAt": record["updateAt"],
                "customerId": document.rnc,
            }
            if document.doc_type == "32":
                data["summarySignedXml"] = record["signedXml"].replace(".xml", "_RFCE.xml")
            results.append({"ecf": encf, "status": record["status"], "found": True, "data": data})
        answer = {"total": len(results), "results": results}
        if fault == "lost":
            return DroppedConnection()
        if fault == "malformed":
            return Response(json.dumps(answer)[:25], media_type="application/json")
        return JSONResponse(answer)

    # ---- admin -----------------------------------------------------------------------------

    def apply(changes: dict[str, Any]) -> None:
        new = state.config.updated(changes)
        if new.seed != state.config.seed:
            state.rng = random.Random(new.seed)
        state.config = new

    def counters() -> dict[str, Any]:
        return {
            "totals": dict(state.totals),
            "ecfs": {encf: dict(c) for encf, c in state.per_encf.items()},
            "usage": {
                hashlib.sha256(key.encode()).hexdigest()[:8]: {"month": month, "requests": used}
                for key, (month, used) in state.usage.items()
            },
        }

    async def expire_tokens(request: Request) -> Response:
        gone = list(state.tokens)
        state.tokens.clear()
        return JSONResponse({"expired": len(gone)})

    routes = [
        *admin_routes(show=lambda: state.config.as_json(), apply=apply, reset=state.reset, counters=counters),
        Route("/_admin/expire-tokens", expire_tokens, methods=["POST"]),
        Route("/{entorno}/customer/authentication", login, methods=["POST"]),
        Route("/{entorno}/documentos-ecf", send, methods=["POST"]),
        Route("/{entorno}/documentos-ecf", status_single, methods=["GET"]),
        Route("/{entorno}/documentos-ecf/status/batch", status_batch, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _problems(body: Any) -> list[tuple[str, str]]:
    """What MSeller's own validation would refuse outright: the shape, the e-NCF, the issuer RNC."""
    if not isinstance(body, dict) or not isinstance(body.get("ECF"), dict):
        return [("ECF", "El documento debe tener la raíz ECF")]
    encabezado = body["ECF"].get("Encabezado")
    if not isinstance(encabezado, dict):
        return [("Encabezado", "La sección Encabezado es requerida")]
    problems = []
    id_doc: dict[str, Any] = encabezado["IdDoc"] if isinstance(encabezado.get("IdDoc"), dict) else {}
    emisor: dict[str, Any] = encabezado["Emisor"] if isinstance(encabezado.get("Emisor"), dict) else {}
    encf = id_doc.get("eNCF")
    if not isinstance(encf, str) or not ENCF.fullmatch(encf) or encf[1:3] not in DOC_TYPES:
        problems.append(("eNCF", "El e-NCF debe tener 13 caracteres: serie, tipo y secuencia"))
    rnc = emisor.get("RNCEmisor")
    if not isinstance(rnc, str) or not re.fullmatch(r"[0-9]{9}|[0-9]{11}", rnc):
        problems.append(("RNCEmisor", "El RNC del emisor no es válido"))
    if not isinstance(encabezado.get("Totales"), dict):
        problems.append(("Totales", "La sección Totales es requerida"))
    return problems


def _outcome(config: MSellerSandboxConfig, encf: str) -> str:
    """Scripted per e-NCF, else drawn from the shares by a hash of the e-NCF (the same every run)."""
    if encf in config.outcomes:
        return config.outcomes[encf]
    share = int(hashlib.sha256(encf.encode()).hexdigest()[:8], 16) / 2**32
    for outcome, limit in (
        ("conditional", config.conditional_share),
        ("rejected", config.rejected_share),
        ("error", config.failed_share),
    ):
        if share < limit:
            return outcome
        share -= limit
    return "accepted"


def _document(config: MSellerSandboxConfig, environment: str, ecf: dict[str, Any]) -> Document:
    encabezado = ecf["Encabezado"]
    encf = encabezado["IdDoc"]["eNCF"]
    rnc = encabezado["Emisor"]["RNCEmisor"]
    comprador = encabezado.get("Comprador")
    buyer: dict[str, Any] = comprador if isinstance(comprador, dict) else {}
    buyer_rnc = buyer.get("RNCComprador") if isinstance(buyer.get("RNCComprador"), str) else None
    total = str(encabezado["Totales"].get("MontoTotal", "0"))
    issued_on = str(encabezado["Emisor"].get("FechaEmision", ""))
    now = datetime.now(DGII_TZ)
    signed = now.strftime("%d-%m-%Y %H:%M:%S")
    code = _b64url(secrets.token_bytes(6))[:6]
    query = (
        f"rncemisor={rnc}&RncComprador={buyer_rnc or ''}&encf={encf}&FechaEmision={issued_on}"
        f"&montototal={total}&FechaFirma={quote(signed)}&codigoseguridad={code}"
    )
    return Document(
        encf=encf,
        rnc=rnc,
        buyer_rnc=buyer_rnc,
        total=total,
        doc_type=encf[1:3],
        issued_on=issued_on,
        received_at=time.monotonic(),
        created_ms=int(time.time() * 1000),
        outcome=_outcome(config, encf),
        internal_track_id=str(uuid.uuid4()),
        dgii_track_id=str(uuid.uuid4()),
        security_code=code,
        signed_date=signed,
        qr_url=f"https://ecf.dgii.gov.do/{environment.lower()}/consultatimbre?{query}",
        environment=environment,
    )


def _record(config: MSellerSandboxConfig, document: Document) -> dict[str, Any]:
    """The single query's body for `document` at this moment of its processing."""
    elapsed = time.monotonic() - document.received_at
    period = config.processing_seconds
    final = elapsed >= period
    replies: list[dict[str, Any]] = []
    if final and document.outcome == "error":
        status = "Error"
        replies.append(ERROR_REPLY)
    elif final:
        status, reply = _final_reply(document)
        replies += [{"trackId": document.dgii_track_id, "error": None, "mensaje": None}, reply]
    elif elapsed < period / 3:
        status = "En Cola"
    elif elapsed < 2 * period / 3:
        status = "Enviado a la DGII"
        replies.append({"trackId": document.dgii_track_id, "error": None, "mensaje": None})
    else:
        status = "En Proceso"
        replies.append({"trackId": document.dgii_track_id, "error": None, "mensaje": None})
    updated_ms = document.created_ms + int(min(elapsed, period) * 1000)
    name = f"{document.rnc}{document.encf}.xml"
    return {
        "fileName": name,
        "updateAt": updated_ms,
        "documentType": DOC_TYPES.get(document.doc_type, "e-CF"),
        "status": status,
        "dgiiResponse": [json.dumps(reply, ensure_ascii=False, separators=(",", ":")) for reply in replies],
        "createdAt": document.created_ms,
        "securityCode": document.security_code,
        "signedXml": f"{document.rnc}/documents/{document.environment}/{name}",
        "ncf": document.encf,
        "internalTrackId": document.internal_track_id,
        "customerReceived": "0",
        "qr_url": document.qr_url,
        "customerId": document.rnc,
    }


def _final_reply(document: Document) -> tuple[str, dict[str, Any]]:
    received = datetime.fromtimestamp(document.created_ms / 1000, DGII_TZ)
    stamp = f"{received.month}/{received.day}/{received.year} {received.strftime('%I:%M:%S %p').lstrip('0')}"
    base = {
        "trackId": document.dgii_track_id,
        "rnc": document.rnc,
        "encf": document.encf,
        "secuenciaUtilizada": True,
        "fechaRecepcion": stamp,
    }
    if document.outcome == "rejected":
        return "Rechazado", {**base, "codigo": "2", "estado": "Rechazado", "mensajes": [REJECTION]}
    if document.outcome == "conditional":
        return "Aceptado Condicional", {
            **base,
            "codigo": "4",
            "estado": "Aceptado Condicional",
            "mensajes": [OBSERVATION],
        }
    if document.doc_type == "32":
        # A consumer invoice's summary (RFCE): numeric codigo and no mensajes, as in the real reply.
        return "Aceptado", {**base, "codigo": 1, "estado": "Aceptado", "mensajes": None}
    return "Aceptado", {**base, "codigo": "1", "estado": "Aceptado", "mensajes": [{"valor": "", "codigo": 0}]}
