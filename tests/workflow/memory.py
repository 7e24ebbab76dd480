"""An in-memory provider that keeps the real `Provider` contract, and a clock the test moves.

The workflow tests run the real runner, steps, store (SQLite) and archive in-process; only the
provider's network is replaced, by scripts of what it answers.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from providers.base import (
    DocumentIds,
    DownloadResult,
    InvalidPayload,
    ProviderError,
    RetrieveResult,
    SubmitResult,
    VerifyResult,
    VerifyStatus,
    verify_each,
)

XML = b"<?xml version='1.0'?><cfdi:Comprobante xmlns:cfdi='http://www.sat.gob.mx/cfd/4'/>"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PENDING = VerifyResult(VerifyStatus.PENDING)


class FixedClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Answer = object
"""A scripted answer: a result to return, or a ProviderError / other exception to raise."""


@dataclass
class MemoryProvider:
    """Answers from per-call scripts; with no script, an async provider that issues on the first poll."""

    clock: FixedClock = field(default_factory=FixedClock)
    name: str = "memory"
    batch_size: int = 50
    retrieve_in_verify: bool = False
    polls_through_sweep: bool = False
    submits: deque[Answer] = field(default_factory=deque)
    verifies: deque[Answer] = field(default_factory=deque)
    retrieves: deque[Answer] = field(default_factory=deque)
    files: dict[str, bytes] = field(default_factory=lambda: {"xml": XML, "pdf": PDF})
    calls: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    @property
    def entity(self) -> str:
        return "AAA010101AAA"

    def validate(self, payload: bytes, internal_id: str) -> None:
        if not payload.startswith(b"<"):
            raise InvalidPayload("not XML")

    def _next(self, script: deque[Answer], default: object) -> object:
        answer = script.popleft() if script else default
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def submit(self, payload: bytes, internal_id: str, *, attempt: int = 1) -> SubmitResult:
        self.calls.append(f"submit:{internal_id}")
        answer = self._next(self.submits, SubmitResult(f"REQ-{internal_id}"))
        assert isinstance(answer, SubmitResult)
        return answer

    def verify(self, request_id: str) -> VerifyResult:
        self.calls.append(f"verify:{request_id}")
        guid = hashlib.md5(request_id.encode()).hexdigest()
        uuid = f"{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:]}"
        answer = self._next(self.verifies, VerifyResult(VerifyStatus.ISSUED, DocumentIds(guid=uuid, year=2026)))
        assert isinstance(answer, VerifyResult)
        return answer

    def verify_many(self, request_ids: Sequence[str]) -> Mapping[str, VerifyResult | ProviderError]:
        self.batches.append(len(request_ids))
        return verify_each(self, request_ids)

    def retrieve(self, request_id: str) -> RetrieveResult:
        self.calls.append(f"retrieve:{request_id}")
        links = {kind: f"https://files.example/{request_id}.{kind}" for kind in self.files}
        default = RetrieveResult(links, self.clock() + timedelta(days=5))
        answer = self._next(self.retrieves, default)
        assert isinstance(answer, RetrieveResult)
        return answer

    def download(self, url: str, dest: Path) -> DownloadResult:
        self.calls.append("download")
        kind = url.rsplit(".", 1)[-1]
        content = self.files[kind]
        dest.write_bytes(content)
        content_type = "application/pdf" if kind == "pdf" else "application/xml"
        return DownloadResult(dest, hashlib.sha256(content).hexdigest(), len(content), content_type)

    def close(self) -> None:
        pass


class MemoryDoorbell:
    """The Redis doorbell of `tasks.doorbell` on the test's clock: which (step, provider) has a
    wake-up pending, until when."""

    def __init__(self, clock: FixedClock, ttl_seconds: float) -> None:
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.pending: dict[tuple[str, str], datetime] = {}

    def ring(self, step: str, provider: str) -> bool:
        expires = self.pending.get((step, provider))
        if expires is not None and expires > self.clock():
            return False
        self.pending[(step, provider)] = self.clock() + self.ttl
        return True

    def answer(self, step: str, provider: str) -> None:
        self.pending.pop((step, provider), None)
