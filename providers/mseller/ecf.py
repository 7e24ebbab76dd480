"""The e-CF as MSeller takes it (JSON with root `ECF`, DGII field names) and the answers it gives.

Local validation catches what would only come back from the DGII minutes later as a rejection, and
what would waste a counted request: a malformed e-NCF, an RNC of the wrong shape, a missing section,
totals that do not add up. It checks no more than that; the DGII schema is MSeller's business.

The status answers carry `dgiiResponse`, a list of JSON *strings* (the DGII's recepción reply,
then its consulta-resultado reply), whose `codigo` is a string in one reply and a number in the
other. `parse_dgii_responses` decodes them into typed values and never raises anything but
`MalformedAnswer`, so a garbled answer is a transient error and never a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers.base import InvalidPayload, VerifyStatus

ECF_TYPES = {
    "31": "Factura de Crédito Fiscal Electrónica",
    "32": "Factura de Consumo Electrónica",
    "33": "Nota de Débito Electrónica",
    "34": "Nota de Crédito Electrónica",
    "41": "Compras Electrónico",
    "43": "Gastos Menores Electrónico",
    "44": "Regímenes Especiales Electrónico",
    "45": "Gubernamental Electrónico",
    "46": "Comprobante de Exportaciones Electrónico",
    "47": "Comprobante para Pagos al Exterior Electrónico",
}
ENCF_PATTERN = re.compile(r"E(3[1-4]|4[13-7])[0-9]{10}")
RNC_PATTERN = re.compile(r"[0-9]{9}|[0-9]{11}")  # RNC (9 digits) or cédula (11)
# Types whose buyer must be identified by RNC: the credit-fiscal invoice, purchases and government.
BUYER_REQUIRED = {"31", "41", "45"}
# Amounts add up to the cent in theory; the DGII accepts rounding differences, so do we.
TOLERANCE = Decimal("1.00")
MAX_MESSAGE = 2000
DGII_TZ = timezone(timedelta(hours=-4))  # Santo Domingo, no daylight saving

FINAL_ISSUED = {"aceptado", "aceptado condicional"}
FINAL_FAILED = {"rechazado", "error"}
PENDING = {"en proceso", "en cola", "enviado a la dgii", "no encontrado"}


class MalformedAnswer(ValueError):
    """An answer from MSeller that does not have the documented shape."""


@dataclass(frozen=True)
class Ecf:
    """The few fields of a valid e-CF the client needs: its identity and its key figures."""

    encf: str
    doc_type: str
    rnc_emisor: str
    rnc_comprador: str | None
    total: Decimal


def normalize_status(value: str) -> str:
    """Case-insensitive, whitespace collapsed: `ACEPTADO  condicional` is `aceptado condicional`."""
    return " ".join(value.split()).casefold()


def classify_status(value: str | None) -> VerifyStatus:
    """Final states as the notes list them; anything else (unknown values too) is still pending."""
    if not value:
        return VerifyStatus.PENDING
    status = normalize_status(value)
    if status in FINAL_ISSUED:
        return VerifyStatus.ISSUED
    if status in FINAL_FAILED:
        return VerifyStatus.FAILED
    return VerifyStatus.PENDING


def parse_ecf(payload: bytes, *, max_bytes: int, entity: str | None = None) -> Ecf:
    """Check a document before it is sent; InvalidPayload says what is wrong with it."""
    if len(payload) > max_bytes:
        raise InvalidPayload(f"mseller: document of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayload(f"mseller: the document is not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or set(document) != {"ECF"} or not isinstance(document["ECF"], dict):
        raise InvalidPayload("mseller: the document must be a JSON object whose only key is ECF")
    ecf = document["ECF"]
    encabezado = _section(ecf, "Encabezado")
    id_doc = _section(encabezado, "IdDoc", "Encabezado.")
    emisor = _section(encabezado, "Emisor", "Encabezado.")
    totales = _section(encabezado, "Totales", "Encabezado.")
    detalles = _section(ecf, "DetallesItems")
    items = detalles.get("Item")
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise InvalidPayload("mseller: DetallesItems.Item must list at least one item")

    encf = _text(id_doc, "eNCF", "Encabezado.IdDoc.")
    if not ENCF_PATTERN.fullmatch(encf):
        raise InvalidPayload(
            f"mseller: e-NCF {encf[:20]!r} must be 13 characters: series E, a known type "
            f"({', '.join(sorted(ECF_TYPES))}) and a 10-digit sequence"
        )
    doc_type = _text(id_doc, "TipoeCF", "Encabezado.IdDoc.")
    if doc_type != encf[1:3]:
        raise InvalidPayload(f"mseller: TipoeCF {doc_type[:4]!r} does not match the e-NCF type {encf[1:3]}")
    rnc_emisor = _text(emisor, "RNCEmisor", "Encabezado.Emisor.")
    if not RNC_PATTERN.fullmatch(rnc_emisor):
        raise InvalidPayload("mseller: RNCEmisor must be an RNC (9 digits) or a cédula (11 digits)")
    if entity and rnc_emisor != entity:
        raise InvalidPayload(f"mseller: RNCEmisor {rnc_emisor} is not this account's RNC {entity}")
    comprador = encabezado.get("Comprador")
    rnc_comprador = None
    if isinstance(comprador, dict) and comprador.get("RNCComprador") not in (None, ""):
        rnc_comprador = str(comprador["RNCComprador"]).strip()
        if not RNC_PATTERN.fullmatch(rnc_comprador):
            raise InvalidPayload("mseller: RNCComprador must be an RNC (9 digits) or a cédula (11 digits)")
    if doc_type in BUYER_REQUIRED and rnc_comprador is None:
        raise InvalidPayload(f"mseller: an e-CF of type {doc_type} needs Encabezado.Comprador.RNCComprador")
    total = _check_totals(totales, items)
    return Ecf(encf=encf, doc_type=doc_type, rnc_emisor=rnc_emisor, rnc_comprador=rnc_comprador, total=total)


def _section(parent: Mapping[str, Any], name: str, prefix: str = "") -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict) or not value:
        raise InvalidPayload(f"mseller: required section {prefix}{name} is missing")
    return value


def _text(parent: Mapping[str, Any], name: str, prefix: str) -> str:
    value = parent.get(name)
    if value is None or isinstance(value, (dict, list, bool)) or str(value).strip() == "":
        raise InvalidPayload(f"mseller: required field {prefix}{name} is missing")
    return str(value).strip()


def _amount(parent: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> Decimal:
    value = parent.get(name)
    if value is None or value == "":
        if required:
            raise InvalidPayload(f"mseller: required amount {where}{name} is missing")
        return Decimal(0)
    if isinstance(value, (bool, dict, list)):
        raise InvalidPayload(f"mseller: {where}{name} is not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidPayload(f"mseller: {where}{name} is not an amount") from None
    if not amount.is_finite():
        raise InvalidPayload(f"mseller: {where}{name} is not an amount")
    return amount


def _check_totals(totales: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> Decimal:
    """The items add up to the taxable plus exempt amounts, and those plus the taxes to MontoTotal."""
    where = "Encabezado.Totales."
    total = _amount(totales, "MontoTotal", where, required=True)
    gravado = _amount(totales, "MontoGravadoTotal", where)
    exento = _amount(totales, "MontoExento", where)
    itbis = _amount(totales, "TotalITBIS", where)
    adicional = _amount(totales, "MontoImpuestoAdicional", where)
    no_facturable = _amount(totales, "MontoNoFacturable", where)
    lines = sum(
        (_amount(item, "MontoItem", f"DetallesItems.Item[{n}].", required=True) for n, item in enumerate(items)),
        Decimal(0),
    )
    if abs(lines - (gravado + exento + no_facturable)) > TOLERANCE:
        raise InvalidPayload(
            f"mseller: the items add up to {lines}, but MontoGravadoTotal + MontoExento"
            f" + MontoNoFacturable is {gravado + exento + no_facturable}"
        )
    expected = gravado + exento + itbis + adicional
    if abs(total - expected) > TOLERANCE:
        raise InvalidPayload(
            f"mseller: MontoTotal {total} does not equal MontoGravadoTotal + MontoExento + TotalITBIS"
            f" + MontoImpuestoAdicional = {expected}"
        )
    return total


# ------------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class DgiiMessage:
    codigo: str
    valor: str

    def __str__(self) -> str:
        if self.codigo and self.valor:
            return f"{self.codigo}: {self.valor}"
        return self.valor or self.codigo


@dataclass(frozen=True)
class DgiiReply:
    """One decoded entry of `dgiiResponse`: a recepción reply (trackId only) or a result."""

    track_id: str | None
    codigo: str | None
    estado: str | None
    encf: str | None
    received_at: datetime | None
    messages: tuple[DgiiMessage, ...]


def parse_dgii_responses(raw: Any) -> tuple[DgiiReply, ...]:
    """Decode `dgiiResponse`: a list of JSON strings (already-decoded objects are taken as they are).

    A null or absent field is an empty tuple: MSeller sends it only once the DGII has answered.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedAnswer("dgiiResponse is not a list")
    replies = []
    for entry in raw:
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except (ValueError, RecursionError):
                raise MalformedAnswer("a dgiiResponse entry is not JSON") from None
        if not isinstance(entry, dict):
            raise MalformedAnswer("a dgiiResponse entry is not a JSON object")
        replies.append(_reply(entry))
    return tuple(replies)


def _scalar(value: Any, name: str) -> str | None:
    """A string or number field as text (`codigo` is "1" in one reply and 1 in another)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MalformedAnswer(f"{name} is neither a string nor a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MalformedAnswer(f"{name} is not a finite number")
        return str(int(value)) if value.is_integer() else str(value)
    return str(value).strip()[:MAX_MESSAGE]


def _reply(entry: Mapping[str, Any]) -> DgiiReply:
    messages = entry.get("mensajes")
    parsed: list[DgiiMessage] = []
    if messages is not None:
        if not isinstance(messages, list):
            raise MalformedAnswer("mensajes is not a list")
        for item in messages:
            if not isinstance(item, dict):
                raise MalformedAnswer("a mensajes item is not an object")
            codigo = _scalar(item.get("codigo"), "mensajes.codigo") or ""
            valor = _scalar(item.get("valor"), "mensajes.valor") or ""
            # {"valor": "", "codigo": 0} is how the DGII says "no message".
            if valor or codigo not in ("", "0"):
                parsed.append(DgiiMessage(codigo, valor))
    # The recepción reply carries its complaint as `mensaje`/`error`, without a code.
    for key in ("error", "mensaje"):
        text = _scalar(entry.get(key), key)
        if text:
            parsed.append(DgiiMessage("", text))
    return DgiiReply(
        track_id=_scalar(entry.get("trackId"), "trackId"),
        codigo=_scalar(entry.get("codigo"), "codigo"),
        estado=_scalar(entry.get("estado"), "estado"),
        encf=_scalar(entry.get("encf"), "encf"),
        received_at=_dgii_time(entry.get("fechaRecepcion")),
        messages=tuple(parsed),
    )


def _dgii_time(value: Any) -> datetime | None:
    """`5/14/2025 3:26:21 PM`, Santo Domingo time; None when absent or in another format."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=DGII_TZ).astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class StatusRecord:
    """One e-NCF's status as MSeller reports it (single query, or one batch result with `data`)."""

    encf: str
    status: str | None
    found: bool
    security_code: str | None
    qr_url: str | None
    internal_track_id: str | None
    replies: tuple[DgiiReply, ...]
    raw: Mapping[str, Any] | None

    @property
    def verdict(self) -> VerifyStatus:
        if not self.found:
            return VerifyStatus.PENDING
        status = self.status
        if not status:
            # Without MSeller's own status, the DGII's last word decides.
            status = next((r.estado for r in reversed(self.replies) if r.estado), None)
        return classify_status(status)

    @property
    def messages(self) -> tuple[DgiiMessage, ...]:
        return tuple(message for reply in self.replies for message in reply.messages)

    @property
    def dgii_code(self) -> str | None:
        return next((r.codigo for r in reversed(self.replies) if r.codigo), None)

    @property
    def received_at(self) -> datetime | None:
        return next((r.received_at for r in reversed(self.replies) if r.received_at), None)

    @property
    def signed_date(self) -> str | None:
        """`FechaFirma` of the QR URL: the status answers do not repeat the send's `signedDate`."""
        if not self.qr_url:
            return None
        query = {k.lower(): v for k, v in parse_qs(urlsplit(self.qr_url).query).items()}
        values = query.get("fechafirma")
        return values[0] if values else None


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedAnswer(f"{name} is not a string")
    return value.strip()[:MAX_MESSAGE] or None


def parse_record(encf: str, data: Mapping[str, Any], *, found: bool = True, status: Any = None) -> StatusRecord:
    """A status record from the single query's body or a batch result's `data`."""
    if not isinstance(data, Mapping):
        raise MalformedAnswer("the status data is not an object")
    own = data.get("status", status)
    if own is not None and not isinstance(own, str):
        raise MalformedAnswer("status is not a string")
    return StatusRecord(
        encf=encf,
        status=own,
        found=found,
        security_code=_optional_text(data, "securityCode"),
        qr_url=_optional_text(data, "qr_url"),
        internal_track_id=_optional_text(data, "internalTrackId"),
        replies=parse_dgii_responses(data.get("dgiiResponse")),
        raw=data,
    )


def parse_batch(body: Any) -> dict[str, StatusRecord]:
    """`{"total", "results": [{"ecf", "status", "found", "data"}]}` keyed by e-NCF."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise MalformedAnswer("the batch answer has no results list")
    records: dict[str, StatusRecord] = {}
    for result in body["results"]:
        if not isinstance(result, dict):
            raise MalformedAnswer("a batch result is not an object")
        encf = result.get("ecf")
        found = result.get("found")
        if not isinstance(encf, str) or not isinstance(found, bool):
            raise MalformedAnswer("a batch result lacks ecf or found")
        status = result.get("status")
        if status is not None and not isinstance(status, str):
            raise MalformedAnswer("a batch result's status is not a string")
        data = result.get("data")
        if found and isinstance(data, dict):
            records[encf] = parse_record(encf, data, status=status)
        else:
            records[encf] = StatusRecord(encf, status, found, None, None, None, (), None)
    return records


@dataclass(frozen=True)
class SendReceipt:
    """MSeller's immediate answer to a send: the signature it made, before the DGII has seen it."""

    rnc: str | None
    encf: str
    internal_track_id: str | None
    security_code: str | None
    qr_url: str | None
    signed_date: str | None


def parse_send(body: Any, expected_encf: str) -> SendReceipt:
    if not isinstance(body, dict):
        raise MalformedAnswer("the send answer is not an object")
    encf = body.get("ecf", expected_encf)
    if encf != expected_encf:
        raise MalformedAnswer("the send answer names another e-NCF")
    rnc = body.get("rnc")
    return SendReceipt(
        rnc=str(rnc) if isinstance(rnc, (str, int)) and not isinstance(rnc, bool) else None,
        encf=expected_encf,
        internal_track_id=_optional_text(body, "internalTrackId"),
        security_code=_optional_text(body, "securityCode"),
        qr_url=_optional_text(body, "qr_url"),
        signed_date=_optional_text(body, "signedDate"),
    )
