"""The CFDI index on both backends: one row per UUID, merges that never lose what is known."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models import make_engine
from models.cfdi import Cfdi, cfdi_json, list_cfdi, upsert_cfdi
from providers.mysuite.descarga import CfdiRecord, Direction, iter_package
from providers.mysuite.descarga.records import CfdiStatus
from sandbox.mysuite.cfdigen import fake_cfdi, write_package
from worker.schema import upgrade

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UUID = "C5D92A93-FFAD-45D9-A08B-9C11046BAA21"


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cfdi.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("migrated_pg_url")
    made = make_engine(url)
    yield made
    made.dispose()


def record(**overrides: Any) -> dict[str, Any]:
    base = CfdiRecord(
        uuid=UUID.lower(),
        direction=Direction.RECEIVED,
        issuer_rfc="AAA010101AAA",
        issuer_name="EMISOR SA",
        receiver_rfc="JES900109Q90",
        receiver_name="RECEPTOR SA",
        issued_at=datetime(2026, 1, 5, 16, 0, tzinfo=UTC),
        certified_at=datetime(2026, 1, 5, 16, 2, tzinfo=UTC),
        total=Decimal("116.00"),
        type="I",
    ).as_row()
    base.update(overrides)
    return base


def rows(engine: Engine) -> list[Cfdi]:
    return list(list_cfdi(engine, limit=None))


def upsert(engine: Engine, items: list[dict[str, Any]], now: datetime = NOW, batch_size: int = 1000) -> int:
    with engine.begin() as connection:
        return upsert_cfdi(connection, items, now=now, batch_size=batch_size)


def test_same_uuid_twice_is_one_row(engine: Engine) -> None:
    upsert(engine, [record()])
    upsert(engine, [record(uuid=UUID)])  # upper case, as SAT writes it, is the same UUID
    [row] = rows(engine)
    assert row.uuid == UUID.lower() and row.total == Decimal("116.00") and row.status is None


def test_metadata_fills_status_without_blanking_the_xml_fields(engine: Engine) -> None:
    upsert(engine, [record()])
    metadata = {name: None for name in record()} | {
        "uuid": UUID,
        "direction": "received",
        "status": "vigente",
        "pac_rfc": "SPR190613I52",
    }
    upsert(engine, [metadata], now=NOW + timedelta(hours=1))
    [row] = rows(engine)
    assert row.status == "vigente" and row.pac_rfc == "SPR190613I52"
    assert row.issuer_name == "EMISOR SA" and row.type == "I" and row.total == Decimal("116.00")
    assert row.updated_at == NOW + timedelta(hours=1)


def test_a_cancellation_updates_the_status_and_stays(engine: Engine) -> None:
    upsert(engine, [record(status="vigente")])
    cancelled_at = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    upsert(engine, [record(status="cancelado", cancelled_at=cancelled_at)])
    [row] = rows(engine)
    assert (row.status, row.cancelled_at) == ("cancelado", cancelled_at)
    upsert(engine, [record(status="vigente")])  # an older metadata file indexed late
    upsert(engine, [record()])  # and an XML, which knows no status
    [row] = rows(engine)
    assert (row.status, row.cancelled_at) == ("cancelado", cancelled_at)


def test_duplicates_inside_one_batch_merge(engine: Engine) -> None:
    cancelled_at = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    sent = upsert(
        engine,
        [record(status="vigente"), record(uuid=UUID, status="cancelado", cancelled_at=cancelled_at), record()],
    )
    assert sent == 1
    [row] = rows(engine)
    assert (row.status, row.cancelled_at) == ("cancelado", cancelled_at)


def test_a_package_indexed_twice_keeps_one_row_per_uuid(engine: Engine, tmp_path: Path) -> None:
    docs = [fake_cfdi(f"u{n}", "JES900109Q90", True, 1.76e9 + 3600 * n, cancelled_rate=0.3) for n in range(2500)]
    xml, meta = tmp_path / "x.zip", tmp_path / "m.zip"
    write_package(xml, docs, "cfdi")
    write_package(meta, docs, "metadata")
    for path in (xml, meta, xml):
        records = (item.as_row() for item in iter_package(path, Direction.RECEIVED) if isinstance(item, CfdiRecord))
        upsert(engine, list(records), batch_size=700)
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(Cfdi)).scalar_one()
        cancelled = connection.execute(
            sa.select(sa.func.count()).select_from(Cfdi).where(Cfdi.status == CfdiStatus.CANCELADO.value)
        ).scalar_one()
    assert count == 2500
    assert cancelled == sum(1 for doc in docs if doc.cancelled)


def test_list_filters(engine: Engine) -> None:
    upsert(
        engine,
        [
            record(),
            record(
                uuid="11111111-2222-4333-8444-555555555555",
                direction="issued",
                issuer_rfc="JES900109Q90",
                receiver_rfc="XAXX010101000",
                issued_at=datetime(2026, 2, 10, tzinfo=UTC),
            ),
            record(uuid="22222222-2222-4333-8444-555555555555", issued_at=datetime(2026, 3, 10, tzinfo=UTC)),
        ],
    )

    def uuids(**filters: Any) -> list[str]:
        return [row.uuid[:8] for row in list_cfdi(engine, **filters)]

    assert uuids() == ["c5d92a93", "11111111", "22222222"]
    assert uuids(direction="issued") == ["11111111"]
    assert uuids(direction="received", issued_from=datetime(2026, 2, 1, tzinfo=UTC)) == ["22222222"]
    assert uuids(issued_to=datetime(2026, 2, 10, tzinfo=UTC)) == ["c5d92a93"]
    assert uuids(rfc="xaxx010101000") == ["11111111"]
    assert uuids(rfc="JES900109Q90") == ["c5d92a93", "11111111", "22222222"]
    assert uuids(limit=1) == ["c5d92a93"]
    shown = cfdi_json(list_cfdi(engine, direction="issued")[0])
    assert set(shown) == {
        "uuid",
        "direction",
        "issuer_rfc",
        "issuer_name",
        "receiver_rfc",
        "receiver_name",
        "issued_at",
        "certified_at",
        "total",
        "type",
        "status",
        "cancelled_at",
    }
    assert shown["total"] == "116.000000" and shown["issued_at"] == "2026-02-10T00:00:00+00:00"
