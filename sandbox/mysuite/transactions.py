"""The MYSuite transactions the simulator answers, with the provider's business rules.

Result codes 1 (success) and 3196 (duplicate async request) are MYSuite's own. MYSuite publishes no
catalogue of its other codes, so every other code here is INVENTED by the sandbox and lives in the
9001-9099 range so that nobody mistakes it for a real one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sandbox.mysuite.config import MIB, MySuiteSandboxConfig
from sandbox.mysuite.descarga import DescargaMasiva
from sandbox.mysuite.native import (
    NativeDocument,
    NativeError,
    cfdi_pdf,
    cfdi_xml,
    decode_base64,
    decoded_length,
    parse_native,
    zipped,
)
from sandbox.mysuite.soap import MEXICO, Answer, SoapRequest, is_guid, local_seconds
from sandbox.mysuite.store import (
    STATUS_ISSUED,
    AsyncRequest,
    IssuedDocument,
    Store,
)

CODE_OK = 1
CODE_DUPLICATE = 3196  # seed 001
CODE_TOO_SMALL = 9001  # INVENTED: Data1 at or under the async minimum ("deben ir por el servicio normal")
CODE_TOO_LARGE = 9002  # INVENTED: Data1 over the environment's maximum
CODE_INVALID_DOCUMENT = 9003  # INVENTED: Data1 is not a valid fx:FactDocMX native document
CODE_BAD_INTERNAL_ID = 9004  # INVENTED: async Data2 missing or longer than 50 characters
CODE_UNKNOWN_REQUEST = 9005  # INVENTED: no async request with that identifier
CODE_NOT_READY = 9006  # INVENTED: ASYNC_RETRIEVE_DOCUMENT while Status is not 2
CODE_NOT_FOUND = 9007  # INVENTED: GET_DOCUMENT for a serie/folio that was never issued
CODE_AUTH = 9008  # INVENTED: Requestor/User not a GUID, not the configured one, or no Entity
CODE_UNSUPPORTED = 9009  # INVENTED: transaction not offered by this service (or not simulated)
CODE_BAD_PARAMETER = 9010  # INVENTED: a Data field with a value the transaction cannot use

DUPLICATE_TEXT = (
    "El número interno proporcionado ya se encuentra registrado. "
    "Consulte ResponseData1 para obtener el Id de la solicitud existente."
)
MAX_INTERNAL_ID = 50
ASYNC_TRANSACTIONS = ("ASYNC_CONVERT_NATIVE_XML", "ASYNC_CONVERT_VERIFY", "ASYNC_RETRIEVE_DOCUMENT")
DM_TRANSACTIONS = (
    "REGISTRAR_SOLICITUD_DM_SAT",
    "OBTENER_SOLICITUD_DM_SAT",
    "OBTENER_LINK_ARCHIVO_DM_SAT",
    "OBTENER_LISTA_SOLICITUDES_DM_SAT",
)
SYNC_TRANSACTIONS = ("CONVERT_NATIVE_XML", "LOOKUP_ISSUED_INTERNAL_ID", "GET_DOCUMENT", *DM_TRANSACTIONS)
LINK_KINDS = ("xml", "pdf", "pkg")
"""What a download token points at: an async document's XML or PDF, or a Descarga Masiva package."""

# Status-3 texts, picked deterministically per request; shaped like the SAT validation errors PACs relay.
FAILURE_MESSAGES = (
    "CFDI40108 - El TipoDeComprobante no corresponde con el valor de los conceptos.",
    "CFDI40147 - El campo RegimenFiscalReceptor no es válido para el RFC del receptor.",
    "CFDI40158 - El campo DomicilioFiscalReceptor no coincide con el registrado en el SAT.",
    "CFDI40999 - Error no clasificado al generar el comprobante.",
)


def fail(code: int, data: str, description: str = "", hint: str = "") -> Answer:
    return Answer(result=False, code=code, data=data, description=description, hint=hint)


def _too_large(size: int, limit: int) -> Answer:
    """The refusal of a Data1 over the maximum.

    It is given twice: before decoding, from the base64 length, so a huge upload is never decoded;
    and after, because the decoded size is the one that counts.
    """
    return fail(
        CODE_TOO_LARGE,
        f"El tamaño de Data1 ({size} bytes) excede el máximo permitido de {limit} bytes ({limit / MIB:g} MB).",
        "Tamaño excedido",
    )


def _invalid_document(exc: NativeError) -> Answer:
    """The refusal of a Data1 that is not a native document, whichever step (base64, XML) found it."""
    return fail(CODE_INVALID_DOCUMENT, str(exc), "XML nativo inválido")


def b64(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class LinkToken:
    request_id: str
    kind: str
    expires_at: float


class Transactions:
    """Runs one parsed call against the store.

    `config` is read on every call so admin changes apply at once.
    """

    def __init__(self, store: Store, config: Callable[[], MySuiteSandboxConfig]) -> None:
        self.store = store
        self.config = config
        self._link_key = secrets.token_bytes(32)
        self.descarga = DescargaMasiva(store.descarga, config)

    def execute(self, request: SoapRequest, service: str, base_url: str) -> Answer:
        transaction = request.transaction
        allowed = ASYNC_TRANSACTIONS if service == "async" else SYNC_TRANSACTIONS
        if transaction not in allowed:
            return fail(
                CODE_UNSUPPORTED,
                f"La transacción {transaction or '(vacía)'} no está disponible en este servicio.",
                "Transacción no soportada",
            )
        auth = self._authorize(request)
        if auth is not None:
            return auth
        handler = getattr(self, "_" + transaction.lower())
        answer: Answer = handler(request, base_url)
        return answer

    def _authorize(self, request: SoapRequest) -> Answer | None:
        requestor = request.text("Requestor")
        expected = self.config().requestor
        if not is_guid(requestor) or not is_guid(request.text("User")):
            return fail(CODE_AUTH, "Requestor o User no es un identificador válido.", "Acceso denegado")
        if expected and requestor.lower() != expected.lower():
            return fail(CODE_AUTH, "El Requestor no está autorizado.", "Acceso denegado")
        if not request.text("Entity"):
            return fail(CODE_AUTH, "Falta el Entity (RFC del emisor).", "Acceso denegado")
        return None

    # ASYNC_CONVERT_NATIVE_XML

    def _async_convert_native_xml(self, request: SoapRequest, base_url: str) -> Answer:
        config = self.config()
        entity = request.text("Entity")
        internal_id = request.text("Data2")
        if not internal_id or len(internal_id) > MAX_INTERNAL_ID:
            return fail(
                CODE_BAD_INTERNAL_ID,
                f"Data2 (número interno) es obligatorio y de máximo {MAX_INTERNAL_ID} caracteres.",
                "Parámetro inválido",
            )
        existing = self.store.find_request(entity, internal_id)
        if existing is not None:
            self.store.count_duplicate(internal_id)
            return self._duplicate(existing)
        data1 = request.get("Data1") or ""
        size = decoded_length(data1)
        if size > config.effective_max_bytes:
            return _too_large(size, config.effective_max_bytes)
        try:
            decoded = decode_base64(data1)
        except NativeError as exc:
            return _invalid_document(exc)
        size = len(decoded)
        if size <= config.min_bytes:
            return fail(
                CODE_TOO_SMALL,
                f"El tamaño de Data1 ({size} bytes) no es mayor a {config.min_bytes / MIB:g} MB; "
                "este tipo de archivos deben ir por el servicio normal.",
                "Tamaño insuficiente",
            )
        if size > config.effective_max_bytes:
            return _too_large(size, config.effective_max_bytes)
        try:
            native = parse_native(decoded)
        except NativeError as exc:
            return _invalid_document(exc)
        finally:
            del decoded
        now = time.time()
        request_id = str(uuid.uuid4())
        ready_at = now + config.processing_seconds(size)
        failure = self._failure_message(config, entity, internal_id)
        document = None
        if failure is None:
            document = self._issue(native, entity, issued_at=ready_at)
        accepted = AsyncRequest(
            request_id=request_id,
            entity=entity,
            internal_id=internal_id,
            enrolled_at=int(now),
            ready_at=ready_at,
            size=size,
            error_msg=failure,
            document=document,
        )
        winner = self.store.add_request(accepted)
        if winner is not None:
            return self._duplicate(winner)
        return Answer(result=True, code=CODE_OK, response_data1=request_id)

    @staticmethod
    def _duplicate(existing: AsyncRequest) -> Answer:
        answer = fail(CODE_DUPLICATE, DUPLICATE_TEXT)
        answer.response_data1 = existing.request_id
        return answer

    @staticmethod
    def _failure_message(config: MySuiteSandboxConfig, entity: str, internal_id: str) -> str | None:
        """Whether this request ends in Status 3.

        A pure function of (seed, Entity, Data2), so a rerun of the same workload fails the same documents.
        """
        if config.failure_rate <= 0:
            return None
        digest = hashlib.sha256(f"{config.seed}\x00{entity}\x00{internal_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= config.failure_rate:
            return None
        return FAILURE_MESSAGES[digest[8] % len(FAILURE_MESSAGES)]

    def _issue(
        self,
        native: NativeDocument,
        entity: str,
        *,
        issued_at: float,
    ) -> IssuedDocument:
        serie = native.serie
        folio = self.store.allocate_folio(entity, serie, native.folio)
        year_text = native.tiempo_de_emision[:4]
        year = int(year_text) if year_text.isdigit() else datetime.fromtimestamp(issued_at, MEXICO).year
        return IssuedDocument(
            native=native,
            entity=entity,
            guid=str(uuid.uuid4()),
            year=year,
            batch=serie,
            serial=folio,
            issued_at=issued_at,
        )

    # ASYNC_CONVERT_VERIFY

    def _async_convert_verify(self, request: SoapRequest, base_url: str) -> Answer:
        found = self._own_request(request)
        if isinstance(found, Answer):
            return found
        status = found.status(time.time())
        document = found.document if status == STATUS_ISSUED else None
        error = found.error_msg if status == 3 else None
        fields: list[tuple[str, str | int | None]] = [
            ("Entity", found.entity),
            ("Uuid", found.request_id),
            ("InternalID", found.internal_id),
            ("EnrolledTimeStamp", local_seconds(found.enrolled_at)),
            ("Status", status),
            ("DocumentGUID", document.guid if document else None),
            ("Year", document.year if document else None),
            ("Batch", document.batch if document else None),
            ("Serial", document.serial if document else None),
            ("ErrorMsg", b64(error) if error is not None else None),
        ]
        return Answer(
            result=True,
            code=CODE_OK,
            response_data1=b64(_async_request_xml(fields)),
            response_data2=b64(_async_request_json(fields, found.enrolled_at, self.config().json_leading_space)),
        )

    def _own_request(self, request: SoapRequest) -> AsyncRequest | Answer:
        request_id = request.text("Data1")
        found = self.store.request_by_id(request_id) if request_id else None
        if found is None or found.entity != request.text("Entity"):
            return fail(
                CODE_UNKNOWN_REQUEST,
                "No existe una solicitud asíncrona con el identificador proporcionado.",
                "Solicitud no encontrada",
            )
        return found

    # ASYNC_RETRIEVE_DOCUMENT

    def _async_retrieve_document(self, request: SoapRequest, base_url: str) -> Answer:
        found = self._own_request(request)
        if isinstance(found, Answer):
            return found
        status = found.status(time.time())
        if status != STATUS_ISSUED or found.document is None:
            return fail(
                CODE_NOT_READY,
                f"La solicitud no ha sido procesada con éxito (Status {status}).",
                "Documento no disponible",
            )
        ttl = self.config().link_ttl_seconds
        expires_at = time.time() + ttl
        identifier = _identifier(found.document)
        identifier["EnrolledTimeStamp"] = local_seconds(found.enrolled_at)
        identifier["InternalID"] = found.internal_id
        return Answer(
            result=True,
            code=CODE_OK,
            identifier=identifier,
            response_data1=b64(f"{base_url}/files/{self.sign(found.request_id, 'xml', expires_at)}"),
            response_data3=b64(f"{base_url}/files/{self.sign(found.request_id, 'pdf', expires_at)}"),
        )

    def sign(self, request_id: str, kind: str, expires_at: float) -> str:
        """A self-verifying link token: MYSuite keeps no link records, so neither does the simulator."""
        nonce = secrets.token_hex(6)
        body = f"{request_id}.{kind}.{int(expires_at * 1000)}.{nonce}"
        mac = hmac.new(self._link_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{mac}"

    def verify_token(self, token: str) -> LinkToken | None:
        parts = token.split(".")
        if len(parts) != 5:
            return None
        body, mac = ".".join(parts[:4]), parts[4]
        expected = hmac.new(self._link_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected) or parts[1] not in LINK_KINDS:
            return None
        return LinkToken(request_id=parts[0], kind=parts[1], expires_at=int(parts[2]) / 1000)

    def file_content(self, link: LinkToken) -> tuple[bytes, str, str] | None:
        """The bytes behind a link, built now from the stored ids: (content, media type, file name)."""
        if link.kind == "pkg":
            return self.descarga.package_content(link.request_id)
        found = self.store.request_by_id(link.request_id)
        if found is None or found.document is None:
            return None
        document = found.document
        if link.kind == "xml":
            content, media, name = cfdi_document(document), "application/xml", f"{document.guid}.xml"
        else:
            content, media, name = cfdi_pdf_document(document), "application/pdf", f"{document.guid}.pdf"
        if self.config().link_content == "zip":
            return zipped(name, content), "application/zip", name.rsplit(".", 1)[0] + f"_{link.kind}.zip"
        return content, media, name

    # Descarga Masiva (sync endpoint; see sandbox.mysuite.descarga)

    def _registrar_solicitud_dm_sat(self, request: SoapRequest, base_url: str) -> Answer:
        return self.descarga.register(request.text("Entity"), request.get("Data1") or "")

    def _obtener_solicitud_dm_sat(self, request: SoapRequest, base_url: str) -> Answer:
        return self.descarga.get_request(request.text("Entity"), request.text("Data1"))

    def _obtener_link_archivo_dm_sat(self, request: SoapRequest, base_url: str) -> Answer:
        expires_at = time.time() + self.config().link_ttl_seconds

        def link(package_id: str) -> str:
            return f"{base_url}/files/{self.sign(package_id, 'pkg', expires_at)}"

        return self.descarga.get_link(request.text("Entity"), request.text("Data1"), request.text("Data2"), link)

    def _obtener_lista_solicitudes_dm_sat(self, request: SoapRequest, base_url: str) -> Answer:
        return self.descarga.list_requests(request.text("Entity"), request.get("Data1") or "")

    # CONVERT_NATIVE_XML (sync)

    def _convert_native_xml(self, request: SoapRequest, base_url: str) -> Answer:
        formats = request.text("Data2").upper().split()
        if any(item not in ("XML", "PDF") for item in formats):
            return fail(CODE_BAD_PARAMETER, "Data2 debe ser XML, PDF o 'XML PDF'.", "Parámetro inválido")
        data1 = (request.get("Data1") or "").strip()
        try:
            raw = data1.encode("utf-8") if data1.startswith("<") else decode_base64(data1)
            native = parse_native(raw)
        except NativeError as exc:
            self.store.count_sync_call(None)
            return _invalid_document(exc)
        del raw, data1
        self.store.count_sync_call(native.numero_interno)
        entity = request.text("Entity")
        now = time.time()
        document = self._issue(native, entity, issued_at=now)
        self.store.add_issued(document)
        return _document_answer(document, formats)

    # LOOKUP_ISSUED_INTERNAL_ID

    def _lookup_issued_internal_id(self, request: SoapRequest, base_url: str) -> Answer:
        internal_id = request.text("Data1")
        if not internal_id:
            return fail(CODE_BAD_PARAMETER, "Data1 debe contener el número interno a buscar.", "Parámetro inválido")
        found = self.store.lookup_internal_id(request.text("Entity"), internal_id, time.time())
        if not found:
            return Answer(result=True, code=CODE_OK, response_data1="0")
        rows = "".join(
            f'<Document uuid="{doc.guid}" batch="{_attr(doc.batch)}" serial="{_attr(doc.serial)}" />' for doc in found
        )
        listing = f'<?xml version="1.0" encoding="utf-8"?><Documents>{rows}</Documents>'
        return Answer(result=True, code=CODE_OK, response_data1=str(len(found)), response_data2=b64(listing))

    # GET_DOCUMENT

    def _get_document(self, request: SoapRequest, base_url: str) -> Answer:
        formats = request.text("Data3").upper().split() or ["XML"]
        if any(item not in ("XML", "PDF") for item in formats):
            return fail(CODE_BAD_PARAMETER, "Data3 debe ser XML, PDF o 'XML PDF'.", "Parámetro inválido")
        document = self.store.lookup_serial(
            request.text("Entity"), request.text("Data1"), request.text("Data2"), time.time()
        )
        if document is None:
            return fail(CODE_NOT_FOUND, "No se encontró un documento con la serie y folio indicados.", "No encontrado")
        return _document_answer(document, formats)


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _identifier(document: IssuedDocument) -> dict[str, str]:
    return {
        "Country": "MX",
        "Entity": document.entity,
        "Batch": document.batch,
        "Serial": document.serial,
        "DocumentGUID": document.guid,
        "IssuedTimeStamp": local_seconds(document.issued_at),
    }


def _document_answer(document: IssuedDocument, formats: list[str]) -> Answer:
    identifier = _identifier(document)
    if document.native.numero_interno:
        identifier["InternalID"] = document.native.numero_interno
    return Answer(
        result=True,
        code=CODE_OK,
        identifier=identifier,
        response_data1=b64(cfdi_document(document)) if "XML" in formats else None,
        response_data3=b64(cfdi_pdf_document(document)) if "PDF" in formats else None,
    )


def cfdi_document(document: IssuedDocument) -> bytes:
    issued = local_seconds(document.issued_at)
    return cfdi_xml(
        document.native,
        uuid=document.guid,
        serie=document.batch,
        folio=document.serial,
        issued=document.native.tiempo_de_emision or issued,
        stamped=issued,
    )


def cfdi_pdf_document(document: IssuedDocument) -> bytes:
    native = document.native
    return cfdi_pdf(
        [
            "CFDI 4.0 - documento simulado (sandbox MYSuite)",
            f"Emisor: {native.rfc_emisor} {native.razon_social_emisor}",
            f"Receptor: {native.rfc_receptor} {native.nombre_receptor}",
            f"Serie: {document.batch}  Folio: {document.serial}",
            f"Folio fiscal: {document.guid}",
            f"Total: {native.total} {native.moneda}",
        ]
    )


def _async_request_xml(fields: list[tuple[str, str | int | None]]) -> str:
    """The verify payload as .NET XmlSerializer writes an `AsyncRequest` (nulls omitted, "" as `<X />`)."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<AsyncRequest xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
    ]
    for name, value in fields:
        if value is None:
            continue
        text = str(value)
        lines.append(f"  <{name} />" if text == "" else f"  <{name}>{_attr(text)}</{name}>")
    lines.append("</AsyncRequest>")
    return "\r\n".join(lines)


def _async_request_json(fields: list[tuple[str, str | int | None]], enrolled_at: int, leading_space: bool) -> str:
    """The verify payload as the seed shows it: `{ "K": v, ... }` with `/Date(ms)/` and JSON nulls."""
    items = []
    for name, value in fields:
        encoded: str
        if name == "EnrolledTimeStamp":
            encoded = f'"/Date({enrolled_at * 1000})/"'
        elif name == "InternalID" and leading_space:
            encoded = json.dumps(f" {value}")
        else:
            encoded = json.dumps(value)
        items.append(f'"{name}": {encoded}')
    return "{ " + ", ".join(items) + " }"
