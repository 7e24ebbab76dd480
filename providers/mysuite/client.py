"""The MYSuite client: async "Grandes Asíncrono" for large documents, sync CONVERT_NATIVE_XML for small.

Concurrency: one client is shared by every thread of a process. httpx's connection pool is
thread-safe and zeep envelope building is serialised by a lock; the pool is opened afresh in a
forked child (providers/http.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar

import httpx
import tenacity

from providers.answers import MalformedAnswer
from providers.base import (
    DownloadResult,
    FailureStreak,
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetrieveResult,
    SubmitResult,
    TransientError,
    VerifyResult,
    observed,
    verify_each,
)
from providers.http import ForkSafePool, Wire, read_capped, timeout
from providers.links import MAX_ZIP_MEMBERS, LinkPolicy, UnexpectedContent, check_content, open_link
from providers.mysuite.config import MySuiteConfig
from providers.mysuite.parsing import (
    DUPLICATE_CODE,
    LookupHit,
    TransactionReply,
    document_ids,
    interpret_http_answer,
    looks_like_base64,
    parse_issued_document,
    parse_links,
    parse_lookup,
    parse_request_id,
    parse_verify,
    refusal_error,
    sniff_content_type,
)
from providers.mysuite.soap import EnvelopeBuilder
from providers.mysuite.validation import check_internal_id, check_payload, native_internal_number
from providers.ratelimit import parse_retry_after

log = logging.getLogger(__name__)

PROVIDER = "mysuite"
OUTPUT_FORMATS = "XML PDF"
MAX_ANSWER_BYTES = 64 << 20
"""Largest SOAP answer read into memory; a sync answer carries a CFDI and its PDF, far below this."""
DOWNLOAD_CHUNK = 256 << 10
_SNIFF_BYTES = 64

T = TypeVar("T")


class LinkExpired(PermanentError):
    """A download link no longer works (HTTP 403/404/410): ask ASYNC_RETRIEVE_DOCUMENT for new ones.

    It is permanent for this URL only; the pipeline refreshes the links and downloads again.
    """


class DownloadTooLarge(PermanentError):
    """A download passed the caller's size cap; what was received is discarded."""


class _OriginOnlyUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; download links are secrets, so keep the origin only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], httpx.URL):
            url = args[1]
            record.args = (args[0], f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}/…", *args[2:])
        return True


def _install_url_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(item, _OriginOnlyUrls) for item in logger.filters):
        logger.addFilter(_OriginOnlyUrls())


_install_url_redaction()


class MySuiteClient:
    """`providers.base.Provider` for MYSuite FactWSFront (async host for large documents, sync for small)."""

    name = PROVIDER

    def __init__(self, config: MySuiteConfig, *, links: LinkPolicy | None = None) -> None:
        self.config = config
        self.links = links or LinkPolicy.for_provider([config.async_url, config.sync_url])
        self._envelopes = EnvelopeBuilder(config.requestor, config.entity, config.user, config.username)
        self._pool = ForkSafePool(self._open)
        # The web service and the file host can fail apart, so each has its own streak.
        self._soap_streak = FailureStreak(config.incall_attempts)
        self._file_streak = FailureStreak(config.incall_attempts)

    def __repr__(self) -> str:
        return f"MySuiteClient({self.config!r})"

    @property
    def entity(self) -> str:
        return self.config.entity

    batch_size = 50
    retrieve_in_verify = False
    polls_through_sweep = False

    def verify_many(self, request_ids: Sequence[str]) -> Mapping[str, VerifyResult | ProviderError]:
        """No batch endpoint: one call per id, over this client's kept-alive connections."""
        return verify_each(self, request_ids)

    # -- connection pool ---------------------------------------------------------------------

    def _open(self) -> Wire:
        return Wire(self.config.max_connections)

    def _client(self) -> Wire:
        return self._pool.client()

    def _timeout(self, read: float) -> httpx.Timeout:
        return timeout(self.config.connect_timeout, read)

    def close(self) -> None:
        self._pool.close()

    # -- the Provider contract ---------------------------------------------------------------

    def validate(self, payload: bytes, internal_id: str) -> None:
        check_internal_id(internal_id)
        check_payload(payload, self.config.max_payload_bytes, self.config.environment)

    def submit(self, payload: bytes, internal_id: str, *, attempt: int = 1) -> SubmitResult:
        """Send one document; large ones are queued (async), small ones come back issued (sync).

        Async submits are idempotent thanks to Data2 (a resend answers 3196 with the existing id).
        Sync converts are not, so a resend (`attempt > 1`) first asks whether the document was
        already issued and, if so, fetches it instead of issuing a second CFDI. MYSuite looks up the
        document's own `fx:NumeroInterno`, so that is the key when present (else the internal id):
        the ERP should put the internal id there for the guard to work.
        """
        self.validate(payload, internal_id)
        if len(payload) > self.config.async_min_bytes:
            return self._submit_async(payload, internal_id)
        if attempt > 1:
            hit = self._retrying(self._lookup, native_internal_number(payload) or internal_id)
            if hit is not None:
                return self._retrying(self._fetch_issued, hit)
        reply = self._transact(
            "convert", self.config.sync_url, "CONVERT_NATIVE_XML", payload, OUTPUT_FORMATS, upload=True
        )
        ids, files = parse_issued_document(reply, "CONVERT_NATIVE_XML")
        return SubmitResult(request_id=ids.guid or "", issued=ids, files=files)

    def verify(self, request_id: str) -> VerifyResult:
        _check_request_id(request_id)

        def once() -> VerifyResult:
            with observed(PROVIDER, "verify"):
                reply = self._exchange(self.config.async_url, "ASYNC_CONVERT_VERIFY", request_id)
                self._raise_refusal(reply, "ASYNC_CONVERT_VERIFY")
                return parse_verify(reply.response_data1, reply.response_data2, request_id)

        return self._retrying(once)

    def retrieve(self, request_id: str) -> RetrieveResult:
        """Fresh links (each call makes new ones, valid five days) and the fiscal ids if present."""
        _check_request_id(request_id)

        def once() -> RetrieveResult:
            asked_at = datetime.now(UTC)
            with observed(PROVIDER, "retrieve"):
                reply = self._exchange(self.config.async_url, "ASYNC_RETRIEVE_DOCUMENT", request_id)
                self._raise_refusal(reply, "ASYNC_RETRIEVE_DOCUMENT")
                links = parse_links(reply)
            return RetrieveResult(
                links=links,
                expires_at=asked_at + timedelta(seconds=self.config.link_ttl_seconds),
                document=document_ids(reply.identifier),
            )

        return self._retrying(once)

    def download(
        self, url: str, dest: Path, *, max_bytes: int | None = None, max_members: int = MAX_ZIP_MEMBERS
    ) -> DownloadResult:
        """Stream a link to `dest` (atomically), decoding base64 bodies, hashing what is written.

        The link, every redirect, the size and the content go through `self.links` (see
        `providers.links`): a refused link or body leaves no file behind. `max_bytes` caps the
        decoded file below the links' own cap, and `max_members` lifts the entry count of a ZIP
        (Descarga Masiva packages).
        """
        self.links.check(url)
        return self._retrying(self._download_once, url, Path(dest), max_bytes, max_members, streak=self._file_streak)

    # -- requests ----------------------------------------------------------------------------

    def _retrying(self, call: Callable[..., T], *args: object, streak: FailureStreak | None = None) -> T:
        """Short in-call retries of transient failures, for idempotent calls only, while the
        provider does not look down (`FailureStreak`; the file host's for downloads)."""
        streak = streak or self._soap_streak
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, TransientError) and not streak.provider_looks_down
            ),
            stop=tenacity.stop_after_attempt(self.config.incall_attempts),
            wait=tenacity.wait_exponential(multiplier=self.config.incall_wait, max=2.0),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        return retrying(call, *args)

    def _submit_async(self, payload: bytes, internal_id: str) -> SubmitResult:
        with observed(PROVIDER, "submit"):
            reply = self._exchange(self.config.async_url, "ASYNC_CONVERT_NATIVE_XML", payload, internal_id, upload=True)
            if reply.result:
                return SubmitResult(request_id=parse_request_id(reply.response_data1))
            if reply.code == DUPLICATE_CODE:
                try:
                    request_id = parse_request_id(reply.response_data1)
                except MalformedAnswer:
                    raise  # the provider holds the document: ask again rather than fail it
                except TransientError:
                    raise PermanentError(
                        "MYSuite says the internal id is registered but gives no request id",
                        code=reply.code,
                        data=reply.data,
                    ) from None
                return SubmitResult(request_id=request_id, adopted=True)
            raise refusal_error(reply, "ASYNC_CONVERT_NATIVE_XML")

    def _lookup(self, internal_id: str) -> LookupHit | None:
        reply = self._transact("lookup", self.config.sync_url, "LOOKUP_ISSUED_INTERNAL_ID", internal_id)
        return parse_lookup(reply)

    def _fetch_issued(self, hit: LookupHit) -> SubmitResult:
        reply = self._transact(
            "get_document",
            self.config.sync_url,
            "GET_DOCUMENT",
            hit.batch or "",
            hit.serial or "",
            OUTPUT_FORMATS,
        )
        ids, files = parse_issued_document(reply, "GET_DOCUMENT")
        if hit.guid is not None and ids.guid is not None and hit.guid.lower() != ids.guid.lower():
            raise PermanentError("MYSuite GET_DOCUMENT returned another document than the lookup found")
        return SubmitResult(request_id=ids.guid or "", adopted=True, issued=ids, files=files)

    def _transact(
        self,
        operation: str,
        url: str,
        transaction: str,
        data1: str | bytes,
        data2: str = "",
        data3: str = "",
        *,
        upload: bool = False,
    ) -> TransactionReply:
        """One observed call whose `Result=false` is an error (no transaction-specific codes)."""
        with observed(PROVIDER, operation):
            reply = self._exchange(url, transaction, data1, data2, data3, upload=upload)
            self._raise_refusal(reply, transaction)
            return reply

    @staticmethod
    def _raise_refusal(reply: TransactionReply, transaction: str) -> None:
        if not reply.result:
            raise refusal_error(reply, transaction)

    def _exchange(
        self,
        url: str,
        transaction: str,
        data1: str | bytes,
        data2: str = "",
        data3: str = "",
        *,
        upload: bool = False,
        envelopes: EnvelopeBuilder | None = None,
    ) -> TransactionReply:
        """POST one envelope and read the answer; every failure comes out as one of our errors.

        `envelopes` sends as another Entity than the configured one (Descarga Masiva asks for the
        documents of the taxpayer whose FIEL signs, which need not be the invoicing entity).
        """
        envelope = (envelopes or self._envelopes).build(transaction, data1, data2, data3)
        headers = dict(envelope.headers, **{"Content-Length": str(envelope.content_length)})
        read = self.config.upload_timeout if upload else self.config.read_timeout
        with self._soap_streak.attempt():
            try:
                with self._client().stream(
                    "POST", url, self._timeout(read), content=envelope.body(), headers=headers
                ) as response:
                    body = read_capped(response.iter_bytes(), MAX_ANSWER_BYTES, "MYSuite")
                    status, answer_headers = response.status_code, response.headers
            except httpx.TimeoutException as exc:
                raise TransientError(f"MYSuite {transaction} timed out ({type(exc).__name__})") from exc
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise TransientError(f"MYSuite {transaction} connection failed ({type(exc).__name__})") from exc
            return interpret_http_answer(status, answer_headers, body)

    # -- downloads ---------------------------------------------------------------------------

    def _download_once(
        self, url: str, dest: Path, max_bytes: int | None = None, max_members: int = MAX_ZIP_MEMBERS
    ) -> DownloadResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with observed(PROVIDER, "download"), self._file_streak.attempt():
                result = self._stream_to(url, partial, max_bytes)
                check_content(partial, result[2], self.links, max_members=max_members)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return DownloadResult(path=dest, sha256=result[0], size=result[1], content_type=result[2])

    def _stream_to(self, url: str, target: Path, max_bytes: int | None = None) -> tuple[str, int, str]:
        # Exceptions are raised `from None`: httpx errors can carry the request URL, a secret link.
        try:
            with (
                open_link(self._client(), url, self.links, self._timeout(self.config.read_timeout)) as response,
                target.open("wb") as out,
            ):
                _raise_for_download_status(response)
                sink = DownloadSink(out, self.links)
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                    sink.write(chunk)
                    if max_bytes is not None and sink.size > max_bytes:
                        raise DownloadTooLarge(f"download is larger than {max_bytes} bytes")
                result = sink.finish()
                if max_bytes is not None and sink.size > max_bytes:
                    raise DownloadTooLarge(f"download is larger than {max_bytes} bytes")
                return result
        except httpx.TimeoutException as exc:
            raise TransientError(f"download timed out ({type(exc).__name__})") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransientError(f"download failed ({type(exc).__name__})") from None


def _check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not re.fullmatch(r"[A-Za-z0-9{}\-]{1,100}", request_id):
        raise PermanentError("MYSuite request id is malformed")


def _raise_for_download_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (403, 404, 410):
        raise LinkExpired(f"download link expired or unknown (HTTP {status})")
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimitedError("download rate-limited (HTTP 429)", retry_after=retry_after)
    if status >= 500 or status in (408, 425, 499):
        raise TransientError(f"download failed (HTTP {status})")
    raise PermanentError(f"download refused (HTTP {status})")


class DownloadSink:
    """Writes a download as it arrives, deciding from its first bytes whether to base64-decode it.

    Plain ZIP/PDF/XML bodies are written as they are. A body that is base64 text and decodes to one
    of those is decoded on the fly (4-character groups, remainder carried to the next chunk), so the
    archived file is the document itself whichever way the link serves it. A body that is none of
    them is refused at once, and one that grows past its type's cap is refused as the cap is
    crossed: nothing past it is read.
    """

    def __init__(self, out: IO[bytes], links: LinkPolicy | None = None) -> None:
        self._out = out
        self._links = links or LinkPolicy(frozenset())
        self._digest = hashlib.sha256()
        self._size = 0
        self._head = b""
        self._mode: str | None = None  # "raw" or "base64" once decided
        self._content_type = "application/octet-stream"
        self._carry = b""

    def write(self, chunk: bytes) -> None:
        if self._mode is None:
            self._head += chunk
            if len(self._head) >= _SNIFF_BYTES:
                self._decide()
            return
        self._consume(chunk)

    @property
    def size(self) -> int:
        """Bytes written so far (decoded), for callers that cap a download as it arrives."""
        return self._size

    def finish(self) -> tuple[str, int, str]:
        if self._mode is None:
            self._decide()
        if self._mode == "base64":
            tail = self._carry.rstrip(b"=")
            if tail:
                padded = tail + b"=" * (-len(tail) % 4)
                self._emit(_b64decode(padded))
            self._carry = b""
        return self._digest.hexdigest(), self._size, self._content_type

    def _decide(self) -> None:
        head, self._head = self._head, b""
        sniffed = sniff_content_type(head)
        self._mode = "raw"
        if sniffed is not None:
            self._content_type = sniffed
        elif looks_like_base64(head[:_SNIFF_BYTES]):
            compact = re.sub(rb"\s+", b"", head)
            try:
                decoded = base64.b64decode(compact[: len(compact) // 4 * 4], validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            inner = sniff_content_type(decoded)
            if inner is not None:
                self._mode = "base64"
                self._content_type = inner
        if self._content_type == "application/octet-stream":
            raise UnexpectedContent("download is neither XML, PDF nor ZIP (nor base64 of one)")
        self._consume(head)

    def _consume(self, chunk: bytes) -> None:
        if self._mode == "raw":
            self._emit(chunk)
            return
        data = self._carry + re.sub(rb"\s+", b"", chunk)
        usable = len(data) // 4 * 4
        self._carry = data[usable:]
        if usable:
            self._emit(_b64decode(data[:usable]))

    def _emit(self, data: bytes) -> None:
        cap = self._links.cap(self._content_type)
        if self._size + len(data) > cap:
            raise UnexpectedContent(f"download is larger than the {cap}-byte cap for {self._content_type}")
        self._out.write(data)
        self._digest.update(data)
        self._size += len(data)


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise TransientError("downloaded file is neither a document nor valid base64") from None


def from_env() -> MySuiteClient:
    """The registry's factory (`providers.mysuite:from_env`)."""
    return MySuiteClient(MySuiteConfig.from_environ())
