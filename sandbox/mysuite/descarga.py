"""MYSuite Descarga Masiva (the four *_DM_SAT transactions) on top of a simulated SAT state machine.

MYSuite's knowledge base gives only the parameters of REGISTRAR (`<Dictionary name="Params">`) and
OBTENER_LISTA (`<Dictionary name="Pars">`); the answers of all four transactions and the parameters
of OBTENER_SOLICITUD and OBTENER_LINK_ARCHIVO are unknown. Every name below marked INVENTED is the
simulator's guess, modelled on SAT's own messages (IdSolicitud, CodEstatus, EstadoSolicitud,
CodigoEstadoSolicitud, NumeroCFDIs, Mensaje, IdsPaquetes) wrapped as MYSuite wraps its other
answers (base64 in ResponseData1):

- REGISTRAR_SOLICITUD_DM_SAT → ResponseData1 = base64 `<Solicitudes><Solicitud Id IdSolicitud
  Servicio TipoSolicitud TipoTaxID FechaInicial FechaFinal CodEstatus Mensaje/>…</Solicitudes>`,
  one per SAT request the call tried to register (INVENTED element and attribute `Id`).
  `EstadoComprobante` and `RfcReceptores` parameters: INVENTED keys, named as SAT names them.
- OBTENER_SOLICITUD_DM_SAT: Data1 = `Id` (INVENTED) → base64 `<Solicitud … EstadoSolicitud
  CodigoEstadoSolicitud NumeroCFDIs FechaRegistro><Paquete Id="…_01"/>…</Solicitud>` (INVENTED).
- OBTENER_LINK_ARCHIVO_DM_SAT: Data1 = `Id`, Data2 = package id (INVENTED) → ResponseData1 =
  base64 of an expiring URL to the ZIP, as ASYNC_RETRIEVE_DOCUMENT does.
- OBTENER_LISTA_SOLICITUDES_DM_SAT → ResponseData1 = base64 JSON `{"Page", "PageSize",
  "TotalRows", "TotalPages", "Rows": [...]}` or XML `<Solicitudes Page PageSize TotalRows
  TotalPages>` (INVENTED names), rows as in OBTENER_SOLICITUD with `Paquetes`.

SAT's rules simulated: the scripted state timeline (`dm_timeline`, `dm_step_seconds`), 5002 on the
third registration of the same CFDI period (metadata exempt), 5003 when the period holds more than
`dm_max_cfdi` CFDI or `dm_max_metadata` metadata records, 5004 for a period without documents, 5005
(with the active request's `Id`) while an identical request is pending, the v1.5 checks (`301`),
and "Maximo de descargas permitidas" once a package's link has been handed out `dm_max_downloads`
times: each OBTENER_LINK stands for one SAT download, since MYSuite fetches the package from SAT to
serve it (INVENTED model: where MYSuite really counts is unknown). Packages are real ZIPs of CFDI
4.0 XML or metadata text from `sandbox.mysuite.cfdigen`; Retenciones requests get CFDI-shaped
documents of their own, a simplification.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

from sandbox.mysuite.cfdigen import period_count, period_documents, write_package
from sandbox.mysuite.config import MySuiteSandboxConfig, parse_timeline
from sandbox.mysuite.soap import MEXICO, Answer

CODE_OK = 1
CODE_UNKNOWN_REQUEST = 9005  # INVENTED (shared with the async service): no request with that Id
CODE_NOT_READY = 9006  # INVENTED (shared): the request has no packages (yet)
CODE_BAD_PARAMETER = 9010  # INVENTED (shared): a Data field the transaction cannot use
CODE_MAX_DOWNLOADS = 9020  # INVENTED: SAT refused the package ("Maximo de descargas permitidas.")

SAT_OK = 5000
SAT_EXHAUSTED = 5002
SAT_TOO_MANY = 5003
SAT_NO_DATA = 5004
SAT_DUPLICATE = 5005
SAT_MALFORMED = 301
MAX_DOWNLOADS_TEXT = "Maximo de descargas permitidas."
SAT_TEXTS = {
    SAT_OK: "Solicitud Aceptada",
    SAT_EXHAUSTED: "Se agotó las solicitudes de por vida",
    SAT_TOO_MANY: "Tope máximo de elementos de la consulta",
    SAT_NO_DATA: "No se encontró la información",
    SAT_DUPLICATE: "Solicitud duplicada",
}
TIMELINE_ENDS = (3, 4, 5, 6)
SERVICES = {"CFDIS": ("CFDIS",), "RETENCIONES": ("RETENCIONES",), "AMBOS": ("CFDIS", "RETENCIONES")}
ROLES = {"EMISOR": ("EMISOR",), "RECEPTOR": ("RECEPTOR",), "AMBOS": ("EMISOR", "RECEPTOR")}
KINDS = {"CFDI": ("CFDI",), "METADATA": ("Metadata",), "AMBOS": ("CFDI", "Metadata")}
_WIRE = "%Y-%m-%d %H:%M:%S"


@dataclass
class DmRequest:
    """One simulated SAT request and the MYSuite record wrapping it."""

    request_id: str
    sat_id: str
    entity: str
    service: str
    kind: str
    role: str
    start: str
    end: str
    registered_at: float
    timeline: tuple[int, ...]
    step_seconds: float
    count: int
    package_size: int
    seed: int
    cancelled_rate: float
    polls: int = 0

    def state(self, now: float) -> int:
        if self.step_seconds <= 0:
            return self.timeline[-1]
        index = int((now - self.registered_at) / self.step_seconds)
        return self.timeline[min(max(index, 0), len(self.timeline) - 1)]

    def outcome(self, now: float) -> tuple[int, int, str]:
        """(EstadoSolicitud, CodigoEstadoSolicitud, Mensaje) at `now`."""
        state = self.state(now)
        if (state == 3 and self.count == 0) or state == 5:
            return 5, SAT_NO_DATA, SAT_TEXTS[SAT_NO_DATA]
        if state == 4:
            return 4, SAT_OK, "Error en la generación de la solicitud"  # INVENTED text
        if state == 6:
            return 6, SAT_OK, "Solicitud vencida"  # INVENTED text
        return state, SAT_OK, SAT_TEXTS[SAT_OK]

    @property
    def package_ids(self) -> list[str]:
        if self.count == 0:
            return []
        packages = math.ceil(self.count / self.package_size)
        return [f"{self.sat_id.upper()}_{number:02d}" for number in range(1, packages + 1)]

    def active(self, now: float) -> bool:
        return self.outcome(now)[0] in (1, 2)


@dataclass
class PackageCounter:
    links: int = 0
    refused: int = 0
    downloads: int = 0


@dataclass
class DmStore:
    """Requests, registration history and counters; one lock, every method short."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict[str, DmRequest] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    registrations: dict[tuple[str, ...], int] = field(default_factory=dict)
    package_counters: dict[str, PackageCounter] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.packages.clear()
            self.registrations.clear()
            self.package_counters.clear()
            self.outcomes.clear()

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            requests = {
                request.request_id: {
                    "sat_id": request.sat_id,
                    "service": request.service,
                    "kind": request.kind,
                    "role": request.role,
                    "period": [request.start, request.end],
                    "state": request.outcome(now)[0],
                    "cfdi": request.count,
                    "packages": request.package_ids,
                    "polls": request.polls,
                }
                for request in self.requests.values()
            }
            packages = {
                package: {"links": counter.links, "refused": counter.refused, "downloads": counter.downloads}
                for package, counter in self.package_counters.items()
            }
            return {"requests": requests, "packages": packages, "registrations": dict(self.outcomes)}


class DescargaMasiva:
    """Runs the four transactions; `config` is read on every call so admin changes apply at once."""

    def __init__(self, store: DmStore, config: Callable[[], MySuiteSandboxConfig]) -> None:
        self.store = store
        self.config = config

    # REGISTRAR_SOLICITUD_DM_SAT

    def register(self, entity: str, data1: str) -> Answer:
        params = _dictionary(data1)
        if params is None:
            return _fail(CODE_BAD_PARAMETER, "Data1 debe ser un Dictionary Params en base64.")
        missing = [key for key in ("FielCer", "FielKey", "FielPass") if not params.get(key)]
        if missing:
            return _fail(CODE_BAD_PARAMETER, f"Faltan parámetros de la FIEL: {', '.join(missing)}.")
        services = SERVICES.get(params.get("Servicio", "").upper())
        roles = ROLES.get(params.get("TipoTaxID", "").upper())
        kinds = KINDS.get(params.get("TipoSolicitud", "").upper())
        start, end = _wire_time(params.get("FechaInicial")), _wire_time(params.get("FechaFinal"))
        if services is None or roles is None or kinds is None or start is None or end is None:
            return _fail(
                CODE_BAD_PARAMETER,
                "Servicio, TipoTaxID, TipoSolicitud, FechaInicial y FechaFinal (yyyy-MM-dd HH:mm:ss) son obligatorios.",
            )
        status = params.get("EstadoComprobante", "Todos")
        receivers = [item for item in params.get("RfcReceptores", "").split(",") if item.strip()]
        records = [
            self._register_one(entity, service, role, kind, start, end, status, receivers)
            for service in services
            for role in roles
            for kind in kinds
        ]
        document = '<?xml version="1.0" encoding="utf-8"?><Solicitudes>' + "".join(records) + "</Solicitudes>"
        return Answer(result=True, code=CODE_OK, response_data1=_b64(document))

    def _register_one(
        self,
        entity: str,
        service: str,
        role: str,
        kind: str,
        start: datetime,
        end: datetime,
        status: str,
        receivers: list[str],
    ) -> str:
        config = self.config()
        now = time.time()
        start_text, end_text = start.strftime(_WIRE), end.strftime(_WIRE)
        echo = {
            "Servicio": service,
            "TipoSolicitud": kind,
            "TipoTaxID": role,
            "FechaInicial": start_text,
            "FechaFinal": end_text,
        }
        problem = _v15_problem(start, end, now, role, kind, status, receivers)
        if problem is not None:
            return self._record(echo, SAT_MALFORMED, problem)
        period_key = (entity, service, role, start_text, end_text)
        with self.store.lock:
            for existing in self.store.requests.values():
                same = (existing.entity, existing.service, existing.role, existing.start, existing.end) == period_key
                if same and existing.kind == kind and existing.active(now):
                    self._count(SAT_DUPLICATE)
                    return self._record(echo, SAT_DUPLICATE, SAT_TEXTS[SAT_DUPLICATE], existing)
            if kind == "CFDI" and self.store.registrations.get(period_key, 0) >= 2:
                self._count(SAT_EXHAUSTED)
                return self._record(echo, SAT_EXHAUSTED, SAT_TEXTS[SAT_EXHAUSTED])
            count = period_count(start.timestamp(), end.timestamp(), config.dm_cfdi_per_day)
            limit = config.dm_max_cfdi if kind == "CFDI" else config.dm_max_metadata
            if count > limit:
                self._count(SAT_TOO_MANY)
                return self._record(echo, SAT_TOO_MANY, SAT_TEXTS[SAT_TOO_MANY])
            request = DmRequest(
                request_id=str(uuid.uuid4()),
                sat_id=str(uuid.uuid4()),
                entity=entity,
                service=service,
                kind=kind,
                role=role,
                start=start_text,
                end=end_text,
                registered_at=now,
                timeline=parse_timeline(config.dm_timeline),
                step_seconds=config.dm_step_seconds,
                count=count,
                package_size=config.dm_package_size,
                seed=config.seed,
                cancelled_rate=config.dm_cancelled_rate,
            )
            self.store.requests[request.request_id] = request
            for package in request.package_ids:
                self.store.packages[package.lower()] = request.request_id
            if kind == "CFDI":
                self.store.registrations[period_key] = self.store.registrations.get(period_key, 0) + 1
            self._count(SAT_OK)
            return self._record(echo, SAT_OK, SAT_TEXTS[SAT_OK], request)

    def _count(self, code: int) -> None:
        key = str(code)
        self.store.outcomes[key] = self.store.outcomes.get(key, 0) + 1

    @staticmethod
    def _record(echo: dict[str, str], code: int, message: str, request: DmRequest | None = None) -> str:
        attributes = dict(echo)
        if request is not None:
            attributes = {"Id": request.request_id, "IdSolicitud": request.sat_id, **attributes}
        attributes["CodEstatus"] = str(code)
        attributes["Mensaje"] = message
        return "<Solicitud " + " ".join(f"{key}={quoteattr(value)}" for key, value in attributes.items()) + " />"

    # OBTENER_SOLICITUD_DM_SAT

    def get_request(self, entity: str, request_id: str) -> Answer:
        now = time.time()
        with self.store.lock:
            request = self.store.requests.get(request_id.strip().lower())
            if request is None or request.entity != entity:
                return _unknown()
            request.polls += 1
            fields, packages = _describe(request, now)
        body = "".join(f"<Paquete Id={quoteattr(package)} />" for package in packages)
        attributes = " ".join(f"{key}={quoteattr(str(value))}" for key, value in fields.items())
        document = f'<?xml version="1.0" encoding="utf-8"?><Solicitud {attributes}>{body}</Solicitud>'
        return Answer(result=True, code=CODE_OK, response_data1=_b64(document))

    # OBTENER_LINK_ARCHIVO_DM_SAT

    def get_link(self, entity: str, request_id: str, package_id: str, sign: Callable[[str], str]) -> Answer:
        now = time.time()
        config = self.config()
        with self.store.lock:
            request = self.store.requests.get(request_id.strip().lower())
            if request is None or request.entity != entity:
                return _unknown()
            if request.outcome(now)[0] != 3:
                return _fail(CODE_NOT_READY, "La solicitud no ha terminado o no generó paquetes.")
            wanted = package_id.strip().lower()
            if wanted not in (package.lower() for package in request.package_ids):
                return _fail(CODE_UNKNOWN_REQUEST, "La solicitud no tiene un paquete con ese identificador.")
            counter = self.store.package_counters.setdefault(wanted, PackageCounter())
            if counter.links >= config.dm_max_downloads:
                counter.refused += 1
                return _fail(CODE_MAX_DOWNLOADS, MAX_DOWNLOADS_TEXT, "Descarga rechazada por el SAT")
            counter.links += 1
        return Answer(result=True, code=CODE_OK, response_data1=_b64(sign(wanted)))

    def package_content(self, package_id: str) -> tuple[bytes, str, str] | None:
        """The ZIP behind a package link, rebuilt from the request's seed: (bytes, media type, name)."""
        with self.store.lock:
            request_id = self.store.packages.get(package_id.lower())
            request = self.store.requests.get(request_id or "")
            if request is None:
                return None
            counter = self.store.package_counters.setdefault(package_id.lower(), PackageCounter())
            counter.downloads += 1
        number = int(package_id.rsplit("_", 1)[1])
        first = (number - 1) * request.package_size
        start = datetime.strptime(request.start, _WIRE).replace(tzinfo=MEXICO).timestamp()
        end = datetime.strptime(request.end, _WIRE).replace(tzinfo=MEXICO).timestamp()
        taxpayer = request.entity if request.service == "CFDIS" else f"{request.entity}|RET"
        documents = period_documents(
            request.seed,
            taxpayer,
            request.role == "RECEPTOR",
            start,
            end,
            self.config().dm_cfdi_per_day,
            request.cancelled_rate,
        )
        chosen = (doc for index, doc in enumerate(documents) if first <= index < first + request.package_size)
        out = io.BytesIO()
        kind = "cfdi" if request.kind == "CFDI" else "metadata"
        write_package(out, chosen, kind, name=package_id.upper())
        return out.getvalue(), "application/zip", f"{package_id.upper()}.zip"

    # OBTENER_LISTA_SOLICITUDES_DM_SAT

    def list_requests(self, entity: str, data1: str) -> Answer:
        pars = _dictionary(data1)
        if pars is None:
            return _fail(CODE_BAD_PARAMETER, "Data1 debe ser un Dictionary Pars en base64.")
        oper = pars.get("Oper", "BOTH").upper()
        response_format = pars.get("ResponseFormat", "JSON").upper()
        if oper not in ("LINES", "COUNT", "BOTH") or response_format not in ("JSON", "XML"):
            return _fail(CODE_BAD_PARAMETER, "Oper debe ser LINES, COUNT o BOTH y ResponseFormat JSON o XML.")
        try:
            page = int(pars.get("Page", "0"))
            page_size = int(pars.get("PageSize", "0"))
        except ValueError:
            page = page_size = 0
        if oper != "COUNT" and (page < 1 or page_size < 1):
            return _fail(CODE_BAD_PARAMETER, "Page y PageSize son obligatorios para LINES y BOTH.")
        filters = _filters(pars.get("Filters", ""))
        if filters is None:
            return _fail(CODE_BAD_PARAMETER, "Filters debe ser un XML <Filters> en base64.")
        now = time.time()
        with self.store.lock:
            described = [
                _describe(request, now) for request in self.store.requests.values() if request.entity == entity
            ]
        rows = [fields | {"Paquetes": packages} for fields, packages in described]
        rows = [row for row in rows if all(_matches(row, *item) for item in filters)]
        order_field, _, direction = pars.get("Order", "FechaRegistro DESC").partition(" ")
        rows.sort(key=lambda row: str(row.get(order_field, "")), reverse=direction.strip().upper() != "ASC")
        total = len(rows)
        pages = math.ceil(total / page_size) if page_size else 0
        lines = rows[(page - 1) * page_size : page * page_size] if oper != "COUNT" else []
        summary = {"Page": page, "PageSize": page_size, "TotalRows": total, "TotalPages": pages}
        if response_format == "JSON":
            document = json.dumps(summary | ({"Rows": lines} if oper != "COUNT" else {}), ensure_ascii=False)
        else:
            head = " ".join(f"{key}={quoteattr(str(value))}" for key, value in summary.items())
            items = "".join(
                "<Solicitud "
                + " ".join(f"{key}={quoteattr(str(value))}" for key, value in row.items() if key != "Paquetes")
                + ">"
                + "".join(f"<Paquete Id={quoteattr(package)} />" for package in row["Paquetes"])
                + "</Solicitud>"
                for row in lines
            )
            document = f'<?xml version="1.0" encoding="utf-8"?><Solicitudes {head}>{items}</Solicitudes>'
        return Answer(result=True, code=CODE_OK, response_data1=_b64(document))


def _describe(request: DmRequest, now: float) -> tuple[dict[str, Any], list[str]]:
    state, code, message = request.outcome(now)
    finished = state == 3
    fields: dict[str, Any] = {
        "Id": request.request_id,
        "IdSolicitud": request.sat_id,
        "Servicio": request.service,
        "TipoSolicitud": request.kind,
        "TipoTaxID": request.role,
        "FechaInicial": request.start,
        "FechaFinal": request.end,
        "FechaRegistro": datetime.fromtimestamp(int(request.registered_at), MEXICO).strftime("%Y-%m-%dT%H:%M:%S"),
        "EstadoSolicitud": state,
        "CodEstatus": SAT_OK,
        "CodigoEstadoSolicitud": code,
        "NumeroCFDIs": request.count if finished else 0,
        "Mensaje": message,
    }
    return fields, request.package_ids if finished else []


def _v15_problem(
    start: datetime, end: datetime, now: float, role: str, kind: str, status: str, receivers: list[str]
) -> str | None:
    """SAT's v1.5 refusals, all answered `301` "XML Mal Formado" with the reason."""
    if start >= end:
        return "XML Mal Formado: La fecha inicial debe ser menor a la fecha final."
    today = datetime.fromtimestamp(now, MEXICO).date()
    try:
        floor_date = today.replace(year=today.year - 6)
    except ValueError:
        floor_date = today.replace(year=today.year - 6, day=28)
    floor = datetime(floor_date.year, floor_date.month, floor_date.day, tzinfo=MEXICO)
    if start < floor:
        return "XML Mal Formado: La fecha inicial no puede ser anterior a seis años."
    if role == "RECEPTOR" and kind == "CFDI" and status.lower() != "vigente":
        return "XML Mal Formado: No se permite la descarga de xml que se encuentren cancelados."
    if len(receivers) > 5:
        return "XML Mal Formado: Se permiten máximo 5 RfcReceptor."
    return None


def _dictionary(data1: str) -> dict[str, str] | None:
    """A base64 `<Dictionary>` of `<Entry k v/>`, read with entities and the network off."""
    try:
        raw = base64.b64decode("".join(data1.split()), validate=True)
        root = etree.fromstring(raw, _parser())
    except (binascii.Error, ValueError, etree.LxmlError):
        return None
    if root is None or root.tag != "Dictionary" or root.getroottree().docinfo.doctype:
        return None
    return {str(entry.get("k")): str(entry.get("v") or "").strip() for entry in root if entry.get("k")}


def _filters(encoded: str) -> list[tuple[str, str, str, str]] | None:
    if not encoded:
        return []
    try:
        root = etree.fromstring(base64.b64decode(encoded, validate=True), _parser())
    except (binascii.Error, ValueError, etree.LxmlError):
        return None
    if root is None or root.tag != "Filters":
        return None
    return [
        (item.get("Name", ""), item.get("Oper", "="), item.get("Value1", ""), item.get("Value2", ""))
        for item in root
        if item.tag == "Filter"
    ]


def _matches(row: dict[str, Any], name: str, oper: str, one: str, two: str) -> bool:
    value = str(row.get(name, ""))
    oper = oper.strip().upper()
    if oper == "=":
        return value.lower() == one.lower()
    if oper == "<>":
        return value.lower() != one.lower()
    if oper == ">=":
        return value >= one
    if oper == "<=":
        return value <= one
    if oper == "BETWEEN":
        return one <= value <= two
    return False


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _wire_time(value: str | None) -> datetime | None:
    try:
        return datetime.strptime((value or "").strip(), _WIRE).replace(tzinfo=MEXICO)
    except ValueError:
        return None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _fail(code: int, data: str, description: str = "Parámetro inválido") -> Answer:
    return Answer(result=False, code=code, data=data, description=description, hint="")


def _unknown() -> Answer:
    return _fail(CODE_UNKNOWN_REQUEST, "No existe una solicitud de descarga con el identificador proporcionado.")
