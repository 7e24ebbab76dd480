"""Indexing one package into the `cfdi` table: the good entries land once, the bad ones are counted."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import make_engine
from models.cfdi import Cfdi
from providers.mysuite.descarga import Direction, PackageError
from sandbox.mysuite.cfdigen import METADATA_HEADER, cfdi_xml, fake_cfdi, metadata_line
from tasks.cfdi_index import KEPT_SKIPS, index_package
from worker.schema import upgrade

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_index_package_counts_rows_and_skips(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'i.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("migrated_pg_url")
    engine = make_engine(url)
    docs = [fake_cfdi(f"i{n}", "JES900109Q90", False, 1.76e9 + 60 * n, cancelled_rate=0.5) for n in range(50)]
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for doc in docs:
            archive.writestr(f"{doc.uuid}.xml", cfdi_xml(doc))
        for n in range(KEPT_SKIPS + 5):
            archive.writestr(f"bad{n}.xml", b"<not-closed>")
        lines = [METADATA_HEADER, *(metadata_line(doc) for doc in docs), "garbage~line"]
        archive.writestr("meta.txt", "\r\n".join(lines).encode())
    with engine.begin() as connection:
        result = index_package(connection, path, Direction.ISSUED, now=NOW, batch_size=16)
    assert result.records == 100 and result.rows == 50 + 50
    assert result.skipped == KEPT_SKIPS + 6 and len(result.skip_reasons) == KEPT_SKIPS
    assert result.skip_reasons[0].startswith("bad0.xml: MalformedXml")
    with engine.connect() as connection:
        rows = connection.execute(sa.select(Cfdi.direction, Cfdi.status)).all()
    assert len(rows) == 50 and {direction for direction, _ in rows} == {"issued"}
    assert sum(1 for _, status in rows if status == "cancelado") == sum(1 for doc in docs if doc.cancelled)
    (tmp_path / "broken.zip").write_bytes(b"nothing")
    with pytest.raises(PackageError), engine.begin() as connection:
        index_package(connection, tmp_path / "broken.zip", Direction.ISSUED, now=NOW)
    engine.dispose()
