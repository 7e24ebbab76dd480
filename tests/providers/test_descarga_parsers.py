"""Property tests of the package reader: generated and hostile CFDI XML, metadata lines and ZIPs.

Whatever an entry holds, reading it yields a record or a typed `EntryError`, never another
exception, and never an expanded entity.
"""

from __future__ import annotations

import io
import time
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.mysuite.descarga import (
    BadMetadataLine,
    CannotSplit,
    CfdiRecord,
    CfdiStatus,
    Direction,
    DownloadQuery,
    EntryError,
    EntryTooLarge,
    MalformedXml,
    NotACfdi,
    PackageError,
    Period,
    RequestKind,
    RuleViolation,
    SkippedEntry,
    TaxIdRole,
    UnsafeXml,
    check_query,
    iter_package,
    parse_cfdi_xml,
    read_metadata,
    split_period,
)
from providers.mysuite.descarga.records import MEXICO_CITY
from sandbox.mysuite.cfdigen import METADATA_HEADER, cfdi_xml, fake_cfdi, metadata_line, write_package

documents = st.builds(
    fake_cfdi,
    key=st.text(min_size=1, max_size=20),
    taxpayer=st.sampled_from(["JES900109Q90", "AAA010101AAA", "XAXX010101000"]),
    received=st.booleans(),
    issued_epoch=st.floats(min_value=1.5e9, max_value=1.8e9),
    cancelled_rate=st.sampled_from([0.0, 0.5, 1.0]),
)

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n'.encode() for n in range(1, 10)
    )
    + b']>\n<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="&lol9;"/>'
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="&x;"/>'
)

CFDI33 = b"""<?xml version="1.0" encoding="UTF-8"?>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3" Fecha="2021-05-05T11:30:30" Total="10.90"
 TipoDeComprobante="E"><cfdi:Emisor Rfc="aaa010101aaa" Nombre="EMISOR &amp; CIA &amp;#38;"/>
<cfdi:Receptor Rfc="XAXX010101000" Nombre="PUBLICO"/><cfdi:Complemento><other:Thing xmlns:other="urn:x"/>
<tfd:TimbreFiscalDigital xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" Version="1.1"
 UUID="C5D92A93-FFAD-45D9-A08B-9C11046BAA21" FechaTimbrado="2021-05-05T11:31:00"/></cfdi:Complemento>
<cfdi:Addenda><tfd:TimbreFiscalDigital xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital"
 UUID="00000000-0000-4000-8000-000000000000"/></cfdi:Addenda></cfdi:Comprobante>"""

RETENCIONES10 = b"""<?xml version="1.0" encoding="UTF-8"?>
<retenciones:Retenciones xmlns:retenciones="http://www.sat.gob.mx/esquemas/retencionpago/1" Version="1.0"
 FechaExp="2019-03-01T10:00:00-06:00" CveRetenc="14"><retenciones:Emisor RFCEmisor="AAA010101AAA"
 NomDenRazSocE="RETENEDOR SA"/><retenciones:Receptor Nacionalidad="Nacional"><retenciones:Nacional
 RFCRecep="JES900109Q90" NomDenRazSocR="RECEPTOR SA"/></retenciones:Receptor><retenciones:Periodo MesIni="1"
 MesFin="1" Ejerc="2019"/><retenciones:Totales montoTotOperacion="1000.00" montoTotGrav="0" montoTotExent="0"
 montoTotRet="100"/><retenciones:Complemento><tfd:TimbreFiscalDigital
 xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" UUID="11111111-2222-4333-8444-555555555555"
 FechaTimbrado="2019-03-01T10:05:00"/></retenciones:Complemento></retenciones:Retenciones>"""

RETENCIONES20 = b"""<?xml version="1.0" encoding="UTF-8"?>
<retenciones:Retenciones xmlns:retenciones="http://www.sat.gob.mx/esquemas/retencionpago/2" Version="2.0"
 FechaExp="2023-03-01T10:00:00"><retenciones:Emisor RfcE="AAA010101AAA" NomDenRazSocE="RETENEDOR SA"/>
<retenciones:Receptor NacionalidadR="Extranjero"><retenciones:Extranjero NumRegIdTribR="998877"
 NomDenRazSocR="FOREIGN LLC"/></retenciones:Receptor><retenciones:Totales MontoTotOperacion="2500.50"
 MontoTotGrav="0" MontoTotExent="0" MontoTotRet="10"/><retenciones:Complemento><tfd:TimbreFiscalDigital
 xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" UUID="AAAAAAAA-2222-4333-8444-555555555555"
 FechaTimbrado="2023-03-01T10:05:00"/></retenciones:Complemento></retenciones:Retenciones>"""


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MEXICO_CITY).astimezone(UTC)


# -- CFDI XML -------------------------------------------------------------------------------------


@given(documents)
def test_generated_cfdi_round_trip(doc) -> None:
    record = parse_cfdi_xml(cfdi_xml(doc), Direction.RECEIVED)
    assert record.uuid == doc.uuid.lower()
    assert (record.issuer_rfc, record.issuer_name) == (doc.issuer_rfc, doc.issuer_name)
    assert (record.receiver_rfc, record.receiver_name) == (doc.receiver_rfc, doc.receiver_name)
    assert record.issued_at == local(doc.issued) and record.certified_at == local(doc.certified)
    assert record.total == Decimal(doc.total) and record.type == doc.type
    assert record.status is None and record.direction is Direction.RECEIVED


@given(documents, st.data())
def test_chunked_feeding_gives_the_same_record(doc, data) -> None:
    xml = cfdi_xml(doc)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(xml)), max_size=8)))
    pieces = [xml[a:b] for a, b in zip([0, *cuts], [*cuts, len(xml)], strict=True)]
    assert parse_cfdi_xml(iter(pieces), Direction.ISSUED) == parse_cfdi_xml(xml, Direction.ISSUED)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_record_or_a_typed_error(data: bytes) -> None:
    try:
        record = parse_cfdi_xml(data, Direction.ISSUED)
    except EntryError:
        return
    assert isinstance(record, CfdiRecord)


@given(documents, st.data())
def test_damaged_cfdi_gives_a_record_or_a_typed_error(doc, data) -> None:
    """…and leaves the thread's reused parser clean for the next entry."""
    original = cfdi_xml(doc)
    expected = parse_cfdi_xml(original, Direction.ISSUED)
    xml = bytearray(original)
    for _ in range(data.draw(st.integers(1, 5))):
        position = data.draw(st.integers(0, len(xml) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            xml[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del xml[position:]
            if not xml:
                break
        else:
            xml[position:position] = data.draw(
                st.sampled_from([b"&", b"<", b"<!DOCTYPE x>", b"&lol;", b"\x00", b"]]>"])
            )
    try:
        record = parse_cfdi_xml(bytes(xml), Direction.ISSUED)
    except EntryError:
        record = None
    assert record is None or isinstance(record, CfdiRecord)
    assert parse_cfdi_xml(original, Direction.ISSUED) == expected


def test_billion_laughs_is_refused_without_expansion() -> None:
    started = time.perf_counter()
    with pytest.raises(UnsafeXml):
        parse_cfdi_xml(BILLION_LAUGHS, Direction.ISSUED)
    with pytest.raises(UnsafeXml):
        parse_cfdi_xml(EXTERNAL_ENTITY, Direction.ISSUED)
    # Expanding 10**9 "lol"s would take seconds and gigabytes; refusing it takes microseconds.
    assert time.perf_counter() - started < 5


def test_undeclared_entities_and_non_cfdi_are_typed() -> None:
    with pytest.raises(MalformedXml):
        parse_cfdi_xml(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="&lol;"/>', Direction.ISSUED)
    with pytest.raises(NotACfdi):
        parse_cfdi_xml(b"<Invoice><UUID>x</UUID></Invoice>", Direction.ISSUED)
    foreign = CFDI33.replace(b"http://www.sat.gob.mx/cfd/3", b"urn:other")
    with pytest.raises(NotACfdi):
        parse_cfdi_xml(foreign, Direction.ISSUED)
    with pytest.raises(EntryTooLarge):
        parse_cfdi_xml(CFDI33, Direction.ISSUED, limit=100)


def test_cfdi_33_takes_the_stamp_of_the_complemento_not_the_addenda() -> None:
    record = parse_cfdi_xml(CFDI33, Direction.ISSUED)
    assert record.uuid == "c5d92a93-ffad-45d9-a08b-9c11046baa21"
    assert record.issuer_rfc == "AAA010101AAA" and record.issuer_name == "EMISOR & CIA &#38;"
    assert record.type == "E" and record.total == Decimal("10.90")
    assert record.certified_at == local("2021-05-05T11:31:00")


def test_retenciones_10_and_20() -> None:
    first = parse_cfdi_xml(RETENCIONES10, Direction.RECEIVED)
    assert (first.uuid, first.issuer_rfc, first.receiver_rfc) == (
        "11111111-2222-4333-8444-555555555555",
        "AAA010101AAA",
        "JES900109Q90",
    )
    assert first.type == "RET" and first.total == Decimal("1000.00") and first.receiver_name == "RECEPTOR SA"
    assert first.issued_at is None  # an offset is not SAT's CFDI date form; the stamp time still is
    assert first.certified_at == local("2019-03-01T10:05:00")
    second = parse_cfdi_xml(RETENCIONES20, Direction.RECEIVED)
    assert second.issuer_rfc == "AAA010101AAA" and second.receiver_rfc == "998877"
    assert second.total == Decimal("2500.50") and second.issued_at == local("2023-03-01T10:00:00")


# -- metadata -------------------------------------------------------------------------------------


def metadata_records(text: bytes) -> list[CfdiRecord | SkippedEntry]:
    return list(read_metadata(io.BytesIO(text), "m.txt", Direction.ISSUED))


@given(st.lists(documents, max_size=20), st.sampled_from([b"\r\n", b"\n"]))
def test_generated_metadata_round_trip(docs, newline: bytes) -> None:
    text = newline.join([METADATA_HEADER.encode(), *(metadata_line(doc).encode() for doc in docs)]) + newline
    records = metadata_records(text)
    assert [record.uuid for record in records if isinstance(record, CfdiRecord)] == [doc.uuid.lower() for doc in docs]
    for doc, record in zip(docs, records, strict=True):
        assert isinstance(record, CfdiRecord)
        assert record.status is (CfdiStatus.CANCELADO if doc.cancelled else CfdiStatus.VIGENTE)
        assert record.cancelled_at == (local(doc.cancelled) if doc.cancelled else None)
        assert record.total == Decimal(doc.total) and record.type == doc.type
        assert record.issued_at == local(doc.issued) and record.pac_rfc == "SPR190613I52"


def test_metadata_columns_are_read_by_header_name() -> None:
    header = "Uuid~RfcEmisor~NombreEmisor~RfcReceptor~NombreReceptor~RfcPac~FechaEmision~FechaCertificacionSat~Monto~EfectoComprobante~Estatus~FechaCancelacion~RfcACuentaTerceros~NombreACuentaTerceros"
    line = "C5D92A93-FFAD-45D9-A08B-9C11046BAA21~AAA010101AAA~EMISOR~JES900109Q90~RECEPTOR~SPR190613I52~2024-01-02 10:00:00~2024-01-02 10:01:00~116.00~I~0~2024-02-01 09:00:00~~"
    # A name with a bare LF inside a CRLF file stays one record.
    broken = line.replace("~EMISOR~", "~EMI\nSOR~")
    records = metadata_records(f"{header}\r\n{line}\r\n{broken}\r\n".encode())
    assert len(records) == 2 and all(isinstance(record, CfdiRecord) for record in records)
    first = records[0]
    assert isinstance(first, CfdiRecord)
    assert first.status is CfdiStatus.CANCELADO and first.cancelled_at == local("2024-02-01T09:00:00")


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200), max_size=20))
def test_arbitrary_metadata_lines_give_records_or_skips(lines: list[str]) -> None:
    text = "\r\n".join([METADATA_HEADER, *lines]).encode("utf-8")
    for item in metadata_records(text):
        assert isinstance(item, CfdiRecord | SkippedEntry)
        if isinstance(item, SkippedEntry):
            assert isinstance(item.error, BadMetadataLine)


@given(st.binary(max_size=3000))
def test_arbitrary_metadata_bytes_give_records_or_skips(data: bytes) -> None:
    for item in metadata_records(data):
        assert isinstance(item, CfdiRecord | SkippedEntry)


def test_bad_metadata_header_and_shifted_lines_are_skipped() -> None:
    [skipped] = metadata_records(b"Folio~Total\r\n1~2\r\n")
    assert isinstance(skipped, SkippedEntry) and isinstance(skipped.error, BadMetadataLine)
    shifted = METADATA_HEADER + "\r\n" + "~".join(["C5D92A93-FFAD-45D9-A08B-9C11046BAA21"] + ["x"] * 12) + "\r\n"
    [line] = metadata_records(shifted.encode())
    assert isinstance(line, SkippedEntry) and line.line == 2
    overlong = METADATA_HEADER + "\r\n" + "x" * (20 << 10) + "\r\n"
    [long_line] = metadata_records(overlong.encode())
    assert isinstance(long_line, SkippedEntry)


# -- packages -------------------------------------------------------------------------------------


def test_a_package_with_bad_entries_indexes_the_good_ones(tmp_path: Path) -> None:
    docs = [fake_cfdi(f"k{n}", "JES900109Q90", True, 1.7e9 + n) for n in range(5)]
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for doc in docs[:3]:
            archive.writestr(f"{doc.uuid}.xml", cfdi_xml(doc))
        archive.writestr("laughs.xml", BILLION_LAUGHS)
        archive.writestr("bomb.xml", b"<a>" + b" " * (20 << 20) + b"</a>")
        archive.writestr("broken.xml", cfdi_xml(docs[3])[:200])
        archive.writestr("notes.pdf", b"%PDF-1.4")
        archive.writestr("dir/", b"")
        archive.writestr("meta.txt", (METADATA_HEADER + "\r\n" + metadata_line(docs[4]) + "\r\n").encode())
    items = list(iter_package(path, Direction.RECEIVED, max_entry_bytes=1 << 20))
    records = [item for item in items if isinstance(item, CfdiRecord)]
    skipped = {item.name: item.error for item in items if isinstance(item, SkippedEntry)}
    assert {record.uuid for record in records} == {doc.uuid.lower() for doc in docs[:3]} | {docs[4].uuid.lower()}
    assert isinstance(skipped["laughs.xml"], UnsafeXml)
    assert isinstance(skipped["bomb.xml"], EntryTooLarge)
    assert isinstance(skipped["broken.xml"], MalformedXml)
    assert set(skipped) == {"laughs.xml", "bomb.xml", "broken.xml", "notes.pdf"}


def test_a_generated_package_reads_back_whole(tmp_path: Path) -> None:
    docs = [fake_cfdi(f"p{n}", "AAA010101AAA", False, 1.7e9 + 60 * n) for n in range(300)]
    for kind in ("cfdi", "metadata"):
        path = tmp_path / f"{kind}.zip"
        assert write_package(path, docs, kind) == 300
        items = list(iter_package(path, Direction.ISSUED))
        assert [item.uuid for item in items if isinstance(item, CfdiRecord)] == [doc.uuid.lower() for doc in docs]


def test_not_a_zip_is_a_package_error(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PackageError):
        list(iter_package(path, Direction.ISSUED))


# -- periods and rules ----------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2021, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@given(moments, st.integers(min_value=0, max_value=400 * 86400))
def test_split_halves_cover_the_period_exactly(start: datetime, seconds: int) -> None:
    start = start.replace(microsecond=0)
    period = Period(start, start + timedelta(seconds=seconds))
    if seconds < 3:
        with pytest.raises(CannotSplit):
            split_period(period)
        return
    first, second = split_period(period)
    assert first.start == period.start and second.end == period.end
    assert second.start == first.end + timedelta(seconds=1)
    assert first.start < first.end and second.start < second.end
    assert abs(first.seconds - second.seconds) <= 1


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(moments, moments, moments, st.sampled_from(list(TaxIdRole)), st.sampled_from(list(RequestKind)))
def test_check_query_passes_or_names_a_rule(start, end, now, role, kind) -> None:
    query = DownloadQuery(rfc="JES900109Q90", period=Period(start, end), role=role, kind=kind)
    try:
        check_query(query, now)
    except RuleViolation as exc:
        assert exc.rule.value == exc.code
        return
    assert int(start.timestamp()) < int(end.timestamp())
    assert start >= datetime(now.year - 6, 1, 1, tzinfo=UTC) - timedelta(days=1)


def test_history_floor_is_today_minus_six_years_at_midnight() -> None:
    now = datetime(2025, 1, 13, 14, 15, 16, tzinfo=MEXICO_CITY)
    ok = DownloadQuery(
        rfc="JES900109Q90",
        period=Period(datetime(2019, 1, 13, tzinfo=MEXICO_CITY), datetime(2019, 2, 1, tzinfo=MEXICO_CITY)),
        role=TaxIdRole.EMISOR,
        kind=RequestKind.CFDI,
    )
    check_query(ok, now)
    early = Period(datetime(2019, 1, 12, 23, 59, 59, tzinfo=MEXICO_CITY), ok.period.end)
    with pytest.raises(RuleViolation):
        check_query(DownloadQuery(rfc=ok.rfc, period=early, role=ok.role, kind=ok.kind), now)


class _Unseekable(io.RawIOBase):
    """A sink zipfile cannot seek back in, so it defers sizes to data descriptors (flag bit 3)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def test_an_archive_with_data_descriptors_is_read_through_its_directory(tmp_path: Path) -> None:
    docs = [fake_cfdi(f"d{n}", "JES900109Q90", True, 1.7e9 + n) for n in range(4)]
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for doc in docs:
            archive.writestr(f"{doc.uuid}.xml", cfdi_xml(doc))
    path = tmp_path / "descriptors.zip"
    path.write_bytes(bytes(sink.data))
    items = list(iter_package(path, Direction.RECEIVED))
    assert [item.uuid for item in items if isinstance(item, CfdiRecord)] == [doc.uuid.lower() for doc in docs]


def test_a_damaged_member_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    docs = [fake_cfdi(f"c{n}", "JES900109Q90", True, 1.7e9 + n) for n in range(3)]
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for doc in docs:
            archive.writestr(f"{doc.uuid}.xml", cfdi_xml(doc))
    data = bytearray(path.read_bytes())
    middle = data.index(docs[1].uuid.encode(), data.index(b"PK\x03\x04", 10) + 60)
    data[middle] ^= 0x01  # the second document's UUID inside its data: the CRC no longer matches
    path.write_bytes(bytes(data))
    items = list(iter_package(path, Direction.RECEIVED))
    assert [item.uuid for item in items if isinstance(item, CfdiRecord)] == [docs[0].uuid.lower(), docs[2].uuid.lower()]
    [skipped] = [item for item in items if isinstance(item, SkippedEntry)]
    assert skipped.name == f"{docs[1].uuid}.xml" and "cannot be decompressed" in str(skipped.error)
