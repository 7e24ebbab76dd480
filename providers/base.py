"""The contract every provider client keeps, so the pipeline never needs to know which one it talks to.

A provider is reached in three steps (submit, verify, retrieve) plus a download of the files its
links point at. Synchronous services (MYSuite CONVERT_NATIVE_XML for small documents) answer the
submit with the finished document; the pipeline then skips polling. Every failure is raised as one of
four error classes, because the pipeline's reaction depends only on the class: retry later, slow the
whole provider down, stop calling the provider, or fail the job.
"""

from __future__ import annotations

import enum
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol


class ErrorClass(enum.StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    PERMANENT = "permanent"


class ProviderError(Exception):
    """A provider call that did not succeed, with everything the provider said about why.

    The message never contains payloads, credentials or links: it is written to logs and events.
    """

    error_class: ErrorClass = ErrorClass.TRANSIENT

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        description: str | None = None,
        hint: str | None = None,
        data: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.description = description
        self.hint = hint
        self.data = data
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"code={self.code}")
        for name in ("description", "hint", "data"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        return " ".join(parts)


class TransientError(ProviderError):
    """Timeouts, connection errors, 5xx, SOAP faults, unparsable answers: the same call may work later."""

    error_class = ErrorClass.TRANSIENT
    answered = False
    """The provider did answer, only not readably about this one document: it is up (see
    `MalformedAnswer`), and the calls for other documents may go on."""


def unanswered(error: BaseException) -> bool:
    """The provider gave no answer at all, even after the call's own retries: it looks down."""
    return isinstance(error, TransientError) and not error.answered


class FailureStreak:
    """Attempts in a row, from any thread of one client, that got no answer; any answer ends it.

    In-call retries are for a blip on one connection. When the calls of several threads fail one
    after another the provider looks down, and retrying each of them only multiplies what is sent
    into the outage (three calls per step in flight): once the streak reaches `limit`, a failed
    attempt is not retried in-call, and the step's own retry and the breaker take over.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._length = 0

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Around one request: lengthens the streak if it gets no answer, and ends it otherwise."""
        try:
            yield
        except BaseException as exc:
            with self._lock:
                self._length = self._length + 1 if unanswered(exc) else 0
            raise
        with self._lock:
            self._length = 0

    @property
    def provider_looks_down(self) -> bool:
        with self._lock:
            return self._length >= self.limit


class RateLimitedError(ProviderError):
    """The provider asks us to slow down (429, quota); `retry_after` says for how long when known."""

    error_class = ErrorClass.RATE_LIMITED


class AccountPaused(RateLimitedError):
    """The whole account must stop until `resume_at` (a monthly quota spent), not just one job.

    The pipeline pauses the provider for every worker until then, or until an operator resumes it
    after changing the plan.
    """

    def __init__(self, message: str, *, resume_at: datetime, code: str | None = None, description: str | None = None):
        retry_after = max(0.0, (resume_at - datetime.now(resume_at.tzinfo)).total_seconds())
        super().__init__(message, code=code, description=description, retry_after=retry_after)
        self.resume_at = resume_at


class AuthError(ProviderError):
    """Credentials refused: retrying blindly can lock the account, so the provider must be stopped."""

    error_class = ErrorClass.AUTH


class PermanentError(ProviderError):
    """The provider rejected the document or the request; sending it again cannot succeed."""

    error_class = ErrorClass.PERMANENT


class InvalidPayload(PermanentError):
    """The document was refused locally before anything was sent (size, well-formedness, root, key)."""


MAX_INTERNAL_ID = 50
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories that print as nothing or as something else: controls, invisible format
characters (bidi overrides that make two ids look alike), lone surrogates (no encoding stores
them), line and paragraph separators."""


def internal_id_problem(internal_id: object) -> str | None:
    """What is wrong with an ERP's internal id, or None: it is every provider's idempotency key
    (MYSuite Data2, our (provider, entity, internal id) key), so 1 to 50 printable characters.

    Surrounding spaces are refused too: providers trim values they echo, so " A" and "A" would be
    told apart by us and not by them, and the duplicate guard would stop protecting us.
    """
    if not isinstance(internal_id, str) or not internal_id.strip():
        return "internal id is empty"
    if len(internal_id) > MAX_INTERNAL_ID:
        return f"internal id is {len(internal_id)} characters; the limit is {MAX_INTERNAL_ID}"
    if any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in internal_id):
        return "internal id contains control characters"
    if internal_id != internal_id.strip():
        return "internal id has leading or trailing spaces"
    return None


class VerifyStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    FAILED = "failed"


@dataclass(frozen=True)
class DocumentIds:
    """The fiscal identity of an issued document (MYSuite: CFDI UUID, year, serie, folio).

    `fiscal_id` is the id the tax authority knows the document by (CFDI UUID, Hacienda clave,
    e-NCF); when a provider leaves it unset, `guid` is that id. `extra` holds a provider's own
    short fields that users need (MSeller `security_code`, `qr_url`).
    """

    guid: str | None = None
    year: int | None = None
    batch: str | None = None
    serial: str | None = None
    enrolled_at: datetime | None = None
    fiscal_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def fiscal(self) -> str | None:
        return self.fiscal_id or self.guid


@dataclass(frozen=True)
class SubmitResult:
    """What a submit returned.

    `adopted` is true when the provider said the document was already received (MYSuite 3196,
    Hacienda "ya fue recibido") and handed back the existing request id. `issued` and `files` are
    set by synchronous services that answer with the finished document.
    """

    request_id: str
    adopted: bool = False
    issued: DocumentIds | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyResult:
    status: VerifyStatus
    document: DocumentIds | None = None
    error_message: str | None = None
    error_code: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrieveResult:
    """Download links ("xml", "pdf") and when they stop working; `files` for content sent inline."""

    links: Mapping[str, str]
    expires_at: datetime | None
    document: DocumentIds | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    content_type: str


class Provider(Protocol):
    """One e-invoicing provider, as the pipeline sees it. Implementations hold no database state."""

    name: str

    retrieve_in_verify: bool
    """The status answer of an issued document carries its final record (MSeller): archiving the
    files that came with it completes the document, and no retrieve call is spent."""

    polls_through_sweep: bool
    """Every call is counted against a plan (MSeller): a document's polls wait in the database for
    the sweep, which hands out the due ones together in `batch_size` groups, rather than each going
    out in a broker message of its own (one counted status call per document and poll)."""

    @property
    def entity(self) -> str:
        """The issuer the credentials belong to (MYSuite Entity RFC, Hacienda cédula)."""
        ...

    def validate(self, payload: bytes, internal_id: str) -> None:
        """Raise InvalidPayload for a document that must never be sent; cheap, no network."""
        ...

    def submit(self, payload: bytes, internal_id: str, *, attempt: int = 1) -> SubmitResult: ...

    def verify(self, request_id: str) -> VerifyResult: ...

    @property
    def batch_size(self) -> int:
        """How many request ids one `verify_many` call should carry (MSeller: up to 100)."""
        ...

    def verify_many(self, request_ids: Sequence[str]) -> Mapping[str, VerifyResult | ProviderError]:
        """The status of several documents at once; per-document failures are values, not raised.

        An error that concerns the whole call (credentials refused, rate limited, provider down)
        is raised, because it says nothing about any one document. Providers without a batch
        endpoint loop over `verify` on one kept-alive connection (see `verify_each`).
        """
        ...

    def retrieve(self, request_id: str) -> RetrieveResult: ...

    def download(self, url: str, dest: Path) -> DownloadResult: ...

    def close(self) -> None: ...


def verify_each(provider: Provider, request_ids: Sequence[str]) -> dict[str, VerifyResult | ProviderError]:
    """`verify_many` for providers without a batch endpoint: one call per id on the same pool.

    Errors that concern the provider rather than the document (auth, rate limit) stop the loop and
    are raised, so the caller pauses or slows down before spending more calls. A call that got no
    answer at all, after its own retries, stops the loop too: the provider looks down, and the ids
    not asked yet carry that error (the breaker should hear of an outage once, not once per id).
    """
    results: dict[str, VerifyResult | ProviderError] = {}
    for n, request_id in enumerate(request_ids):
        try:
            results[request_id] = provider.verify(request_id)
        except (AuthError, RateLimitedError):
            raise
        except ProviderError as exc:
            results[request_id] = exc
            if unanswered(exc):
                results.update((later, exc) for later in request_ids[n + 1 :])
                break
    return results


RequestObserver = Callable[[str, str, str, float], None]
"""Called after every provider request with (provider, operation, outcome, seconds)."""

_observers: list[RequestObserver] = []


def add_request_observer(observer: RequestObserver) -> None:
    """Lets the worker count requests for metrics without providers importing the worker."""
    if observer not in _observers:
        _observers.append(observer)


@contextmanager
def observed(provider: str, operation: str) -> Iterator[None]:
    """Time one provider request and report its outcome (`ok` or the error class) to the observers."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ProviderError as exc:
        outcome = exc.error_class.value
        raise
    except Exception:
        outcome = ErrorClass.TRANSIENT.value
        raise
    finally:
        elapsed = time.perf_counter() - started
        for observer in list(_observers):
            observer(provider, operation, outcome, elapsed)


def read_setting(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """Read NAME from the environment, or from the file named by NAME_FILE (Docker/Kubernetes secrets).

    The file wins over a plain variable so that a secret mounted by the orchestrator cannot be
    shadowed by a stale value left in the environment.
    """
    env = os.environ if environ is None else environ
    file_name = env.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text(encoding="utf-8").strip()
    value = env.get(name)
    if value is None or value == "":
        return default
    return value
