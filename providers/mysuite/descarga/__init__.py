"""MYSuite Descarga Masiva (SAT bulk download): the client, SAT's rules, and the package reader.

What a download-request job calls, in order:

1. `check_query(query, now)` (also done by `register`): refuse a request that breaks a v1.5 rule.
2. `DescargaClient.register(query)` → one `Registration` per SAT request; `TooManyResults` in a
   record's `error` means `split_period(period)` and register the halves.
3. `DescargaClient.get_request(id)` until `RequestStatus.outcome` is not PENDING.
4. `DescargaClient.download_package(id, package_id, dest)` once per package → `PackageFile`.
5. `iter_package(path, direction)` → `CfdiRecord`s (and `SkippedEntry`s) for `models.cfdi.upsert_cfdi`.
"""

from providers.mysuite.descarga.client import (
    DescargaClient,
    FielCredentials,
    FielMissing,
    PackageFile,
    from_env,
    verify_zip,
)
from providers.mysuite.descarga.package import PackageError, SkippedEntry, iter_package, read_metadata
from providers.mysuite.descarga.records import (
    BadMetadataLine,
    CfdiRecord,
    CfdiStatus,
    Direction,
    EntryError,
    EntryTooLarge,
    MalformedXml,
    NotACfdi,
    UnsafeXml,
    parse_cfdi_xml,
)
from providers.mysuite.descarga.rules import (
    CannotSplit,
    DocumentStatus,
    DownloadQuery,
    Period,
    RequestKind,
    Rule,
    RuleViolation,
    Service,
    TaxIdRole,
    check_query,
    split_period,
)
from providers.mysuite.descarga.wire import (
    DescargaOutcome,
    DuplicateActive,
    MaxDownloadsReached,
    PeriodExhausted,
    Registration,
    RequestPage,
    RequestStatus,
    SatCode,
    SatRejected,
    SatState,
    TooManyResults,
)

__all__ = [
    "BadMetadataLine",
    "CannotSplit",
    "CfdiRecord",
    "CfdiStatus",
    "DescargaClient",
    "DescargaOutcome",
    "Direction",
    "DocumentStatus",
    "DownloadQuery",
    "DuplicateActive",
    "EntryError",
    "EntryTooLarge",
    "FielCredentials",
    "FielMissing",
    "MalformedXml",
    "MaxDownloadsReached",
    "NotACfdi",
    "PackageError",
    "PackageFile",
    "Period",
    "PeriodExhausted",
    "Registration",
    "RequestKind",
    "RequestPage",
    "RequestStatus",
    "Rule",
    "RuleViolation",
    "SatCode",
    "SatRejected",
    "SatState",
    "Service",
    "SkippedEntry",
    "TaxIdRole",
    "TooManyResults",
    "UnsafeXml",
    "check_query",
    "from_env",
    "iter_package",
    "parse_cfdi_xml",
    "read_metadata",
    "split_period",
    "verify_zip",
]
