"""The Descarga Masiva parameters MYSuite takes and the answers it gives, as pure functions.

Parameters follow MYSuite's knowledge base: Data1 is the base64 of a `<Dictionary>` of `<Entry k
v/>` pairs (`Params` for REGISTRAR_SOLICITUD_DM_SAT, `Pars` for OBTENER_LISTA_SOLICITUDES_DM_SAT).

MYSuite publishes neither the answers of the four transactions nor the parameters of
OBTENER_SOLICITUD_DM_SAT and OBTENER_LINK_ARCHIVO_DM_SAT. Everything below that is marked
ASSUMED is modelled on SAT's own messages (the attribute names `IdSolicitud`, `CodEstatus`,
`EstadoSolicitud`, `CodigoEstadoSolicitud`, `NumeroCFDIs`, `Mensaje`, `IdsPaquetes`) wrapped the way
MYSuite wraps its other answers (base64 in ResponseData1), and is what the sandbox serves; it is
read leniently (attributes or child elements, any letter case) so that the real shapes, once
known, need the fewest changes:

- REGISTRAR: ResponseData1 = base64 XML, one `<Solicitud>` per request it tried to register, with
  MYSuite's id (`Id`), SAT's `IdSolicitud`, `Servicio`, `TipoSolicitud`, `TipoTaxID`, `FechaInicial`,
  `FechaFinal`, `CodEstatus`, `Mensaje`. ASSUMED.
- OBTENER_SOLICITUD: Data1 = MYSuite's request id (ASSUMED); ResponseData1 = base64 XML of one
  `<Solicitud>` with `EstadoSolicitud`, `CodigoEstadoSolicitud`, `NumeroCFDIs` and one `<Paquete Id>`
  per package. ASSUMED.
- OBTENER_LINK_ARCHIVO: Data1 = request id, Data2 = package id (ASSUMED); ResponseData1 = base64 of
  the URL, as ASYNC_RETRIEVE_DOCUMENT does.
- OBTENER_LISTA: ResponseData1 = base64 JSON `{Page, PageSize, TotalRows, TotalPages, Rows: [...]}`
  with the same fields as `<Solicitud>`. ASSUMED.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from providers.base import PermanentError, ProviderError, TransientError
from providers.mysuite.descarga.records import MEXICO_CITY
from providers.mysuite.descarga.rules import Period
from providers.mysuite.parsing import decode_base64_text, parse_document
from providers.xml import clip

MAX_PACKAGES = 10_000


class SatState(enum.IntEnum):
    """`EstadoSolicitud`."""

    ACCEPTED = 1
    IN_PROGRESS = 2
    FINISHED = 3
    ERROR = 4
    REJECTED = 5
    EXPIRED = 6


class SatCode(enum.IntEnum):
    """`CodEstatus` / `CodigoEstadoSolicitud` values SAT documents for v1.5.

    5000 and 5002-5005 are in the provider notes; 5001, 5006-5008 and 5011 come from SAT's v1.5
    documents as public clients quote them (5008 is the code of "Maximo de descargas permitidas").
    """

    OK = 5000
    UNAUTHORIZED_THIRD_PARTY = 5001
    LIFETIME_EXHAUSTED = 5002
    TOO_MANY = 5003
    NO_DATA = 5004
    DUPLICATE = 5005
    INTERNAL_ERROR = 5006
    NO_SUCH_PACKAGE = 5007
    MAX_DOWNLOADS = 5008
    DAILY_FOLIO_LIMIT = 5011


MAX_DOWNLOADS_TEXT = "maximo de descargas permitidas"


class DescargaOutcome(enum.StrEnum):
    """What a request's state means for the worker (the three layers read in order)."""

    PENDING = "pending"
    READY = "ready"
    EMPTY = "empty"
    TOO_MANY = "too_many"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


# -- errors ------------------------------------------------------------------------------------


class PeriodExhausted(PermanentError):
    """5002: SAT has already taken this period twice; registering it again can never succeed."""


class TooManyResults(PermanentError):
    """5003: the period holds more than 200,000 CFDI (1,000,000 metadata); split it and register the halves."""

    def __init__(self, message: str, *, period: Period | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.period = period


class DuplicateActive(TransientError):
    """5005 without the existing request's id: an identical request is active; wait for it to end."""


class SatRejected(PermanentError):
    """SAT refused the request (301 XML mal formado, 305 certificado inválido, 5001, …)."""


class MaxDownloadsReached(PermanentError):
    """SAT will not hand this package out again ("Maximo de descargas permitidas", 5008)."""


# -- parameters --------------------------------------------------------------------------------


def dictionary(name: str, entries: Sequence[tuple[str, str]]) -> str:
    """Base64 of MYSuite's `<Dictionary name=…><Entry k=… v=…/></Dictionary>` (a NamedStringDictionary)."""
    body = "".join(f"<Entry k={quoteattr(key)} v={quoteattr(value)}/>" for key, value in entries)
    document = f'<?xml version="1.0" encoding="utf-8"?><Dictionary name={quoteattr(name)}>{body}</Dictionary>'
    return base64.b64encode(document.encode("utf-8")).decode("ascii")


def list_filters(filters: Sequence[tuple[str, str, str, str]]) -> str:
    """Base64 of `<Filters><Filter Name Oper Value1 Value2/></Filters>` for OBTENER_LISTA's `Filters`."""
    body = "".join(
        f"<Filter Name={quoteattr(name)} Oper={quoteattr(oper)} Value1={quoteattr(one)} Value2={quoteattr(two)}/>"
        for name, oper, one, two in filters
    )
    return base64.b64encode(f"<Filters>{body}</Filters>".encode()).decode("ascii")


# -- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """One request REGISTRAR tried to register, with its own result.

    `error` is None when the request is registered (`code` 5000) or adopted (5005 with the id of
    the active identical request, `adopted`); otherwise it is the typed refusal, a value rather
    than an exception because the other requests of the same call may well have been registered.
    """

    request_id: str | None
    sat_request_id: str | None
    service: str | None
    kind: str | None
    role: str | None
    period: Period | None
    code: str | None
    message: str | None
    adopted: bool = False
    error: ProviderError | None = None


@dataclass(frozen=True)
class RequestStatus:
    """One registered request as OBTENER_SOLICITUD (or a row of OBTENER_LISTA) describes it."""

    request_id: str
    sat_request_id: str | None
    sat_state: SatState
    status_code: int | None
    request_code: int | None
    cfdi_count: int
    package_ids: tuple[str, ...]
    message: str | None
    service: str | None = None
    kind: str | None = None
    role: str | None = None
    period: Period | None = None
    registered_at: datetime | None = None

    @property
    def outcome(self) -> DescargaOutcome:
        """CodEstatus said the call worked (checked when parsing); then the request code, then the state."""
        if self.request_code is not None and self.request_code != SatCode.OK:
            if self.request_code == SatCode.NO_DATA:
                return DescargaOutcome.EMPTY
            if self.request_code == SatCode.TOO_MANY:
                return DescargaOutcome.TOO_MANY
            if self.sat_state in (SatState.ACCEPTED, SatState.IN_PROGRESS, SatState.REJECTED):
                return DescargaOutcome.REJECTED
        if self.sat_state in (SatState.ACCEPTED, SatState.IN_PROGRESS):
            return DescargaOutcome.PENDING
        if self.sat_state is SatState.FINISHED:
            return DescargaOutcome.READY if self.package_ids else DescargaOutcome.EMPTY
        if self.sat_state is SatState.REJECTED:
            return DescargaOutcome.REJECTED
        if self.sat_state is SatState.EXPIRED:
            return DescargaOutcome.EXPIRED
        return DescargaOutcome.FAILED


@dataclass(frozen=True)
class RequestPage:
    page: int
    page_size: int
    total_rows: int
    total_pages: int
    rows: tuple[RequestStatus, ...]


def _values(element: Any) -> dict[str, str]:
    """Attributes and leaf children of an element, keys lower-cased, values trimmed."""
    found: dict[str, str] = {}
    for key, value in element.attrib.items():
        if value.strip():
            found[_local(key).lower()] = value.strip()
    for child in element:
        if isinstance(child.tag, str) and len(child) == 0 and child.text and child.text.strip():
            found.setdefault(_local(child.tag).lower(), child.text.strip())
    return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(value: str | None) -> int | None:
    if value is None or not re.fullmatch(r"[+-]?\d{1,9}", value.strip()):
        return None
    return int(value)


def _period(values: Mapping[str, str]) -> Period | None:
    start, end = _time(values.get("fechainicial")), _time(values.get("fechafinal"))
    if start is None or end is None:
        return None
    return Period(start, end)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        return None
    return parsed.replace(tzinfo=MEXICO_CITY) if parsed.tzinfo is None else parsed


def _id(value: str | None) -> str | None:
    if value is None or not re.fullmatch(r"[A-Za-z0-9{}_\-]{1,100}", value):
        return None
    return value


def _decode_xml(encoded: str | None, what: str) -> Any:
    if encoded is None:
        raise TransientError(f"MYSuite {what} answer carries no ResponseData1")
    return parse_document(decode_base64_text(encoded, "ResponseData1"), what)


def registration_error(code: int | None, message: str | None, period: Period | None) -> ProviderError | None:
    """The typed refusal of a REGISTRAR record, or None for an accepted one (5000, or 5005 with an id)."""
    text = clip(message)
    shown = None if code is None else str(code)
    if code == SatCode.OK:
        return None
    if code == SatCode.LIFETIME_EXHAUSTED:
        return PeriodExhausted("SAT has taken this period twice already (5002)", code=shown, description=text)
    if code == SatCode.TOO_MANY:
        return TooManyResults(
            "the period holds more documents than one SAT request may (5003)", period=period, code=shown
        )
    if code == SatCode.DUPLICATE:
        return DuplicateActive("an identical SAT request is active (5005)", code=shown, description=text)
    if code == 404 or code == SatCode.INTERNAL_ERROR:
        return TransientError("SAT could not register the request now", code=shown, description=text)
    return SatRejected("SAT refused the request", code=shown, description=text)


def parse_registrations(encoded: str | None) -> list[Registration]:
    """REGISTRAR's records; a 5005 that names the active request is adopted, not an error."""
    root = _decode_xml(encoded, "REGISTRAR_SOLICITUD_DM_SAT")
    records: list[Registration] = []
    for element in root.iter():
        if not isinstance(element.tag, str) or _local(element.tag).lower() != "solicitud":
            continue
        values = _values(element)
        code = _int(values.get("codestatus"))
        period = _period(values)
        request_id = _id(values.get("id"))
        adopted = code == SatCode.DUPLICATE and request_id is not None
        error = None if adopted else registration_error(code, values.get("mensaje"), period)
        if error is None and request_id is None:
            error = TransientError("MYSuite accepted a request but gave no id for it")
        records.append(
            Registration(
                request_id=request_id,
                sat_request_id=_id(values.get("idsolicitud")),
                service=values.get("servicio"),
                kind=values.get("tiposolicitud"),
                role=values.get("tipotaxid"),
                period=period,
                code=None if code is None else str(code),
                message=clip(values.get("mensaje")),
                adopted=adopted,
                error=error,
            )
        )
    if not records:
        raise TransientError("MYSuite REGISTRAR_SOLICITUD_DM_SAT answer lists no request")
    return records


def _status(values: Mapping[str, str], packages: Sequence[str], what: str) -> RequestStatus:
    request_id = _id(values.get("id"))
    state = _int(values.get("estadosolicitud"))
    if request_id is None or state not in {item.value for item in SatState}:
        raise TransientError(f"MYSuite {what} answer has no readable request id and state")
    status_code = _int(values.get("codestatus"))
    if status_code is not None and status_code != SatCode.OK:
        # Layer one: the verification call itself failed at SAT; it says nothing about the request.
        raise TransientError(
            "SAT could not verify the request now", code=str(status_code), description=clip(values.get("mensaje"))
        )
    count = _int(values.get("numerocfdis"))
    return RequestStatus(
        request_id=request_id,
        sat_request_id=_id(values.get("idsolicitud")),
        sat_state=SatState(state),
        status_code=status_code,
        request_code=_int(values.get("codigoestadosolicitud")),
        cfdi_count=max(count or 0, 0),
        package_ids=tuple(packages),
        message=clip(values.get("mensaje")),
        service=values.get("servicio"),
        kind=values.get("tiposolicitud"),
        role=values.get("tipotaxid"),
        period=_period(values),
        registered_at=_time(values.get("fecharegistro")),
    )


def parse_request(encoded: str | None, request_id: str) -> RequestStatus:
    """OBTENER_SOLICITUD's record; one about another request counts as unreadable."""
    root = _decode_xml(encoded, "OBTENER_SOLICITUD_DM_SAT")
    packages: list[str] = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = _local(element.tag).lower()
        if name in ("paquete", "idspaquetes"):
            package = _id(element.get("Id") or (element.text or "").strip())
            if package is None:
                raise TransientError("MYSuite OBTENER_SOLICITUD_DM_SAT answer has an unreadable package id")
            packages.append(package)
    if len(packages) > MAX_PACKAGES:
        raise TransientError("MYSuite OBTENER_SOLICITUD_DM_SAT answer lists too many packages")
    status = _status(_values(root), packages, "OBTENER_SOLICITUD_DM_SAT")
    if status.request_id.lower() != request_id.lower():
        raise TransientError("MYSuite OBTENER_SOLICITUD_DM_SAT answer is about another request")
    return status


def parse_request_page(encoded: str | None) -> RequestPage:
    """OBTENER_LISTA's JSON page."""
    if encoded is None:
        raise TransientError("MYSuite OBTENER_LISTA_SOLICITUDES_DM_SAT answer carries no ResponseData1")
    raw = decode_base64_text(encoded, "ResponseData1")
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TransientError("MYSuite OBTENER_LISTA_SOLICITUDES_DM_SAT answer is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("Rows"), list):
        raise TransientError("MYSuite OBTENER_LISTA_SOLICITUDES_DM_SAT answer has no Rows")
    rows = []
    for item in document["Rows"]:
        if not isinstance(item, dict):
            raise TransientError("MYSuite OBTENER_LISTA_SOLICITUDES_DM_SAT row is not an object")
        values = {str(key).lower(): str(value).strip() for key, value in item.items() if _scalar(value)}
        raw_packages = item.get("Paquetes") or []
        packages = [str(p) for p in raw_packages if isinstance(p, str)] if isinstance(raw_packages, list) else []
        rows.append(_status(values, packages, "OBTENER_LISTA_SOLICITUDES_DM_SAT"))

    def number(name: str) -> int:
        value = document.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TransientError(f"MYSuite OBTENER_LISTA_SOLICITUDES_DM_SAT answer has no readable {name}")
        return value

    return RequestPage(
        page=number("Page"),
        page_size=number("PageSize"),
        total_rows=number("TotalRows"),
        total_pages=number("TotalPages"),
        rows=tuple(rows),
    )


def _scalar(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip() != ""


def parse_link(encoded: str | None) -> str:
    """OBTENER_LINK_ARCHIVO's base64 URL."""
    if encoded is None:
        raise TransientError("MYSuite OBTENER_LINK_ARCHIVO_DM_SAT answer carries no link")
    try:
        url = decode_base64_text(encoded, "link").decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TransientError("MYSuite package link is not text") from None
    if not re.fullmatch(r"https?://[^\s]+", url, flags=re.IGNORECASE):
        raise TransientError("MYSuite package link is not an http(s) URL")
    return url


def is_max_downloads(*texts: str | None) -> bool:
    """Whether a refusal is SAT's "Maximo de descargas permitidas" (accents and case ignored)."""
    joined = " ".join(text for text in texts if text).lower().replace("á", "a").replace("í", "i")
    return MAX_DOWNLOADS_TEXT in joined
