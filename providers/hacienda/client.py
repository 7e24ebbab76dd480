"""Hacienda API de Recepción v1 client: POST /recepcion, then GET /recepcion/{clave} until final.

The clave is the idempotency key: resending a document Hacienda already has returns 400 "ya fue
recibido", which is adopted as an earlier acceptance, so any ambiguous failure (timeout, dropped
connection, garbled answer) can simply be retried. Hacienda keeps no download links: the result is
the MensajeHacienda in `respuesta-xml`, returned as the file "respuesta".
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from providers import answers
from providers.answers import MalformedAnswer
from providers.base import (
    AuthError,
    DocumentIds,
    DownloadResult,
    InvalidPayload,
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetrieveResult,
    SubmitResult,
    TransientError,
    VerifyResult,
    VerifyStatus,
    observed,
    verify_each,
)
from providers.hacienda.comprobante import Clave, child_text, parse_clave, parse_comprobante, parse_xml
from providers.hacienda.settings import HaciendaSettings
from providers.hacienda.token import TokenSource
from providers.http import api_client, shared_redis
from providers.ratelimit import RateLimiter, retry_after_seconds
from providers.tokens import Unauthorized

log = logging.getLogger(__name__)

T = TypeVar("T")

PENDING_STATES = {"recibido", "procesando"}
REJECTED_STATES = {"rechazado", "error"}
DUPLICATE_MARK = "ya fue recibido"
MAX_MESSAGE = 2000
MAX_RESPUESTA_BYTES = 5 * 1024 * 1024


class HaciendaClient:
    """The `Provider` for Costa Rica's Ministerio de Hacienda."""

    name = "hacienda"

    def __init__(self, settings: HaciendaSettings, *, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self._base = settings.api_url.rstrip("/") + "/recepcion"
        self._http = api_client(settings.connect_timeout, settings.read_timeout)
        self._redis = shared_redis(settings.redis_url)
        self._tokens = TokenSource(settings, self._http, self._redis)
        self.limiter = limiter or RateLimiter(
            f"hacienda:{settings.entity or 'default'}",
            settings.redis_url,
            settings.rate_per_hour,
            settings.rate_per_day,
            settings.rate_burst,
            key_prefix=settings.redis_prefix,
        )

    def __repr__(self) -> str:
        return f"HaciendaClient(api_url={self.settings.api_url!r}, entity={self.entity!r})"

    @property
    def entity(self) -> str:
        return self.settings.entity

    def validate(self, payload: bytes, internal_id: str) -> None:
        parse_comprobante(payload, max_bytes=self.settings.max_payload_bytes, entity=self.entity or None)

    def submit(self, payload: bytes, internal_id: str, *, attempt: int = 1) -> SubmitResult:
        document = parse_comprobante(payload, max_bytes=self.settings.max_payload_bytes, entity=self.entity or None)
        clave = document.clave.value
        body: dict[str, Any] = {
            "clave": clave,
            "fecha": document.fecha,
            "emisor": document.emisor.as_json(),
            "comprobanteXml": base64.b64encode(payload).decode("ascii"),
        }
        if document.receptor is not None:
            body["receptor"] = document.receptor.as_json()
        if self.settings.callback_url:
            body["callbackUrl"] = self.settings.callback_url

        def handle(response: httpx.Response) -> SubmitResult:
            status = response.status_code
            cause = _cause(response)
            if status in (201, 202):
                return SubmitResult(request_id=clave)
            if status == 400 and cause and DUPLICATE_MARK in cause.lower():
                log.info("hacienda: clave %s was already received; adopting it", clave)
                return SubmitResult(request_id=clave, adopted=True)
            if 400 <= status < 500:
                raise PermanentError(
                    f"hacienda refused the comprobante (HTTP {status})", code=str(status), description=cause
                )
            # Any other answer (200 with a body, a redirect) leaves us unsure whether the document
            # was received; a retry is safe because a second POST of the clave is adopted.
            raise TransientError(
                f"hacienda: unexpected answer to POST (HTTP {status})", code=str(status), description=cause
            )

        return self._exchange("submit", "POST", self._base, body, handle)

    batch_size = 50
    retrieve_in_verify = False
    polls_through_sweep = False

    def verify_many(self, request_ids: Sequence[str]) -> Mapping[str, VerifyResult | ProviderError]:
        """No batch endpoint: one call per id, over this client's kept-alive connections."""
        return verify_each(self, request_ids)

    def verify(self, request_id: str) -> VerifyResult:
        clave = self._clave(request_id)
        estado, respuesta, fecha = self._status("verify", clave)
        document = _document(clave, fecha)
        files = {"respuesta": respuesta} if respuesta is not None else {}
        if estado in PENDING_STATES:
            return VerifyResult(VerifyStatus.PENDING, files=files)
        if estado == "aceptado":
            return VerifyResult(VerifyStatus.ISSUED, document=document, files=files)
        code, message = _rejection(estado, respuesta)
        return VerifyResult(VerifyStatus.FAILED, document=document, error_code=code, error_message=message, files=files)

    def retrieve(self, request_id: str) -> RetrieveResult:
        clave = self._clave(request_id)
        estado, respuesta, fecha = self._status("retrieve", clave)
        if estado in PENDING_STATES:
            raise TransientError(f"hacienda: clave {clave.value} is still {estado}")
        if estado in REJECTED_STATES:
            code, message = _rejection(estado, respuesta)
            raise PermanentError(f"hacienda {estado} the comprobante", code=code, description=message)
        if respuesta is None:
            raise TransientError(f"hacienda: clave {clave.value} is aceptado but has no respuesta-xml yet")
        return RetrieveResult(
            links={}, expires_at=None, document=_document(clave, fecha), files={"respuesta": respuesta}
        )

    def download(self, url: str, dest: Path) -> DownloadResult:
        raise PermanentError("hacienda publishes no download links; the respuesta-xml comes with verify/retrieve")

    def close(self) -> None:
        self._http.close()
        self.limiter.close()
        if self._redis is not None:
            self._redis.close()

    def _clave(self, request_id: str) -> Clave:
        try:
            return parse_clave(request_id)
        except InvalidPayload as exc:
            raise PermanentError(f"hacienda: request id is not a clave: {exc.message}") from None

    def _status(self, operation: str, clave: Clave) -> tuple[str, bytes | None, str | None]:
        def handle(response: httpx.Response) -> tuple[str, bytes | None, str | None]:
            status = response.status_code
            cause = _cause(response)
            if status in (400, 404):
                # Seed 003: the clave is not on the platform; asking again always returns 404.
                raise PermanentError(
                    f"hacienda has no comprobante with clave {clave.value}; polling stops",
                    code=str(status),
                    description=cause,
                )
            if 400 <= status < 500:
                raise PermanentError(f"hacienda refused the query (HTTP {status})", code=str(status), description=cause)
            if status != 200:
                raise TransientError(
                    f"hacienda: unexpected answer to GET (HTTP {status})", code=str(status), description=cause
                )
            return _parse_status(response, clave)

        return self._exchange(operation, "GET", f"{self._base}/{clave.value}", None, handle)

    def _exchange(
        self,
        operation: str,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        handle: Callable[[httpx.Response], T],
    ) -> T:
        return self._tokens.authorized(operation, lambda token: self._send(operation, method, url, body, token, handle))

    def _send(
        self,
        operation: str,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        token: str,
        handle: Callable[[httpx.Response], T],
    ) -> T:
        self.limiter.acquire(self.settings.rate_wait)
        with observed("hacienda", operation):
            try:
                response = self._http.request(method, url, json=body, headers={"Authorization": f"bearer {token}"})
            except httpx.TimeoutException as exc:
                raise TransientError(f"hacienda: {method} timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"hacienda: {method} failed ({type(exc).__name__})") from exc
            status = response.status_code
            cause = _cause(response)
            if status == 401:
                raise Unauthorized("hacienda API refused the token (HTTP 401)", code="401", description=cause)
            if status == 403:
                raise AuthError(
                    "hacienda API access is blocked for these credentials (HTTP 403)",
                    code="403",
                    description=cause,
                )
            if status == 429:
                wait = retry_after_seconds(response.headers)
                self.limiter.pause(wait)
                raise RateLimitedError(
                    "hacienda quota exceeded (HTTP 429)", code="429", description=cause, retry_after=wait
                )
            if status == 499 or status >= 500:
                raise TransientError(f"hacienda: HTTP {status}", code=str(status), description=cause)
            return handle(response)


def _cause(response: httpx.Response) -> str | None:
    return answers.message(response.headers.get("x-error-cause"), MAX_MESSAGE)


def _parse_status(response: httpx.Response, clave: Clave) -> tuple[str, bytes | None, str | None]:
    """`ind-estado`, decoded `respuesta-xml` and `fecha`; both key styles of §7.2 are accepted.

    The answer must be about our clave: a `clave` field or a MensajeHacienda `Clave` naming another
    document is a `MalformedAnswer`, because archiving it would file another taxpayer's answer
    under this invoice. An accepted document's respuesta must be well-formed XML, since it is the
    file the archive keeps; a rejection's unreadable respuesta still fails the job, with its text.
    """
    try:
        body = response.json()
    except ValueError:
        raise TransientError("hacienda: status answer is not JSON", code="200") from None
    if not isinstance(body, dict):
        raise TransientError("hacienda: status answer is not a JSON object", code="200")
    estado = body.get("ind-estado", body.get("indEstado"))
    if not isinstance(estado, str) or not estado.strip():
        raise TransientError("hacienda: status answer has no ind-estado", code="200")
    echoed = body.get("clave")
    if echoed is not None and answers.digits(echoed, "hacienda clave", 50) != clave.value:
        raise MalformedAnswer("hacienda answered about another clave")
    estado = estado.strip().lower()
    if estado not in PENDING_STATES | REJECTED_STATES | {"aceptado"}:
        raise TransientError(f"hacienda: unknown ind-estado {estado[:40]!r}", code="200")
    encoded = body.get("respuesta-xml", body.get("respuestaXml"))
    respuesta = None
    if isinstance(encoded, str) and encoded.strip():
        if len(encoded) > MAX_RESPUESTA_BYTES * 4 // 3 + 4:
            raise MalformedAnswer(f"hacienda: respuesta-xml is larger than {MAX_RESPUESTA_BYTES} bytes")
        try:
            respuesta = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            raise TransientError("hacienda: respuesta-xml is not base64", code="200") from None
        _check_respuesta(respuesta, clave, estado)
    fecha = body.get("fecha")
    return estado, respuesta, fecha if isinstance(fecha, str) else None


def _check_respuesta(respuesta: bytes, clave: Clave, estado: str) -> None:
    try:
        root = parse_xml(respuesta, MAX_RESPUESTA_BYTES)
    except InvalidPayload as exc:
        if estado == "aceptado":
            raise MalformedAnswer(f"hacienda: respuesta-xml is not well-formed XML ({exc.message})") from None
        return
    named = child_text(root, "Clave")
    if named is not None and named != clave.value:
        raise MalformedAnswer("hacienda: respuesta-xml is about another clave")


def _rejection(estado: str, respuesta: bytes | None) -> tuple[str, str]:
    """The reason Hacienda gives in MensajeHacienda/DetalleMensaje, with Mensaje (3 = rechazado) as code."""
    if respuesta is None:
        return estado, f"Hacienda: {estado} sin respuesta-xml"
    try:
        root = parse_xml(respuesta, MAX_RESPUESTA_BYTES)
    except InvalidPayload as exc:
        return estado, f"Hacienda: {estado}; respuesta-xml ilegible ({exc.message})"
    detail = child_text(root, "DetalleMensaje") or child_text(root, "EstadoMensaje")
    code = answers.message(child_text(root, "Mensaje"), 64) or estado
    return code, answers.message(detail, MAX_MESSAGE) or f"Hacienda: {estado}"


def _document(clave: Clave, fecha: str | None) -> DocumentIds:
    """The ids come from our own clave, checked as 50 digits; a `fecha` without an offset is dropped,
    because an instant of unknown zone cannot be stored as one."""
    enrolled_at = None
    if fecha and len(fecha) <= 40:
        try:
            enrolled_at = datetime.fromisoformat(fecha)
        except ValueError:
            enrolled_at = None
        if enrolled_at is not None and enrolled_at.tzinfo is None:
            enrolled_at = None
    return DocumentIds(
        guid=answers.digits(clave.value, "hacienda clave", 50),
        year=clave.issued_on.year,
        batch=f"{clave.branch}-{clave.terminal}",
        serial=answers.digits(clave.consecutivo, "hacienda consecutivo", 20),
        enrolled_at=enrolled_at,
    )


def from_env() -> HaciendaClient:
    return HaciendaClient(HaciendaSettings.from_env())
