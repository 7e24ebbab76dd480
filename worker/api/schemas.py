"""Models of the API: the same JSON as `einvoice status/events/list`, `downloads` and `cfdi list --json`, typed.

The routes return the dicts of `worker.views` unchanged (so the API and the CLI cannot drift);
these models describe them in the OpenAPI document, and the contract tests check both against each
other. `extra="allow"` lets fields added to the views pass through before they are described here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Document(BaseModel):
    model_config = ConfigDict(extra="allow")

    guid: str | None
    year: int | None
    batch: str | None
    serial: str | None


class Links(BaseModel):
    xml: str | None
    pdf: str | None
    expires_at: str | None


class JobError(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    code: str | None
    message: str
    error_class: str | None = Field(alias="class")


class InvoiceStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    provider: str
    entity: str
    internal_id: str
    state: str
    provider_request_id: str | None
    adopted: bool
    size_bytes: int
    document: Document
    links: Links
    error: JobError | None
    attempts: int
    polls: int
    created_at: str | None
    submitted_at: str | None
    issued_at: str | None
    updated_at: str | None
    next_attempt_at: str | None


class InvoiceEvent(BaseModel):
    id: int
    at: str | None
    kind: str
    from_state: str | None
    to_state: str | None
    actor: str
    attempt: int | None
    error_class: str | None
    provider_code: str | None
    message: str | None


class InvoicePage(BaseModel):
    items: list[InvoiceStatus]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ProviderPause(BaseModel):
    provider: str
    kind: str
    reason: str
    since: str | None
    until: str | None
    probes: int


class Health(BaseModel):
    status: str
    checks: dict[str, str]


class Replayed(BaseModel):
    id: str
    state: str


class DownloadRequest(BaseModel):
    """The options of `einvoice downloads request`, as a JSON body."""

    model_config = ConfigDict(populate_by_name=True)

    rfc: str = Field(description="The taxpayer whose FIEL signs the request.")
    start: str = Field(alias="from", description='Start, "YYYY-MM-DD HH:MM:SS" (Mexico City time).')
    end: str = Field(alias="to", description="End, inclusive, in the same form.")
    direction: Literal["issued", "received", "both"]
    kind: Literal["cfdi", "metadata", "both"]
    service: Literal["cfdis", "retenciones", "both"] = "cfdis"


class DownloadPeriod(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: str | None = Field(alias="from")
    end: str | None = Field(alias="to")


class DownloadPackage(BaseModel):
    id: str
    state: str
    sha256: str | None


class DownloadStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    rfc: str
    period: DownloadPeriod
    direction: str | None
    kind: str | None
    service: str | None
    state: str
    parent_id: str | None
    provider_request_id: str | None
    sat_request_id: str | None
    sat_state: int | None
    cfdi_count: int | None
    indexed: int | None
    split_into: str | None
    packages: list[DownloadPackage]
    error: JobError | None


class DownloadsRegistered(BaseModel):
    requests: list[DownloadStatus] = Field(description="Split parents first, then the requests to poll.")
    refused: list[str] = Field(description="SAT's refusals of some of the requests, never resent.")


class CfdiEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    uuid: str
    direction: str
    issuer_rfc: str | None
    issuer_name: str | None
    receiver_rfc: str | None
    receiver_name: str | None
    issued_at: str | None
    certified_at: str | None
    total: str | None
    type: str | None
    status: str | None
    cancelled_at: str | None
