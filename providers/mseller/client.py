"""MSeller ECF client: send the e-CF, poll the batch status endpoint, keep the final record.

Every call that carries `X-API-KEY` spends the plan: first a token from the per-second bucket that
all workers share (Redis), then one request from the month's budget (the database, through the
`MonthlyBudget` protocol). A send costs one request; polls go through the batch endpoint, up to
100 e-NCF a call, so a document costs little more than its send. The final status answer *is* the
record MSeller keeps (status, DGII replies, security code, QR URL), so an issued verify result
carries it as the file "json" and `retrieve_in_verify` tells the pipeline a retrieve would only
fetch it again.

The idempotency key is (RNC, e-NCF). MSeller's behaviour for a second send of an e-NCF is not
documented, so after any ambiguous failure (`attempt > 1`: a timeout, a 5xx, a lost answer) the
client asks for the e-NCF's status first and adopts a document found there instead of sending it
again. A duplicate refusal (`DUPLICATE_ENCF`, a code of our simulator) is adopted too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from providers.base import (
    AuthError,
    DocumentIds,
    DownloadResult,
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetrieveResult,
    SubmitResult,
    TransientError,
    VerifyResult,
    VerifyStatus,
    observed,
)
from providers.http import api_client, shared_redis
from providers.mseller.budget import AccountPausedError, MonthlyBudget, make_budget, next_month_start
from providers.mseller.ecf import (
    MalformedAnswer,
    StatusRecord,
    parse_batch,
    parse_ecf,
    parse_send,
)
from providers.mseller.settings import MAX_BATCH, MSellerSettings
from providers.mseller.token import TokenSource
from providers.ratelimit import Rate, RateLimiter, retry_after_seconds
from providers.tokens import Unauthorized

log = logging.getLogger(__name__)

T = TypeVar("T")

NAME = "mseller"
DUPLICATE_CODE = "DUPLICATE_ENCF"
CERTIFICATE_CODE = "CERTIFICATE_NOT_CONFIGURED"
# A 429 that only asks to slow down (a gateway's per-second throttle) rather than saying the month
# is spent; MSeller documents neither body, so only these explicit markers earn a short wait.
THROTTLE_MARKERS = ("too many requests", "throttl")
# The per-second bucket counts over RATE_WINDOW seconds with a burst of a tenth of a second's
# requests: the steady rate is then the plan's less a hundredth, and the small burst lets callers
# that wake a little late catch up, while no second ever sees more than the plan's figure plus that
# burst (a gateway's own bucket holds at least a second's requests).
RATE_WINDOW = 10
MAX_MESSAGE = 2000


def plan_rates(requests_per_second: int) -> list[Rate]:
    """The per-second plan as a token bucket; no limit at all for 0 (tests, contract plans)."""
    if requests_per_second <= 0:
        return []
    burst = max(1, requests_per_second // 10)
    return [Rate(requests_per_second * RATE_WINDOW, float(RATE_WINDOW), burst=burst)]


class MSellerClient:
    """The `Provider` for MSeller ECF (Dominican Republic, DGII e-CF)."""

    name = NAME
    # An issued verify result carries the final record (files["json"]): nothing left to retrieve.
    retrieve_in_verify = True
    # Polls wait for the sweep, which groups the due e-NCF into one batch status call.
    polls_through_sweep = True

    def __init__(
        self,
        settings: MSellerSettings,
        *,
        budget: MonthlyBudget | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self._http = api_client(settings.connect_timeout, settings.read_timeout)
        self._redis = shared_redis(settings.redis_url)
        self._tokens = TokenSource(settings, self._http, self._redis)
        account = hashlib.sha256(f"{settings.base}\0{settings.email or ''}".encode()).hexdigest()[:16]
        self.limiter = limiter or RateLimiter(
            f"mseller:{account}",
            settings.redis_url,
            rates=plan_rates(settings.requests_per_second),
            key_prefix=settings.redis_prefix,
        )
        self.budget = budget if budget is not None else make_budget(NAME, settings.requests_per_month)

    def __repr__(self) -> str:
        return f"MSellerClient(base={self.settings.base!r}, plan={self.settings.plan!r}, entity={self.entity!r})"

    @property
    def entity(self) -> str:
        return self.settings.entity

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    def validate(self, payload: bytes, internal_id: str) -> None:
        parse_ecf(payload, max_bytes=self.settings.max_payload_bytes, entity=self.entity or None)

    def submit(self, payload: bytes, internal_id: str, *, attempt: int = 1) -> SubmitResult:
        ecf = parse_ecf(payload, max_bytes=self.settings.max_payload_bytes, entity=self.entity or None)
        encf = ecf.encf
        if attempt > 1:
            # The previous attempt may have reached MSeller: a second send would sign the e-NCF
            # twice, so its status decides (one counted request, cheaper than a duplicate).
            record = self._statuses("submit_lookup", [encf]).get(encf)
            if record is not None and record.found:
                log.info("mseller: e-NCF %s is already at MSeller (%s); adopting it", encf, record.status)
                return SubmitResult(request_id=encf, adopted=True)

        def handle(response: httpx.Response) -> SubmitResult:
            status = response.status_code
            code, message = _error_body(response)
            if 200 <= status < 300:
                try:
                    receipt = parse_send(response.json(), encf)
                except (ValueError, MalformedAnswer) as exc:
                    # MSeller may have signed it: the next attempt looks the e-NCF up before sending.
                    raise TransientError(f"mseller: unreadable answer to the send ({exc})", code=str(status)) from None
                log.info("mseller: sent e-NCF %s (track %s)", encf, receipt.internal_track_id)
                return SubmitResult(request_id=encf, files={"receipt": response.content})
            if status == 400 and code == DUPLICATE_CODE:
                log.info("mseller: e-NCF %s was already sent; adopting it", encf)
                return SubmitResult(request_id=encf, adopted=True)
            if 400 <= status < 500:
                raise PermanentError(
                    f"mseller refused the e-CF (HTTP {status})", code=code or str(status), description=message
                )
            raise TransientError(f"mseller: unexpected answer to the send (HTTP {status})", code=str(status))

        return self._call("submit", "POST", "/documentos-ecf", payload, handle)

    def verify(self, request_id: str) -> VerifyResult:
        result = self.verify_many([request_id])[request_id]
        if isinstance(result, ProviderError):
            raise result
        return result

    def verify_many(self, request_ids: Sequence[str]) -> Mapping[str, VerifyResult | ProviderError]:
        """One batch call per `MAX_BATCH` e-NCF; an id missing from the answer is a transient error."""
        results: dict[str, VerifyResult | ProviderError] = {}
        unique = list(dict.fromkeys(request_ids))
        for start in range(0, len(unique), MAX_BATCH):
            chunk = unique[start : start + MAX_BATCH]
            records = self._statuses("verify", chunk)
            for encf in chunk:
                record = records.get(encf)
                if record is None:
                    results[encf] = TransientError(f"mseller: the batch answer left out e-NCF {encf}")
                else:
                    results[encf] = _verify_result(record)
        return results

    def retrieve(self, request_id: str) -> RetrieveResult:
        """The final record again (one counted request); the pipeline needs it only if verify's was lost."""
        record = self._statuses("retrieve", [request_id]).get(request_id)
        if record is None:
            raise TransientError(f"mseller: the batch answer left out e-NCF {request_id}")
        result = _verify_result(record)
        if result.status is VerifyStatus.PENDING:
            raise TransientError(f"mseller: e-NCF {request_id} is not final yet ({record.status})")
        if result.status is VerifyStatus.FAILED:
            raise PermanentError(
                f"mseller: e-NCF {request_id} was {record.status}",
                code=result.error_code,
                description=result.error_message,
            )
        return RetrieveResult(links={}, expires_at=None, document=result.document, files=result.files)

    def download(self, url: str, dest: Path) -> DownloadResult:
        raise PermanentError("mseller publishes no download links; the final record comes with verify")

    def usage(self) -> tuple[int, int]:
        """(requests counted this month, monthly limit) for the plan gauges."""
        return self.budget.usage()

    def close(self) -> None:
        self._http.close()
        self.limiter.close()
        if self._redis is not None:
            self._redis.close()

    # ------------------------------------------------------------------------------ calls

    def _statuses(self, operation: str, encfs: Sequence[str]) -> dict[str, StatusRecord]:
        body = json.dumps({"ecfs": list(encfs)}).encode()

        def handle(response: httpx.Response) -> dict[str, StatusRecord]:
            status = response.status_code
            code, message = _error_body(response)
            if status != 200:
                # Our e-NCF are validated, so a refused status query says nothing against any one
                # document (wrong URL, a gateway's hiccup): failing the whole batch's jobs would be
                # wrong, so it is retried with backoff until the jobs' deadline.
                raise TransientError(
                    f"mseller: unexpected answer to the status query (HTTP {status})",
                    code=code or str(status),
                    description=message,
                )
            try:
                return parse_batch(response.json())
            except (ValueError, MalformedAnswer) as exc:
                raise TransientError(f"mseller: unreadable status answer ({exc})", code="200") from None

        return self._call(operation, "POST", "/documentos-ecf/status/batch", body, handle)

    def _call(
        self, operation: str, method: str, path: str, body: bytes | None, handle: Callable[[httpx.Response], T]
    ) -> T:
        return self._tokens.authorized(
            operation, lambda token: self._send(operation, method, path, body, token, handle)
        )

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        body: bytes | None,
        token: str,
        handle: Callable[[httpx.Response], T],
    ) -> T:
        settings = self.settings
        self.limiter.acquire(settings.rate_wait)
        self.budget.take(1)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-API-KEY": settings.api_key or "",
            "Content-Type": "application/json",
        }
        with observed(NAME, operation):
            try:
                response = self._http.request(method, settings.base + path, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                raise TransientError(f"mseller: {operation} timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"mseller: {operation} failed ({type(exc).__name__})") from exc
            status = response.status_code
            if status in (401, 403, 412, 429) or status >= 500 or status == 499:
                code, message = _error_body(response)
                if status == 401:
                    raise Unauthorized("mseller API refused the idToken (HTTP 401)", code="401", description=message)
                if status == 403:
                    raise AuthError(
                        "mseller refused the API key or its permissions (HTTP 403)",
                        code=code or "403",
                        description=message,
                    )
                if status == 412:
                    raise AuthError(
                        "mseller has no signing certificate for this account (HTTP 412)",
                        code=code or CERTIFICATE_CODE,
                        description=message,
                    )
                if status == 429:
                    raise self._rate_limited(response, code, message)
                raise TransientError(f"mseller: HTTP {status}", code=str(status), description=message)
            return handle(response)

    def _rate_limited(self, response: httpx.Response, code: str | None, message: str | None) -> RateLimitedError:
        said = f"{code or ''} {message or ''}".casefold()
        if any(marker in said for marker in THROTTLE_MARKERS):
            wait = retry_after_seconds(response.headers, default=1.0)
            self.limiter.pause(wait)
            return RateLimitedError(
                "mseller: requests per second exceeded (HTTP 429)",
                code=code or "429",
                description=message,
                retry_after=wait,
            )
        now = datetime.now(UTC)
        log.error("mseller: HTTP 429, the month's requests are spent; the account must pause")
        return AccountPausedError(
            "mseller: the plan's monthly requests are spent (HTTP 429); the account is paused until "
            f"{next_month_start(now):%Y-%m-%d} 00:00 UTC or a plan change",
            code=code or "429",
            description=message,
            resume_at=next_month_start(now),
        )


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """MSeller's `{"message", "code"}`; both None for other bodies."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, message = body.get("code"), body.get("message")
    return (
        str(code)[:100] if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
        str(message)[:MAX_MESSAGE] if isinstance(message, str) else None,
    )


def _verify_result(record: StatusRecord) -> VerifyResult:
    verdict = record.verdict
    if verdict is VerifyStatus.PENDING:
        return VerifyResult(VerifyStatus.PENDING)
    extra = {
        name: value
        for name, value in (
            ("security_code", record.security_code),
            ("qr_url", record.qr_url),
            ("signed_date", record.signed_date),
            ("internal_track_id", record.internal_track_id),
            ("status", record.status),
            ("dgii_code", record.dgii_code),
        )
        if value
    }
    messages = "; ".join(str(message) for message in record.messages)[:MAX_MESSAGE]
    if verdict is VerifyStatus.ISSUED and messages:
        # Aceptado Condicional: issued, and the DGII's observations are kept for the event.
        extra["observations"] = messages
    document = DocumentIds(fiscal_id=record.encf, enrolled_at=record.received_at, extra=extra)
    files = {"json": json.dumps(record.raw, ensure_ascii=False, sort_keys=True).encode()} if record.raw else {}
    if verdict is VerifyStatus.ISSUED:
        return VerifyResult(VerifyStatus.ISSUED, document=document, files=files)
    first = next((message.codigo for message in record.messages if message.codigo), None)
    return VerifyResult(
        VerifyStatus.FAILED,
        document=document,
        error_code=first or record.dgii_code or record.status,
        error_message=f"DGII {record.status}: {messages}" if messages else f"DGII {record.status}",
        files=files,
    )


def from_env() -> MSellerClient:
    return MSellerClient(MSellerSettings.from_env())
