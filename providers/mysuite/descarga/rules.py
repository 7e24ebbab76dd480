"""What may be asked of SAT's bulk download, checked before a request spends any of SAT's limits.

SAT's web service v1.5 (2025-05-30) refuses, with codes that cost a request or with a `301` "XML
Mal Formado": a period whose start is not strictly before its end, a start older than six years
(today minus six years at 00:00), received CFDI (XML) that are not restricted to `Vigente`, more
than five receiver RFCs. `check_query` says which rule a request breaks, with no network, so such a
request is refused locally with the rule's name and never registered.

`split_period` halves a period that SAT refused as too large (5003), the one automatic recovery
that does not risk the "same period twice" limit: each half is a different period.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from providers.base import InvalidPayload
from providers.mysuite.descarga.records import MEXICO_CITY

MAX_RECEIVER_RFCS = 5
HISTORY_YEARS = 6
RFC_PATTERN = re.compile(r"^[A-ZÑ&]{3,4}\d{6}[A-Z\d]{3}$")
"""Personas morales have three letters, personas físicas four; then yymmdd and a three-character homoclave."""


class Service(enum.StrEnum):
    """MYSuite `Servicio`: regular CFDI, Retenciones, or both (one SAT request each)."""

    CFDIS = "CFDIS"
    RETENCIONES = "RETENCIONES"
    AMBOS = "AMBOS"


class RequestKind(enum.StrEnum):
    """MYSuite `TipoSolicitud`: the XML files, the metadata text, or both."""

    CFDI = "CFDI"
    METADATA = "Metadata"
    AMBOS = "AMBOS"


class TaxIdRole(enum.StrEnum):
    """MYSuite `TipoTaxID`: documents the taxpayer issued (EMISOR), received (RECEPTOR) or both."""

    EMISOR = "EMISOR"
    RECEPTOR = "RECEPTOR"
    AMBOS = "AMBOS"


class DocumentStatus(enum.StrEnum):
    """SAT `EstadoComprobante` filter."""

    TODOS = "Todos"
    VIGENTE = "Vigente"
    CANCELADO = "Cancelado"


class Rule(enum.StrEnum):
    """The local rules, by the name a refusal reports."""

    PERIOD_ORDER = "period_order"
    HISTORY_WINDOW = "history_window"
    RECEIVED_VIGENTE = "received_cfdi_vigente"
    RECEIVER_RFCS = "receiver_rfc_count"
    RFC_FORMAT = "rfc_format"
    NAIVE_TIME = "aware_times"


class RuleViolation(InvalidPayload):
    """A request refused locally, before registering: `rule` names the v1.5 rule it breaks."""

    def __init__(self, rule: Rule, message: str) -> None:
        super().__init__(message, code=rule.value)
        self.rule = rule


@dataclass(frozen=True)
class Period:
    """[start, end] in seconds, as SAT reads `FechaInicial`/`FechaFinal` (both inclusive, Mexico City)."""

    start: datetime
    end: datetime

    def wire(self) -> tuple[str, str]:
        """`yyyy-MM-dd HH:mm:ss` in Mexico City time, the form MYSuite takes."""
        return (_wire(self.start), _wire(self.end))

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _wire(moment: datetime) -> str:
    return moment.astimezone(MEXICO_CITY).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class DownloadQuery:
    """One REGISTRAR_SOLICITUD_DM_SAT call: whose documents, which period, which services and kinds.

    `rfc` is the taxpayer (MYSuite's Entity) whose FIEL signs the request. `status` applies to
    every request the call registers, so a call that includes received CFDI (XML) must use Vigente.
    """

    rfc: str
    period: Period
    role: TaxIdRole
    kind: RequestKind
    service: Service = Service.CFDIS
    status: DocumentStatus = DocumentStatus.VIGENTE
    receiver_rfcs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def includes_received_xml(self) -> bool:
        return self.role is not TaxIdRole.EMISOR and self.kind is not RequestKind.METADATA


def history_floor(now: datetime) -> datetime:
    """The oldest start SAT accepts: today (Mexico City) minus six years, at 00:00:00."""
    today = now.astimezone(MEXICO_CITY).date()
    try:
        floor = today.replace(year=today.year - HISTORY_YEARS)
    except ValueError:  # 29 February, six years after a leap year
        floor = today.replace(year=today.year - HISTORY_YEARS, day=28)
    return datetime.combine(floor, time(0, 0), MEXICO_CITY)


def check_query(query: DownloadQuery, now: datetime) -> None:
    """Raise `RuleViolation` for the first v1.5 rule `query` breaks; return quietly when it breaks none."""
    start, end = query.period.start, query.period.end
    if start.tzinfo is None or end.tzinfo is None or now.tzinfo is None:
        raise RuleViolation(Rule.NAIVE_TIME, "period times must carry a time zone")
    for label, rfc in (("rfc", query.rfc), *(("receiver rfc", item) for item in query.receiver_rfcs)):
        if not RFC_PATTERN.match(rfc):
            raise RuleViolation(Rule.RFC_FORMAT, f"{label} {rfc[:20]!r} is not an RFC")
    # SAT compares whole seconds; a sub-second difference is the same instant to it.
    if int(start.timestamp()) >= int(end.timestamp()):
        raise RuleViolation(Rule.PERIOD_ORDER, "the period must start strictly before it ends")
    floor = history_floor(now)
    if start < floor:
        raise RuleViolation(Rule.HISTORY_WINDOW, f"the period starts before {_wire(floor)}, six years ago")
    if query.includes_received_xml and query.status is not DocumentStatus.VIGENTE:
        raise RuleViolation(Rule.RECEIVED_VIGENTE, "received CFDI (XML) can only be requested as Vigente")
    if len(query.receiver_rfcs) > MAX_RECEIVER_RFCS:
        raise RuleViolation(Rule.RECEIVER_RFCS, f"at most {MAX_RECEIVER_RFCS} receiver RFCs per request")


class CannotSplit(ValueError):
    """A period too short to halve into two valid periods (each needs start < end, in seconds)."""


def split_period(period: Period) -> tuple[Period, Period]:
    """The two halves of a period SAT refused as too large (5003): [start, mid] and [mid + 1 s, end].

    Times are whole seconds and both ends are inclusive, so the halves neither overlap nor leave a
    second uncovered; each still starts strictly before it ends, as v1.5 requires, which needs at
    least three seconds between start and end.
    """
    start = period.start.replace(microsecond=0)
    end = period.end.replace(microsecond=0)
    span = int((end - start).total_seconds())
    if span < 3:
        raise CannotSplit("a period shorter than three seconds cannot be halved")
    middle = start + timedelta(seconds=span // 2)
    return Period(start, middle), Period(middle + timedelta(seconds=1), end)
