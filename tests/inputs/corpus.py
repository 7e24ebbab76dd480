"""What an ERP might send that must never be issued: each case with the outcome it must get.

`invalid`: a job is created in state `invalid` with a readable reason, and never sent.
`refused`: no job at all (nothing to key it on, or too large to keep), with a clear message.
`failed`: passes our local checks, is refused by the provider, and the job fails cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.samples import native_xml

PASSWD_MARK = "root:x:0:0"
"""What /etc/passwd starts with; it must never show up anywhere once an entity pointed at it."""

GOOD = native_xml("CORPUS-GOOD", 6000)


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    internal_id: str
    outcome: str
    reason: str  # a word the error message must contain (case-insensitive)


def _with_doctype(doctype: bytes, entity_in_body: bytes = b"") -> bytes:
    head, rest = GOOD.split(b"\n", 1)
    body = rest.replace(b"<fx:Usuario>einvoice</fx:Usuario>", b"<fx:Usuario>" + entity_in_body + b"</fx:Usuario>")
    return head + b"\n" + doctype + b"\n" + body


BILLION_LAUGHS = b"""<!DOCTYPE fx:FactDocMX [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"""

DEEP = (
    b"<fx:FactDocMX xmlns:fx='http://www.fact.com.mx/schema/fx'>"
    + b"<a>" * 60000
    + b"</a>" * 60000
    + b"</fx:FactDocMX>"
)

DOCUMENTS = [
    Case("not-xml", b"\x00\x01 this is not XML at all", "C-NOTXML", "invalid", "well-formed"),
    Case("billion-laughs", _with_doctype(BILLION_LAUGHS, b"&lol9;"), "C-LAUGHS", "invalid", "doctype"),
    Case(
        "external-entity-file",
        _with_doctype(b'<!DOCTYPE fx:FactDocMX [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', b"&xxe;"),
        "C-XXE",
        "invalid",
        "doctype",
    ),
    Case(
        "external-parameter-entity",
        _with_doctype(b'<!DOCTYPE fx:FactDocMX [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'),
        "C-XXEP",
        "invalid",
        "doctype",
    ),
    Case(
        "external-dtd",
        _with_doctype(b'<!DOCTYPE fx:FactDocMX SYSTEM "http://127.0.0.1:9/evil.dtd">'),
        "C-DTD",
        "invalid",
        "doctype",
    ),
    Case("plain-doctype", _with_doctype(b"<!DOCTYPE fx:FactDocMX>"), "C-DOCTYPE", "invalid", "doctype"),
    Case("wrong-root", b'<?xml version="1.0"?><Invoice><Total>1</Total></Invoice>', "C-ROOT", "invalid", "root"),
    Case(
        "root-without-namespace",
        GOOD.replace(b"fx:FactDocMX xmlns:fx", b"FactDocMX xmlns:fx").replace(b"</fx:FactDocMX>", b"</FactDocMX>"),
        "C-NONS",
        "invalid",
        "root",
    ),
    Case("empty", b"", "C-EMPTY", "invalid", "empty"),
    Case("whitespace", b" \n\t ", "C-BLANK", "invalid", "well-formed"),
    Case("truncated", GOOD[: len(GOOD) // 2], "C-CUT", "invalid", "well-formed"),
    Case(
        "not-utf8",
        GOOD.replace(b"PUBLICO EN GENERAL", b"P\xdaBLICO EN GENERAL \xff\xfe"),
        "C-LATIN1",
        "invalid",
        "well-formed",
    ),
    # 60 000 levels: our check builds no tree, so depth costs nothing here; the provider refuses it.
    Case("too-deep", DEEP, "C-DEEP", "failed", ""),
    Case("over-test-environment-limit", GOOD + b"<!--" + b"x" * (4 << 20) + b"-->", "C-5MB", "invalid", "4 mib"),
    Case("over-40-mb", b"<" + b"a" * (40 * 1024 * 1024 + 1), "C-41MB", "refused", "40 mb"),
    Case(
        "provider-refuses-content",
        b'<fx:FactDocMX xmlns:fx="http://www.fact.com.mx/schema/fx">' + b" " * 6000 + b"</fx:FactDocMX>",
        "C-HOLLOW",
        "failed",
        "",
    ),
]

IDS = [
    Case("empty-id", GOOD, "", "refused", "empty"),
    Case("blank-id", GOOD, "   ", "refused", "empty"),
    Case("long-id", GOOD, "X" * 51, "refused", "limit"),
    Case("tab-id", GOOD, "A\tB", "refused", "control"),
    Case("newline-id", GOOD, "A\nB", "refused", "control"),
    Case("nul-id", GOOD, "A\x00B", "refused", "control"),
    Case("escape-id", GOOD, "A\x1b[31mB", "refused", "control"),
    Case("bidi-override-id", GOOD, "A\u202eB", "refused", "control"),
    Case("surrogate-id", GOOD, "A\ud800B", "refused", "control"),
    Case("leading-space-id", GOOD, " A1", "refused", "spaces"),
]
