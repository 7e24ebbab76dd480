"""Local checks that keep a document MYSuite would refuse (or that could hurt us) from ever being sent.

The document is checked for well-formedness with a SAX-style target parser fed in slices, so a
40 MB payload is read once and no tree is built: validation costs time proportional to the size
but no memory beyond the payload the caller already holds.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from providers.base import InvalidPayload, internal_id_problem

FX_NS = "http://www.fact.com.mx/schema/fx"
ROOT_TAG = f"{{{FX_NS}}}FactDocMX"
_FEED_SLICE = 1 << 20
_HEAD_BYTES = 64 << 10
_HEAD_SLICE = 1 << 10


def check_internal_id(internal_id: str) -> None:
    """MYSuite's Data2 ("número interno") is the internal id: mandatory, the common rule."""
    problem = internal_id_problem(internal_id)
    if problem:
        raise InvalidPayload(f"{problem} (MYSuite Data2)")


class _WellFormed:
    """Parser target that refuses any DOCTYPE as soon as it is seen and otherwise only listens.

    It has no `start`: lxml then calls no Python code per element, and the whole check runs at
    libxml2's speed (about three times faster than a target that sees every element).
    """

    def doctype(self, name: str | None, public_id: str | None, system_id: str | None) -> None:
        raise InvalidPayload("document has a DOCTYPE; MYSuite native XML never needs one")

    def close(self) -> None:
        return None


class _RootProbe(_WellFormed):
    """The same, remembering the root tag: for the rare document whose root start tag is huge."""

    def __init__(self) -> None:
        self.root: str | None = None

    def start(self, tag: str, attrib: Any, nsmap: Any = None) -> None:
        if self.root is None:
            self.root = tag

    def close(self) -> None:
        return None


def _root_from_head(payload: bytes | bytearray) -> str | None:
    """The root tag read from the document's first bytes, or None if it does not show there."""
    parser = etree.XMLPullParser(
        events=("start",), resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True
    )
    try:
        # Small slices: the root's start tag is usually in the first few hundred bytes, and the pull
        # parser would otherwise build a tree of everything fed to it.
        for start in range(0, min(len(payload), _HEAD_BYTES), _HEAD_SLICE):
            parser.feed(bytes(payload[start : start + _HEAD_SLICE]))
            for _, element in parser.read_events():
                return str(element.tag)
    except (etree.LxmlError, ValueError):
        return None  # the full parse reports what is wrong
    return None


def _describe(size: int) -> str:
    if size % (1 << 20) == 0:
        return f"{size} bytes ({size >> 20} MiB)"
    return f"{size} bytes"


def check_payload(payload: bytes, max_bytes: int, environment: str) -> None:
    """Size first (cheap, and bounds the parse), then well-formedness, DOCTYPE and the root element."""
    if not isinstance(payload, bytes):
        raise InvalidPayload("document must be bytes")
    size = len(payload)
    if size == 0:
        raise InvalidPayload("document is empty")
    if size > max_bytes:
        raise InvalidPayload(
            f"document is {size} bytes; the MYSuite {environment} environment accepts at most {_describe(max_bytes)}"
        )
    root = _root_from_head(payload)
    probe = _WellFormed() if root is not None else _RootProbe()
    parser = etree.XMLParser(target=probe, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    view = memoryview(payload)
    try:
        for start in range(0, size, _FEED_SLICE):
            parser.feed(bytes(view[start : start + _FEED_SLICE]))
        parser.close()
    except InvalidPayload:
        raise
    except (etree.LxmlError, ValueError) as exc:
        # libxml2 messages name tags and positions, never the text content of the document.
        raise InvalidPayload(f"document is not well-formed XML: {str(exc)[:200]}") from None
    if isinstance(probe, _RootProbe):
        root = probe.root
    if root != ROOT_TAG:
        shown = (root or "nothing")[:120]
        raise InvalidPayload(f"document root is {shown}; MYSuite expects {ROOT_TAG}")


class _InternalNumberProbe:
    """Parser target that picks `fx:Identificacion/fx:NumeroInterno` out of a native document."""

    _PATH = (ROOT_TAG, f"{{{FX_NS}}}Identificacion", f"{{{FX_NS}}}NumeroInterno")

    def __init__(self) -> None:
        self._path: list[str] = []
        self._text: list[str] = []
        self.value: str | None = None

    def start(self, tag: str, attrib: Any, nsmap: Any = None) -> None:
        self._path.append(tag)

    def end(self, tag: str) -> None:
        if self.value is None and tuple(self._path) == self._PATH:
            self.value = "".join(self._text).strip() or None
        self._path.pop()

    def data(self, text: str) -> None:
        if self.value is None and tuple(self._path) == self._PATH:
            self._text.append(text)

    def close(self) -> str | None:
        return self.value


def native_internal_number(payload: bytes) -> str | None:
    """The document's own NumeroInterno, which is what LOOKUP_ISSUED_INTERNAL_ID searches for.

    Only used on the sync path (documents of at most about 1 MiB), where the per-node callbacks cost
    nothing worth measuring. Returns None for a document without one or that cannot be read.
    """
    probe = _InternalNumberProbe()
    parser = etree.XMLParser(target=probe, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    try:
        parser.feed(payload)
        result: str | None = parser.close()
    except (etree.LxmlError, ValueError):
        return None
    return result
