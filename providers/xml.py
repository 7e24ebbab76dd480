"""Reading XML we did not write (provider answers, CFDI from callers), one way for every client.

The parser resolves no entities, loads no DTD and opens no network connection; a document that
declares a DOCTYPE is refused outright, since SOAP forbids one in a message and left unresolved its
entity references would turn up as nodes that are not elements. huge_tree only lifts libxml2's
10 MB text-node limit (base64 PDFs in answers); with entity resolution off it opens no expansion
attack, and every input is size-bounded before parsing.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from providers import answers
from providers.base import ProviderError

MAX_TEXT = 300


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """Keep provider texts short enough for one log line and one event row, control characters out."""
    return answers.message(text, limit)


def parse_untrusted(content: bytes, what: str, error: type[ProviderError]) -> Any:
    """The root element of `content`, or `error` naming `what` when it is malformed, empty or has a DOCTYPE."""
    try:
        root = etree.fromstring(content, parser=safe_parser())
    except (etree.LxmlError, ValueError) as exc:
        raise error(f"{what} is not well-formed XML: {clip(str(exc), 120)}") from None
    if root is None:
        raise error(f"{what} is empty")
    if root.getroottree().docinfo.doctype:
        raise error(f"{what} carries a DOCTYPE")
    return root
