"""What the simulated MYSuite remembers: requests, issued documents, and the counters tests read.

Everything is keyed in dicts so each call costs O(1) however many thousands of documents a
benchmark has sent. Documents are kept as their ids and a few header values, never as payloads.
Transactions run in worker threads (a 40 MB decode must not stall the event loop), so every read
and write goes through one lock.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sandbox.mysuite.descarga import DmStore
from sandbox.mysuite.native import NativeDocument

STATUS_PENDING = 1
STATUS_ISSUED = 2
STATUS_FAILED = 3


@dataclass
class IssuedDocument:
    """A CFDI the simulator issued; an async one counts from `issued_at`, when its processing ends."""

    native: NativeDocument
    entity: str
    guid: str
    year: int
    batch: str
    serial: str
    issued_at: float


@dataclass
class AsyncRequest:
    """One accepted ASYNC_CONVERT_NATIVE_XML; its status follows from the clock, nothing polls it."""

    request_id: str
    entity: str
    internal_id: str
    enrolled_at: int
    ready_at: float
    size: int
    error_msg: str | None
    document: IssuedDocument | None

    def status(self, now: float) -> int:
        if now < self.ready_at:
            return STATUS_PENDING
        return STATUS_FAILED if self.error_msg is not None else STATUS_ISSUED


@dataclass
class AsyncCounter:
    calls: int = 0
    documents: int = 0
    duplicates: int = 0
    faults: int = 0
    entity: str | None = None
    request_id: str | None = None


@dataclass
class SyncCounter:
    calls: int = 0
    documents: int = 0


@dataclass
class TransactionCounter:
    calls: int = 0
    faults: int = 0


@dataclass
class Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests_by_key: dict[tuple[str, str], AsyncRequest] = field(default_factory=dict)
    requests_by_id: dict[str, AsyncRequest] = field(default_factory=dict)
    issued_by_internal_id: dict[tuple[str, str], list[IssuedDocument]] = field(default_factory=dict)
    issued_by_serial: dict[tuple[str, str, str], list[IssuedDocument]] = field(default_factory=dict)
    next_folio: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    async_counters: dict[str, AsyncCounter] = field(default_factory=dict)
    sync_counters: dict[str, SyncCounter] = field(default_factory=dict)
    transactions: dict[str, TransactionCounter] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=lambda: {"downloads": 0, "expired": 0, "not_found": 0, "faults": 0})
    descarga: DmStore = field(default_factory=DmStore)

    def reset(self) -> None:
        with self.lock:
            self.requests_by_key.clear()
            self.requests_by_id.clear()
            self.issued_by_internal_id.clear()
            self.issued_by_serial.clear()
            self.next_folio.clear()
            self.async_counters.clear()
            self.sync_counters.clear()
            self.transactions.clear()
            for key in self.files:
                self.files[key] = 0
        self.descarga.reset()

    # Counters. Callers hold no lock; each method takes it for its own short update.

    def count_call(self, transaction: str, async_internal_id: str | None) -> None:
        with self.lock:
            self.transactions.setdefault(transaction, TransactionCounter()).calls += 1
            if async_internal_id is not None:
                self.async_counters.setdefault(async_internal_id, AsyncCounter()).calls += 1

    def count_fault(self, transaction: str, async_internal_id: str | None) -> None:
        with self.lock:
            self.transactions.setdefault(transaction, TransactionCounter()).faults += 1
            if async_internal_id is not None:
                self.async_counters.setdefault(async_internal_id, AsyncCounter()).faults += 1

    def count_file(self, outcome: str) -> None:
        with self.lock:
            self.files[outcome] += 1

    # Async requests.

    def find_request(self, entity: str, internal_id: str) -> AsyncRequest | None:
        with self.lock:
            return self.requests_by_key.get((entity, internal_id))

    def request_by_id(self, request_id: str) -> AsyncRequest | None:
        with self.lock:
            return self.requests_by_id.get(request_id.lower())

    def count_duplicate(self, internal_id: str) -> None:
        with self.lock:
            self.async_counters.setdefault(internal_id, AsyncCounter()).duplicates += 1

    def add_request(self, request: AsyncRequest) -> AsyncRequest | None:
        """Register a request unless (Entity, Data2) was taken meanwhile; then return the winner."""
        with self.lock:
            key = (request.entity, request.internal_id)
            existing = self.requests_by_key.get(key)
            if existing is not None:
                self.async_counters.setdefault(request.internal_id, AsyncCounter()).duplicates += 1
                return existing
            self.requests_by_key[key] = request
            self.requests_by_id[request.request_id] = request
            counter = self.async_counters.setdefault(request.internal_id, AsyncCounter())
            counter.documents += 1
            counter.entity = request.entity
            counter.request_id = request.request_id
            if request.document is not None:
                self._index(request.document)
            return None

    # Issued documents.

    def allocate_folio(self, entity: str, serie: str, requested: str) -> str:
        """The folio the native document asked for, else the next one of the (entity, serie) series."""
        if requested:
            return requested
        with self.lock:
            self.next_folio[(entity, serie)] += 1
            return str(self.next_folio[(entity, serie)])

    def add_issued(self, document: IssuedDocument) -> None:
        with self.lock:
            self._index(document)
            key = document.native.numero_interno or ""
            counter = self.sync_counters.setdefault(key, SyncCounter())
            counter.documents += 1

    def count_sync_call(self, numero_interno: str | None) -> None:
        with self.lock:
            self.sync_counters.setdefault(numero_interno or "", SyncCounter()).calls += 1

    def _index(self, document: IssuedDocument) -> None:
        if document.native.numero_interno:
            self.issued_by_internal_id.setdefault((document.entity, document.native.numero_interno), []).append(
                document
            )
        self.issued_by_serial.setdefault((document.entity, document.batch, document.serial), []).append(document)

    def lookup_internal_id(self, entity: str, internal_id: str, now: float) -> list[IssuedDocument]:
        with self.lock:
            found = self.issued_by_internal_id.get((entity, internal_id), [])
            return [doc for doc in found if doc.issued_at <= now]

    def lookup_serial(self, entity: str, batch: str, serial: str, now: float) -> IssuedDocument | None:
        with self.lock:
            found = self.issued_by_serial.get((entity, batch, serial), [])
            visible = [doc for doc in found if doc.issued_at <= now]
            return visible[0] if visible else None

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON: per Data2, per NumeroInterno, per transaction, and file downloads."""
        now = time.time()
        with self.lock:
            per_internal_id: dict[str, Any] = {}
            for internal_id, counter in self.async_counters.items():
                request = self.requests_by_key.get((counter.entity or "", internal_id))
                per_internal_id[internal_id] = {
                    "calls": counter.calls,
                    "documents": counter.documents,
                    "duplicates": counter.duplicates,
                    "faults": counter.faults,
                    "entity": counter.entity,
                    "request_id": counter.request_id,
                    "status": request.status(now) if request else None,
                    "ready_at": request.ready_at if request else None,
                    "size": request.size if request else None,
                }
            sync = {
                key: {"calls": counter.calls, "documents": counter.documents}
                for key, counter in self.sync_counters.items()
            }
            transactions = {
                name: {"calls": counter.calls, "faults": counter.faults} for name, counter in self.transactions.items()
            }
            return {
                "async": per_internal_id,
                "sync": sync,
                "transactions": transactions,
                "totals": {
                    "calls": sum(counter.calls for counter in self.transactions.values()),
                    "faults": sum(counter.faults for counter in self.transactions.values()),
                    "requests": len(self.requests_by_id),
                    "issued": sum(len(docs) for docs in self.issued_by_serial.values()),
                },
                "files": dict(self.files),
                "descarga": self.descarga.snapshot(),
            }
