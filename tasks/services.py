"""What a step needs from the world, handed to it explicitly: store, providers, policy, messages, clock.

Celery tasks build one `Services` per process (`default()`); tests build their own on SQLite with
an in-memory provider, a fixed clock and a list for messages, and run the same workflow in-process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from models import Store
from providers.base import Provider
from providers.mysuite.descarga import DownloadQuery, PackageFile, Registration, RequestStatus
from tasks.doorbell import AlwaysRing, Doorbell
from tasks.policy import Policy, ProcessingModel, fit_processing


class Dispatch(Protocol):
    def __call__(
        self, task: str, queue: str, job_ids: Sequence[str], countdown: float, *, wake: str | None = None
    ) -> None:
        """Send a step's message. `wake`: the message answers that provider's doorbell
        (`tasks.doorbell`), and may name no job at all."""
        ...


MODEL_TTL_SECONDS = 5.0
"""How long a fitted processing model is reused. Every submit and every pending poll needs one;
refitting from the database each time would cost two queries per step for an estimate that moves
slowly."""


class AddendaService(Protocol):
    """What the addenda step needs from Prodigia: the stamped CFDI back with the addenda attached,
    checked to leave the signed part untouched (`providers.prodigia.AddendaClient`)."""

    def attach(self, addenda_type: str, datos: str | bytes, cfdi_xml: bytes) -> bytes: ...


class DescargaService(Protocol):
    """What the download-request steps need from MYSuite Descarga Masiva
    (`providers.mysuite.descarga.DescargaClient`)."""

    def register(self, query: DownloadQuery, *, now: datetime | None = None) -> list[Registration]: ...

    def get_request(self, request_id: str, *, rfc: str | None = None) -> RequestStatus: ...

    def package_link(self, request_id: str, package_id: str, *, rfc: str | None = None) -> str: ...

    def fetch_package(self, package_id: str, url: str, dest: Path, *, max_bytes: int = ...) -> PackageFile: ...


_descarga_lock = threading.Lock()
_descarga_client: DescargaService | None = None


def mysuite_descarga() -> DescargaService:
    """This process's Descarga Masiva client, built from `MYSUITE_*` and the FIEL `*_FILE` settings
    on first use (it keeps a pool)."""
    global _descarga_client
    with _descarga_lock:
        if _descarga_client is None:
            from providers.mysuite.descarga import from_env

            _descarga_client = from_env()
        return _descarga_client


_addenda_lock = threading.Lock()
_addenda_client: AddendaService | None = None


def prodigia() -> AddendaService:
    """This process's Prodigia client, built from `PRODIGIA_*` on first use (it keeps a pool)."""
    global _addenda_client
    with _addenda_lock:
        if _addenda_client is None:
            from providers.prodigia import from_env

            _addenda_client = from_env()
        return _addenda_client


@dataclass
class Services:
    store: Store
    policy: Policy
    provider: Callable[[str], Provider]
    dispatch: Dispatch
    doorbell: Doorbell = field(default_factory=AlwaysRing)
    monotonic: Callable[[], float] = time.monotonic
    addenda: Callable[[], AddendaService] = prodigia
    descarga: Callable[[], DescargaService] = mysuite_descarga
    _models: dict[str, tuple[float, ProcessingModel | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> datetime:
        return self.store.db.clock()

    @property
    def archive_dir(self) -> Path:
        return Path(self.policy.archive_dir)

    def processing_model(self, provider: str) -> ProcessingModel | None:
        """The provider's processing time as learnt from its recent documents (None without history)."""
        now = self.monotonic()
        with self._lock:
            cached = self._models.get(provider)
        if cached is not None and now - cached[0] < MODEL_TTL_SECONDS:
            return cached[1]
        model = fit_processing(self.store.stats.processing_samples(provider), self.policy)
        with self._lock:
            self._models[provider] = (now, model)
        return model
