"""Index one archived SAT package into the `cfdi` table: the reader's records, merged in batches.

This is the step a download-request job runs once per downloaded package. It runs inside the
caller's transaction, so the job can record the package as indexed in the same commit; a crash
before that commit leaves nothing half-recorded, and indexing the package again is harmless because
the merge is idempotent. Skipped entries are counted, and the first few kept with their reasons for
the job's event, because a package with a bad entry is still a package worth indexing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from models.cfdi import UPSERT_BATCH, upsert_cfdi
from providers.mysuite.descarga import CfdiRecord, Direction, iter_package

KEPT_SKIPS = 20


@dataclass
class IndexResult:
    """What one package contributed: records read, rows sent to the table, entries left out."""

    records: int = 0
    rows: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


def index_package(
    connection: Connection,
    path: Path,
    direction: Direction,
    *,
    now: datetime,
    batch_size: int = UPSERT_BATCH,
) -> IndexResult:
    """Stream `path` through the reader into `upsert_cfdi`; raises `PackageError` for an unreadable archive."""
    result = IndexResult()

    def rows() -> Iterator[dict[str, Any]]:
        for item in iter_package(path, direction):
            if isinstance(item, CfdiRecord):
                result.records += 1
                yield item.as_row()
            else:
                result.skipped += 1
                if len(result.skip_reasons) < KEPT_SKIPS:
                    where = item.name if item.line is None else f"{item.name}:{item.line}"
                    result.skip_reasons.append(f"{where}: {item.reason}"[:300])

    result.rows = upsert_cfdi(connection, rows(), now=now, batch_size=batch_size)
    return result
