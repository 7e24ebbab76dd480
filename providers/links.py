"""Download links are URLs a provider chose, so they are checked before and while they are fetched.

A provider (or whoever sits between us and it) can hand out a link to any address: an internal
admin page, a cloud metadata endpoint, a file of gigabytes, an HTML error page. `LinkPolicy` decides
which links may be fetched, and how much of what may come back:

- the scheme is https; http only where the provider itself is configured over http (the sandbox,
  a test stack) or `EINVOICE_ALLOW_HTTP_LINKS` says so;
- the host and port are those of one of the provider's configured URLs, or listed in
  `EINVOICE_LINK_HOSTS` (comma-separated `host` or `host:port`; a host without a port means the
  default ports): MYSuite's link host is not documented, so production installs name it there.
  The port counts: another port of the provider's host is another service (`127.0.0.1:8080` for
  the provider does not allow `127.0.0.1:9000/internal-admin`);
- redirects are followed only to links that pass the same check, at most
  `EINVOICE_LINK_MAX_REDIRECTS` (default 3) times: a storage front may redirect within itself, but a
  redirect is never a way around the host list;
- the body is capped per file type while it streams (`EINVOICE_LINK_MAX_XML_BYTES`,
  `…_PDF_BYTES` default 50 MiB, `…_ZIP_BYTES` default 1 GiB), and checked once whole: XML
  well-formed (no DTD, no entities, no network), PDF starting with `%PDF` and ending with `%%EOF`,
  ZIP with a readable central directory and members whose CRCs match.

Refusals are `PermanentError`s for that link, never for the job: a link to another host, a body of
the wrong type or over the cap will be the same however often it is fetched, so it is neither
retried in-call nor counted as the provider being down. The pipeline records the refusal on the
job, keeps the job `issued`, and asks the provider again later, which hands out new links; the
provider may well give a good one next time. A body that is merely cut short (a truncated ZIP or
PDF, XML that stops mid-element) is a `TransientError`, as the next fetch usually arrives whole.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from lxml import etree

from providers.base import PermanentError, TransientError, read_setting
from providers.http import Wire

MIB = 1 << 20
XML, PDF, ZIP = "application/xml", "application/pdf", "application/zip"
DEFAULT_MAX_BYTES: Mapping[str, int] = {XML: 50 * MIB, PDF: 50 * MIB, ZIP: 1024 * MIB}
MAX_ZIP_MEMBERS = 16
"""A provider's ZIP holds one document (the seed: "one file per ZIP"); a few more are tolerated."""
DEFAULT_PORTS = {"https": 443, "http": 80}
_SETTING_FOR_TYPE = {XML: "XML", PDF: "PDF", ZIP: "ZIP"}


class UnsafeLink(PermanentError):
    """A link the policy does not allow: scheme, host, port, credentials or too many redirects."""


class UnexpectedContent(PermanentError):
    """A body that is not a file we archive: unknown type, larger than its cap, a DTD in XML."""


@dataclass(frozen=True)
class LinkPolicy:
    """Which links may be fetched and how large each file type may be (see the module docstring)."""

    origins: frozenset[tuple[str, int]]
    allow_http: bool = False
    max_bytes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_BYTES))
    max_redirects: int = 3

    @classmethod
    def for_provider(cls, urls: Iterable[str], environ: Mapping[str, str] | None = None) -> LinkPolicy:
        """The policy for a provider configured with `urls`, plus the `EINVOICE_LINK_*` settings."""
        origins: set[tuple[str, int]] = set()
        plain_http = False
        for url in urls:
            parsed = httpx.URL(url)
            if parsed.scheme in DEFAULT_PORTS and parsed.host:
                ports = DEFAULT_PORTS.values() if parsed.port is None else [parsed.port]
                origins.update((_host(parsed), port) for port in ports)
                plain_http = plain_http or parsed.scheme == "http"
        for entry in (read_setting("EINVOICE_LINK_HOSTS", "", environ) or "").split(","):
            origins |= _listed(entry.strip())
        allow = (read_setting("EINVOICE_ALLOW_HTTP_LINKS", "", environ) or "").strip().lower()
        caps = {
            kind: _integer(f"EINVOICE_LINK_MAX_{name}_BYTES", DEFAULT_MAX_BYTES[kind], environ)
            for kind, name in _SETTING_FOR_TYPE.items()
        }
        return cls(
            origins=frozenset(origins),
            allow_http=plain_http or allow in ("1", "true", "yes", "on"),
            max_bytes=caps,
            max_redirects=_integer("EINVOICE_LINK_MAX_REDIRECTS", 3, environ, minimum=0),
        )

    def check(self, url: str | httpx.URL) -> httpx.URL:
        """The parsed link if it may be fetched, else `UnsafeLink` (the message never holds the link)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise UnsafeLink("download link is not a URL") from None
        scheme = parsed.scheme
        if scheme not in DEFAULT_PORTS:
            raise UnsafeLink("download link is not an http(s) URL")
        if scheme == "http" and not self.allow_http:
            raise UnsafeLink("download link is plain http; only https links are fetched")
        if parsed.userinfo:
            raise UnsafeLink("download link carries credentials")
        if not parsed.host:
            raise UnsafeLink("download link has no host")
        host, port = _host(parsed), parsed.port or DEFAULT_PORTS[scheme]
        if (host, port) not in self.origins:
            raise UnsafeLink(
                f"download link points to {_shown(host)}:{port}, which is not one of the provider's hosts "
                "nor in EINVOICE_LINK_HOSTS"
            )
        return parsed

    def cap(self, content_type: str) -> int:
        return self.max_bytes.get(content_type, max(self.max_bytes.values()))


@contextmanager
def open_link(http: Wire, url: str, policy: LinkPolicy, timeout: httpx.Timeout) -> Iterator[httpx.Response]:
    """GET a link as a stream, following only redirects whose target passes the policy too.

    The response handed out is the final one, whatever its status; the caller reads and closes it
    through this context. A body over the largest cap by its own Content-Length is refused unread.
    """
    target = policy.check(url)
    for _ in range(policy.max_redirects + 1):
        with http.stream("GET", target, timeout) as response:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise UnsafeLink(f"download link redirects (HTTP {response.status_code}) without a location")
                target = policy.check(target.join(location))
                continue
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max(policy.max_bytes.values()):
                raise UnexpectedContent(f"download announces {int(declared)} bytes, more than any cap allows")
            yield response
            return
    raise UnsafeLink(f"download link redirects more than {policy.max_redirects} times")


def check_content(path: Path, content_type: str, policy: LinkPolicy, *, max_members: int = MAX_ZIP_MEMBERS) -> None:
    """Refuse a file that arrived whole at the HTTP level but is not a whole file of its type.

    `max_members` bounds a ZIP's entries: one document for an invoice's files, up to SAT's
    package limit for Descarga Masiva.
    """
    if content_type == XML:
        _check_xml(path)
    elif content_type == PDF:
        _check_pdf(path)
    elif content_type == ZIP:
        _check_zip(path, policy, max_members)
    else:
        raise UnexpectedContent("download is neither XML, PDF nor ZIP")


def _check_xml(path: Path) -> None:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=True
    )
    try:
        tree = etree.parse(str(path), parser=parser)
    except (etree.LxmlError, ValueError, OSError):
        raise TransientError("downloaded XML is not well-formed (cut short?)") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnexpectedContent("downloaded XML declares a DOCTYPE")


def _check_pdf(path: Path) -> None:
    with path.open("rb") as pdf:
        if not pdf.read(8).lstrip().startswith(b"%PDF"):
            raise UnexpectedContent("downloaded PDF does not start with %PDF")
        pdf.seek(max(0, path.stat().st_size - 1024))
        if b"%%EOF" not in pdf.read():
            raise TransientError("downloaded PDF is cut short")


def _check_zip(path: Path, policy: LinkPolicy, max_members: int) -> None:
    """Central directory, member count and declared sizes first, then every member's CRC.

    Declared sizes bound the work of the CRC pass (zipfile never inflates past them), so a small
    ZIP that would inflate to terabytes is refused before a byte is inflated.
    """
    largest = max(policy.cap(XML), policy.cap(PDF))
    try:
        with zipfile.ZipFile(path) as bundle:
            members = bundle.infolist()
            if not members or len(members) > max_members:
                raise UnexpectedContent(f"downloaded ZIP holds {len(members)} files, not 1 to {max_members}")
            if any(member.file_size > largest for member in members):
                raise UnexpectedContent(f"downloaded ZIP holds a file larger than {largest} bytes")
            damaged = bundle.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, OSError, EOFError, ValueError):
        damaged = "archive"
    if damaged is not None:
        raise TransientError("downloaded ZIP is damaged")


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii", "replace").lower().rstrip(".")


def _listed(entry: str) -> set[tuple[str, int]]:
    if not entry:
        return set()
    parsed = httpx.URL(f"//{entry}")
    if not parsed.host or parsed.path not in ("", "/") or parsed.userinfo:
        raise ValueError(f"EINVOICE_LINK_HOSTS entry {entry!r} must be host or host:port")
    host = _host(parsed)
    if parsed.port is not None:
        return {(host, parsed.port)}
    return {(host, port) for port in DEFAULT_PORTS.values()}


def _integer(name: str, default: int, environ: Mapping[str, str] | None, minimum: int = 1) -> int:
    raw = (read_setting(name, "", environ) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
    return value


def _shown(host: str) -> str:
    return host[:60].encode("unicode_escape").decode("ascii")
