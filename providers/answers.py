"""Checks for the identifiers a provider hands back, before they reach a database column or a path.

A provider's answer is input like any other: a DocumentGUID of 300 characters overflows the
`doc_guid` column and, used in a file name, the file system; `../../x` is a path. Every value is
checked against its real format (a CFDI UUID, a 50-digit clave, a 20-digit consecutivo) and a
length that fits its column, and a value that fails raises `MalformedAnswer`.

`MalformedAnswer` is transient on purpose. The provider did answer, and the document may well be
issued on its side (a CONVERT_NATIVE_XML that issued a CFDI and then garbled its id): failing the
job would hide an issued document, while retrying asks again, adopts it through the provider's own
idempotency key once the answer is readable, and otherwise lets the job expire at its deadline
with every refused answer recorded as an error event.
"""

from __future__ import annotations

import re

from providers.base import TransientError

CFDI_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
"""The SAT's UUID (TimbreFiscalDigital/@UUID) and MYSuite's RequestID share this 8-4-4-4-12 form."""

MAX_MESSAGE = 2000
"""Longest provider text kept for an event: several lines of a rejection, never a whole document."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHOWN = 40


class MalformedAnswer(TransientError):
    """The provider answered with a value that is not what it must be (see the module docstring)."""

    answered = True


def _shown(value: str) -> str:
    """A refused value as it may appear in a message: bounded, control characters escaped."""
    escaped = value.encode("unicode_escape").decode("ascii")
    return escaped[: 2 * _SHOWN] + ("…" if len(escaped) > 2 * _SHOWN else "")


def refuse(what: str, value: object, why: str) -> MalformedAnswer:
    shown = _shown(value) if isinstance(value, str) else type(value).__name__
    return MalformedAnswer(f"{what} {why}: {shown!r}")


def uuid_text(value: object, what: str) -> str:
    """A CFDI UUID / MYSuite GUID in 8-4-4-4-12 hex; braces (a .NET habit) are dropped, case kept."""
    if not isinstance(value, str):
        raise refuse(what, value, "is missing")
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not CFDI_UUID.fullmatch(text):
        raise refuse(what, value, "is not a UUID (8-4-4-4-12 hex digits)")
    return text


def digits(value: object, what: str, length: int) -> str:
    """Exactly `length` ASCII digits (Hacienda clave: 50, consecutivo: 20)."""
    if not isinstance(value, str) or not re.fullmatch(rf"[0-9]{{{length}}}", value):
        raise refuse(what, value, f"is not {length} digits")
    return value


def year(value: object, what: str) -> int:
    """A four-digit calendar year; anything else would name a folder or fill a column with noise."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1900 <= value <= 9999:
        raise refuse(what, str(value), "is not a four-digit year")
    return value


def short_text(value: object, what: str, limit: int) -> str:
    """A short printable field (serie, folio): at most `limit` characters, no control characters.

    Limits are the format's own (CFDI 4.0 Serie 25, Folio 40), well inside the 100-character
    columns; a longer value is refused rather than cut, because a cut id names another document.
    """
    if not isinstance(value, str):
        raise refuse(what, value, "is missing")
    if not value or len(value) > limit:
        raise refuse(what, value, f"is empty or longer than {limit} characters")
    if _CONTROL.search(value):
        raise refuse(what, value, "contains control characters")
    return value


def message(text: str | None, limit: int = MAX_MESSAGE) -> str | None:
    """A provider's free text for an event: control characters replaced, cut to `limit`.

    Unlike ids, messages are kept when too long: the first lines of a rejection are what the
    operator needs, and a cut message names nothing.
    """
    if text is None:
        return None
    cleaned = _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else "\ufffd", text).strip()
    if not cleaned:
        return None
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
