"""MYSuite Descarga Masiva: register SAT bulk-download requests, follow them, fetch their packages.

The four transactions go to the same FactWSFront endpoint as CONVERT_NATIVE_XML (the sync URL),
through the `MySuiteClient` of this process: its envelopes, connection pool, error classification,
in-call retries and streaming download are reused, not copied.

Only the read-only calls (OBTENER_*, the package download) are retried in-call. REGISTRAR is not:
a registration whose answer was lost may have counted against SAT's "same period twice" limit, so
the caller decides (a resend meets either the 5005 of the active request, which is adopted, or a
fresh registration, which is what was wanted).
"""

from __future__ import annotations

import base64
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from providers.base import AuthError, PermanentError, TransientError, observed, read_setting
from providers.mysuite.client import PROVIDER, MySuiteClient
from providers.mysuite.config import MySuiteConfig
from providers.mysuite.descarga.rules import DownloadQuery, check_query
from providers.mysuite.descarga.wire import (
    MaxDownloadsReached,
    Registration,
    RequestPage,
    RequestStatus,
    dictionary,
    is_max_downloads,
    list_filters,
    parse_link,
    parse_registrations,
    parse_request,
    parse_request_page,
)
from providers.mysuite.parsing import TransactionReply, refusal_error
from providers.mysuite.soap import EnvelopeBuilder

REGISTER = "REGISTRAR_SOLICITUD_DM_SAT"
GET_REQUEST = "OBTENER_SOLICITUD_DM_SAT"
GET_LINK = "OBTENER_LINK_ARCHIVO_DM_SAT"
LIST_REQUESTS = "OBTENER_LISTA_SOLICITUDES_DM_SAT"

MAX_PACKAGE_BYTES = 2 << 30
MAX_PACKAGE_ENTRIES = 1_000_000
"""A package holds at most SAT's limit of a request: 200,000 CFDI or 1,000,000 metadata lines."""
"""Default cap of one package on disk: 200,000 CFDI of a few kB each, deflated, stay far below it."""
MAX_FIEL_FILE_BYTES = 64 << 10


class FielMissing(AuthError):
    """The FIEL is not configured (or unreadable): no request can be signed until an operator fixes it."""


@dataclass(frozen=True)
class FielCredentials:
    """The taxpayer's e.firma (FIEL): certificate, private key and the key's password.

    They are sent to MYSuite, which signs SAT's requests with them, and go nowhere else: no field
    shows in `repr`, and nothing of ours writes them to a log, an event or the database.
    """

    certificate: bytes = field(repr=False)
    key: bytes = field(repr=False)
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return "FielCredentials(certificate=<redacted>, key=<redacted>, password=<redacted>)"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> FielCredentials:
        """`MYSUITE_FIEL_CER_FILE`, `MYSUITE_FIEL_KEY_FILE` (paths to the .cer and .key) and
        `MYSUITE_FIEL_PASSWORD` (or `MYSUITE_FIEL_PASSWORD_FILE`, which wins)."""

        env = os.environ if environ is None else environ

        def read(name: str) -> bytes:
            path = env.get(name, "").strip()
            if not path:
                raise FielMissing(f"{name} is not set")
            try:
                with open(path, "rb") as handle:
                    content = handle.read(MAX_FIEL_FILE_BYTES + 1)
            except OSError as exc:
                raise FielMissing(f"{name} cannot be read ({type(exc).__name__})") from None
            if not content or len(content) > MAX_FIEL_FILE_BYTES:
                raise FielMissing(f"{name} is empty or too large for a FIEL file")
            return content

        certificate = read("MYSUITE_FIEL_CER_FILE")
        key = read("MYSUITE_FIEL_KEY_FILE")
        try:
            password = read_setting("MYSUITE_FIEL_PASSWORD", None, environ)
        except OSError as exc:
            raise FielMissing(f"MYSUITE_FIEL_PASSWORD_FILE cannot be read ({type(exc).__name__})") from None
        if not password:
            raise FielMissing("MYSUITE_FIEL_PASSWORD is not set")
        return cls(certificate=certificate, key=key, password=password)


@dataclass(frozen=True)
class PackageFile:
    """A package archived on disk, verified as a ZIP that opens and whose members pass their CRC."""

    package_id: str
    path: Path
    sha256: str
    size: int
    entries: int


class DescargaClient:
    """The Descarga Masiva transactions, typed; holds no state beyond its credentials."""

    def __init__(self, mysuite: MySuiteClient, fiel: FielCredentials) -> None:
        self.mysuite = mysuite
        self._fiel = fiel
        self._envelopes: dict[str, EnvelopeBuilder] = {}

    def __repr__(self) -> str:
        return f"DescargaClient({self.mysuite!r})"

    @property
    def config(self) -> MySuiteConfig:
        return self.mysuite.config

    def close(self) -> None:
        self.mysuite.close()

    # -- calls -------------------------------------------------------------------------------

    def register(self, query: DownloadQuery, *, now: datetime | None = None) -> list[Registration]:
        """Check the v1.5 rules locally (`RuleViolation`), then register; one record per SAT request.

        Per-request refusals are values in the records (`Registration.error`: `PeriodExhausted`,
        `TooManyResults`, `SatRejected`, …); a failure of the call itself is raised.
        """
        check_query(query, now or datetime.now(UTC))
        start, end = query.period.wire()
        entries = [
            ("FielCer", _b64(self._fiel.certificate)),
            ("FielKey", _b64(self._fiel.key)),
            ("FielPass", self._fiel.password),
            ("Servicio", query.service.value),
            ("FechaInicial", start),
            ("FechaFinal", end),
            ("TipoSolicitud", query.kind.value),
            ("TipoTaxID", query.role.value),
            # Not in MYSuite's published key list: SAT's EstadoComprobante and RfcReceptores,
            # named as SAT names them.
            ("EstadoComprobante", query.status.value),
        ]
        if query.receiver_rfcs:
            entries.append(("RfcReceptores", ",".join(query.receiver_rfcs)))
        with observed(PROVIDER, "dm_register"):
            reply = self._call(REGISTER, dictionary("Params", entries), entity=query.rfc)
            return parse_registrations(reply.response_data1)

    def get_request(self, request_id: str, *, rfc: str | None = None) -> RequestStatus:
        """The request's SAT state, codes, CFDI count and package ids (`RequestStatus.outcome`).

        `rfc` is the taxpayer the request was registered for, when it is not the configured Entity.
        """
        _check_id(request_id)

        def once() -> RequestStatus:
            with observed(PROVIDER, "dm_verify"):
                reply = self._call(GET_REQUEST, request_id, entity=rfc)
                return parse_request(reply.response_data1, request_id)

        return self.mysuite._retrying(once)

    def list_requests(
        self,
        *,
        page: int = 1,
        page_size: int = 50,
        filters: Sequence[tuple[str, str, str, str]] = (),
        order: str = "FechaRegistro DESC",
        rfc: str | None = None,
    ) -> RequestPage:
        """A page of registered requests; `filters` are (Name, Oper, Value1, Value2) as MYSuite takes them."""
        if page < 1 or not 1 <= page_size <= 1000:
            raise PermanentError("page must be at least 1 and page_size between 1 and 1000")
        entries = [
            ("Page", str(page)),
            ("PageSize", str(page_size)),
            ("ResponseFormat", "JSON"),
            ("Oper", "BOTH"),
            ("Order", order),
        ]
        if filters:
            entries.append(("Filters", list_filters(filters)))

        def once() -> RequestPage:
            with observed(PROVIDER, "dm_list"):
                reply = self._call(LIST_REQUESTS, dictionary("Pars", entries), entity=rfc)
                return parse_request_page(reply.response_data1)

        return self.mysuite._retrying(once)

    def package_link(self, request_id: str, package_id: str, *, rfc: str | None = None) -> str:
        """A fresh download link of one package (a secret: never log it)."""
        _check_id(request_id)
        _check_id(package_id)

        def once() -> str:
            with observed(PROVIDER, "dm_link"):
                reply = self._call(GET_LINK, request_id, package_id, entity=rfc)
                return parse_link(reply.response_data1)

        return self.mysuite._retrying(once)

    def download_package(
        self,
        request_id: str,
        package_id: str,
        dest: Path,
        *,
        max_bytes: int = MAX_PACKAGE_BYTES,
        rfc: str | None = None,
    ) -> PackageFile:
        """Fetch a link and stream the package to `dest`, then prove it is a sound ZIP.

        The file is written atomically (a crash leaves no half package at `dest`) and hashed as it
        is written. A package that does not open, or whose members fail their CRC, is removed and
        raised as `TransientError`: the copy went wrong, not the package.
        """
        url = self.package_link(request_id, package_id, rfc=rfc)
        return self.fetch_package(package_id, url, dest, max_bytes=max_bytes)

    def fetch_package(
        self, package_id: str, url: str, dest: Path, *, max_bytes: int = MAX_PACKAGE_BYTES
    ) -> PackageFile:
        """Stream a package from a link `package_link` gave, and prove it is a sound ZIP.

        Fetching the same link again costs no SAT download: a transfer cut short is resumed this way.
        """
        result = self.mysuite.download(url, Path(dest), max_bytes=max_bytes, max_members=MAX_PACKAGE_ENTRIES)
        try:
            entries = verify_zip(result.path)
        except TransientError:
            result.path.unlink(missing_ok=True)
            raise
        return PackageFile(package_id, result.path, result.sha256, result.size, entries)

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, transaction: str, data1: str, data2: str = "", *, entity: str | None) -> TransactionReply:
        reply = self.mysuite._exchange(
            self.config.sync_url, transaction, data1, data2, envelopes=self._envelopes_for(entity)
        )
        if not reply.result:
            if is_max_downloads(reply.data, reply.description, reply.hint):
                raise MaxDownloadsReached(
                    "SAT will not hand this package out again", code=reply.code, data="Maximo de descargas permitidas"
                )
            raise refusal_error(reply, transaction)
        return reply

    def _envelopes_for(self, entity: str | None) -> EnvelopeBuilder | None:
        if entity is None or entity == self.config.entity:
            return None
        builder = self._envelopes.get(entity)
        if builder is None:
            config = self.config
            username = config.username.replace(f".{config.entity}.", f".{entity}.")
            builder = EnvelopeBuilder(config.requestor, entity, config.user, username)
            self._envelopes[entity] = builder
        return builder


def verify_zip(path: Path) -> int:
    """Open the ZIP and check every member's CRC, streaming; returns the number of members."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            count = len(archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise TransientError(f"the downloaded package is not a readable ZIP ({type(exc).__name__})") from None
    if bad is not None:
        raise TransientError("the downloaded package has a damaged member")
    return count


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_id(value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9{}_\-]{1,100}", value):
        raise PermanentError("Descarga Masiva request or package id is malformed")


def from_env(environ: Mapping[str, str] | None = None) -> DescargaClient:
    """The client the worker builds: MYSuite settings plus the FIEL from its `*_FILE` settings."""
    return DescargaClient(MySuiteClient(MySuiteConfig.from_environ(environ)), FielCredentials.from_environ(environ))
