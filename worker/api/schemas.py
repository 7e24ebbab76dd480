"""Response models of the API: the same JSON as `einvoice status/events/list --json`, typed.

The routes return the dicts of `worker.views` unchanged (so the API and the CLI cannot drift);
these models describe them in the OpenAPI document, and the contract tests check both against each
other. `extra="allow"` lets fields added to the views pass through before they are described here.
"""

from __future__ import annotations

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
