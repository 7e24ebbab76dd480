"""Reading IntegracionAddendas answers: the SOAP envelope, the `servicioAddendas` string, the codes.

Everything here is pure and raises only our error classes. The answer format is known only from the
seed and the sibling services, so the reader is tolerant where the sources disagree or are silent:
the `servicioAddendas` document may come entity-escaped inside `<return>` (the JAX-WS convention of
the sibling services), wrapped in CDATA, or as an inline element; its values may be child elements
or attributes (the seed calls them both), in any letter case.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from lxml import etree

from providers.base import AuthError, PermanentError, ProviderError, RateLimitedError, TransientError
from providers.xml import clip, parse_untrusted

SOAP_ENVELOPE_NAMESPACES = frozenset(
    {"http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"}
)

CODE_OK = 0
AUTH_CODES = frozenset({1, 2})
"""1: unknown user or wrong password. 2: the seed repeats that text; in the timbrado table it is an
invalid or expired contract. Either way the credentials are wrong and three of them lock the account."""
PERMANENT_CODES = frozenset({3, 6})
"""3: a parameter is wrong or missing. 6: the file could not be processed (the data is wrong)."""
TRANSIENT_CODES = frozenset({5, 7})
"""5: off-line for maintenance. 7 is "service unavailable" in Prodigia's timbrado table; not listed
for addendas, but if it ever comes it means the same thing."""

_LOCK_MARKERS = ("bloque", "contraseña", "contrasena", "password", "credencial", "usuario", "contrato")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_CODE = re.compile(r"[+-]?\d{1,9}")


@dataclass(frozen=True)
class AddendaAnswer:
    """One `servicioAddendas`, read but not judged: `codigo` may say the call failed.

    `xml` is the decoded `xmlBase64` (None when absent or empty).
    """

    codigo: int
    id: str | None = None
    contrato: str | None = None
    mensaje: str | None = None
    xml: bytes | None = None

    @property
    def ok(self) -> bool:
        """Success as the seed defines it: code 0 and a document."""
        return self.codigo == CODE_OK and bool(self.xml)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(element: Any) -> str | None:
    if element is None:
        return None
    value = "".join(element.itertext()).strip()
    return value or None


def _parse(content: bytes, what: str) -> Any:
    return parse_untrusted(content, f"Prodigia {what}", TransientError)


def _raise_fault(fault: Any) -> NoReturn:
    # SOAP 1.1 puts faultcode/faultstring at the top; SOAP 1.2 nests Code/Value and Reason/Text.
    values = {_local(child.tag).lower(): child for child in fault}
    code = _text(values.get("faultcode"))
    reason = _text(values.get("faultstring"))
    if code is None and values.get("code") is not None:
        code = _text(values["code"])
    if reason is None:
        reason = _text(values.get("reason"))
    raise TransientError("Prodigia answered with a SOAP fault", code=clip(code, 80), description=clip(reason))


def _service_answer(body: Any) -> Any:
    """The `servicioAddendas` element inside the body, however the String was carried."""
    for element in body.iter():
        if _local(element.tag).lower() == "servicioaddendas":
            return element  # inline element (or a response without the <return> wrapper)
    result = None
    for element in body.iter():
        if _local(element.tag) == "return":
            result = element
            break
    if result is None:
        raise TransientError("Prodigia answer has no <return>")
    text = _text(result)
    if text is None:
        raise TransientError("Prodigia answer has an empty <return>")
    # The String was unescaped once by the XML parser (or was CDATA). A declaration inside it names
    # the encoding of bytes we no longer have, so it is dropped and the text is read as Unicode.
    inner = _parse(_DECLARATION.sub("", text, count=1).strip().encode("utf-8"), "servicioAddendas")
    if _local(inner.tag).lower() != "servicioaddendas":
        raise TransientError("Prodigia <return> does not hold a servicioAddendas document")
    return inner


def _fields(answer: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in answer.attrib.items():
        if value.strip():
            values[_local(name).lower()] = value.strip()
    for child in answer:
        value = _text(child)
        if value is not None:
            values.setdefault(_local(child.tag).lower(), value)
    return values


def decode_xml_base64(value: str) -> bytes:
    """Decode the base64 the service wrote, ignoring whitespace and line breaks inside it."""
    compact = re.sub(r"\s+", "", value)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise TransientError("Prodigia xmlBase64 is not valid base64") from None


def parse_answer(content: bytes) -> AddendaAnswer:
    """Read a `procesar…Response` envelope; SOAP faults and anything unreadable are TransientError."""
    root = _parse(content, "answer")
    if _local(root.tag) != "Envelope" or etree.QName(root).namespace not in SOAP_ENVELOPE_NAMESPACES:
        raise TransientError("Prodigia answer is not a SOAP envelope")
    body = next((child for child in root if _local(child.tag) == "Body"), None)
    if body is None:
        raise TransientError("Prodigia answer has no SOAP body")
    fault = next((child for child in body if _local(child.tag) == "Fault"), None)
    if fault is not None:
        _raise_fault(fault)
    values = _fields(_service_answer(body))
    code = values.get("codigo")
    if code is None or not _CODE.fullmatch(code):
        raise TransientError("Prodigia answer has no readable codigo")
    encoded = values.get("xmlbase64")
    return AddendaAnswer(
        codigo=int(code),
        id=clip(values.get("id"), 100),
        contrato=clip(values.get("contrato"), 100),
        mensaje=clip(values.get("mensaje")),
        xml=decode_xml_base64(encoded) if encoded else None,
    )


def refusal(answer: AddendaAnswer, operation: str) -> ProviderError:
    """The error a non-successful answer means, by code (see the code sets above).

    Codes outside the documented ones are permanent (an operator looks before anything is resent),
    unless the message speaks of users, passwords, contracts or locks: then they are treated as an
    auth failure, because guessing wrong the other way is what locks an account.
    """
    code = str(answer.codigo)
    message = answer.mensaje
    if answer.codigo == CODE_OK:
        return TransientError(f"Prodigia {operation} answered code 0 without a document", code=code)
    if answer.codigo in AUTH_CODES:
        return AuthError(
            f"Prodigia refused the credentials ({operation}); not retried: 3 refusals lock the account",
            code=code,
            description=message,
        )
    if answer.codigo in TRANSIENT_CODES:
        return TransientError(f"Prodigia is off-line for maintenance ({operation})", code=code, description=message)
    if answer.codigo in PERMANENT_CODES:
        return PermanentError(f"Prodigia refused {operation}", code=code, description=message)
    lowered = (message or "").lower()
    if any(marker in lowered for marker in _LOCK_MARKERS):
        return AuthError(f"Prodigia refused {operation} (credentials, by its message)", code=code, description=message)
    return PermanentError(f"Prodigia refused {operation} with an undocumented code", code=code, description=message)


def interpret_http_answer(status: int, headers: Mapping[str, str], body: bytes) -> AddendaAnswer:
    """Classify one HTTP answer; a readable `servicioAddendas` wins over the status code.

    JAX-WS answers SOAP faults with HTTP 500, so 5xx bodies are read first. 429 and 401/403 mean
    the same whatever the body says.
    """
    if status == 429:
        raise RateLimitedError("Prodigia asked to slow down (HTTP 429)")
    if status in (401, 403):
        raise AuthError(f"Prodigia refused the request (HTTP {status})")
    try:
        return parse_answer(body)
    except TransientError as exc:
        if status >= 500 or 200 <= status < 300 or status in (408, 425, 499):
            raise TransientError(
                f"Prodigia HTTP {status}: {exc.message}", code=exc.code, description=exc.description
            ) from None
        raise PermanentError(f"Prodigia answered HTTP {status}") from None
