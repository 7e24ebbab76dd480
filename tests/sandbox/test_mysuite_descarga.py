"""The Descarga Masiva transactions of the MYSuite sandbox, spoken to on the wire (raw SOAP over HTTP)."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

from sandbox.mysuite.cfdigen import period_count, period_documents
from tests.sandbox.conftest import SYNC, Client

MEXICO = timedelta(hours=-6)


def params(name: str, **entries: str) -> str:
    body = "".join(f"<Entry k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in entries.items())
    return base64.b64encode(f'<Dictionary name="{name}">{body}</Dictionary>'.encode()).decode()


def wire(moment: datetime) -> str:
    return (moment + MEXICO).strftime("%Y-%m-%d %H:%M:%S")


def register(mysuite: Client, **overrides: str) -> Any:
    now = datetime.now(UTC).replace(microsecond=0)
    entries = {
        "FielCer": "Q0VS",
        "FielKey": "S0VZ",
        "FielPass": "pass",
        "Servicio": "CFDIS",
        "FechaInicial": wire(now - timedelta(days=3)),
        "FechaFinal": wire(now - timedelta(days=1)),
        "TipoSolicitud": "CFDI",
        "TipoTaxID": "RECEPTOR",
        "EstadoComprobante": "Vigente",
    }
    entries.update(overrides)
    return mysuite.call("REGISTRAR_SOLICITUD_DM_SAT", params("Params", **entries), path=SYNC)


def solicitudes(answer: Any) -> list[dict[str, str]]:
    root = etree.fromstring(answer.decoded(1))
    return [dict(item.attrib) for item in root.iter("Solicitud")]


def test_registrar_answers_one_record_per_request(mysuite: Client) -> None:
    answer = register(mysuite, TipoTaxID="AMBOS", TipoSolicitud="Metadata", Servicio="AMBOS")
    assert answer.result and answer.code == 1
    records = solicitudes(answer)
    assert len(records) == 4 and all(record["CodEstatus"] == "5000" and record["Id"] for record in records)
    assert {(r["Servicio"], r["TipoTaxID"]) for r in records} == {
        ("CFDIS", "EMISOR"),
        ("CFDIS", "RECEPTOR"),
        ("RETENCIONES", "EMISOR"),
        ("RETENCIONES", "RECEPTOR"),
    }


def test_registrar_refuses_a_call_without_fiel_or_dates(mysuite: Client) -> None:
    missing = register(mysuite, FielPass="")
    assert not missing.result and missing.code == 9010 and "FielPass" in (missing.text("Response/Data") or "")
    bad_date = register(mysuite, FechaInicial="2024-13-45")
    assert not bad_date.result and bad_date.code == 9010
    garbage = mysuite.call("REGISTRAR_SOLICITUD_DM_SAT", "not base64!", path=SYNC)
    assert not garbage.result and garbage.code == 9010
    laughs = base64.b64encode(b'<!DOCTYPE d [<!ENTITY a "aaaa">]><Dictionary name="Params"/>').decode()
    assert mysuite.call("REGISTRAR_SOLICITUD_DM_SAT", laughs, path=SYNC).code == 9010


def test_v15_rules_answer_301(mysuite: Client) -> None:
    cases: tuple[dict[str, str], ...] = (
        {"EstadoComprobante": "Todos"},
        {"FechaInicial": "2015-01-01 00:00:00", "FechaFinal": "2015-02-01 00:00:00"},
        {"FechaInicial": "2026-01-01 00:00:00", "FechaFinal": "2026-01-01 00:00:00"},
    )
    for overrides in cases:
        [record] = solicitudes(register(mysuite, **overrides))
        assert record["CodEstatus"] == "301" and record["Mensaje"].startswith("XML Mal Formado")
        assert "Id" not in record
    assert mysuite.counters()["descarga"]["requests"] == {}


def test_obtener_solicitud_follows_the_timeline_and_counts_polls(mysuite: Client) -> None:
    mysuite.admin(dm_timeline="1,2,3", dm_step_seconds=1.0, dm_package_size=15)
    [record] = solicitudes(register(mysuite))
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = mysuite.call("OBTENER_SOLICITUD_DM_SAT", record["Id"], path=SYNC)
        root = etree.fromstring(answer.decoded(1))
        seen.append(root.get("EstadoSolicitud"))
        if root.get("EstadoSolicitud") == "3":
            break
        time.sleep(0.05)
    assert seen[0] == "1" and "2" in seen and seen[-1] == "3"
    assert root.get("NumeroCFDIs") == "40" and len(root.findall("Paquete")) == 3
    assert mysuite.counters()["descarga"]["requests"][record["Id"]]["polls"] == len(seen)


def test_link_download_and_file_counters(mysuite: Client) -> None:
    mysuite.admin(dm_step_seconds=0, dm_package_size=100)
    [record] = solicitudes(register(mysuite, TipoSolicitud="Metadata", TipoTaxID="EMISOR"))
    root = etree.fromstring(mysuite.call("OBTENER_SOLICITUD_DM_SAT", record["Id"], path=SYNC).decoded(1))
    package = root.find("Paquete").get("Id")
    link = mysuite.call("OBTENER_LINK_ARCHIVO_DM_SAT", record["Id"], package, path=SYNC)
    assert link.result
    url = link.decoded(1).decode()
    for _ in range(2):  # the link itself may be fetched again; only link requests count against SAT
        body = mysuite.http.get(url).content
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        [name] = archive.namelist()
        lines = archive.read(name).decode().split("\r\n")
    assert lines[0].startswith("Uuid~RfcEmisor~") and len([line for line in lines[1:] if line]) == 40
    assert mysuite.counters()["descarga"]["packages"][package.lower()] == {"links": 1, "refused": 0, "downloads": 2}
    assert mysuite.call("OBTENER_LINK_ARCHIVO_DM_SAT", record["Id"], "NOPE_01", path=SYNC).code == 9005
    assert mysuite.call("OBTENER_LINK_ARCHIVO_DM_SAT", "nope", package, path=SYNC).code == 9005


def test_lista_pages_in_json_and_xml(mysuite: Client) -> None:
    mysuite.admin(dm_step_seconds=0)
    register(mysuite, TipoTaxID="AMBOS", TipoSolicitud="AMBOS")
    pars = params("Pars", Page="1", PageSize="3", ResponseFormat="JSON", Oper="BOTH", Order="TipoTaxID ASC")
    page = json.loads(mysuite.call("OBTENER_LISTA_SOLICITUDES_DM_SAT", pars, path=SYNC).decoded(1))
    assert (page["TotalRows"], page["TotalPages"], len(page["Rows"])) == (4, 2, 3)
    assert page["Rows"][0]["TipoTaxID"] == "EMISOR"
    filters = base64.b64encode(
        b'<Filters><Filter Name="TipoSolicitud" Oper="=" Value1="CFDI" Value2="" /></Filters>'
    ).decode()
    pars = params("Pars", Page="1", PageSize="10", ResponseFormat="XML", Filters=filters)
    root = etree.fromstring(mysuite.call("OBTENER_LISTA_SOLICITUDES_DM_SAT", pars, path=SYNC).decoded(1))
    assert root.get("TotalRows") == "2" and {item.get("TipoSolicitud") for item in root} == {"CFDI"}
    count = json.loads(
        mysuite.call(
            "OBTENER_LISTA_SOLICITUDES_DM_SAT", params("Pars", Oper="COUNT", ResponseFormat="JSON"), path=SYNC
        ).decoded(1)
    )
    assert count["TotalRows"] == 4 and "Rows" not in count
    assert mysuite.call("OBTENER_LISTA_SOLICITUDES_DM_SAT", params("Pars", Oper="LINES"), path=SYNC).code == 9010


def test_dm_knobs_are_validated(mysuite: Client) -> None:
    response = mysuite.http.post("/mysuite/_admin/config", json={"dm_timeline": "1,9"})
    assert response.status_code == 400
    response = mysuite.http.post("/mysuite/_admin/config", json={"dm_max_downloads": 0})
    assert response.status_code == 400


def test_generated_documents_are_a_function_of_the_day() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    end = datetime(2025, 3, 11, 12, tzinfo=UTC).timestamp()
    whole = [doc.uuid for doc in period_documents(7, "JES900109Q90", True, start, end, 13)]
    middle = start + (end - start) / 2
    halves = [doc.uuid for doc in period_documents(7, "JES900109Q90", True, start, middle, 13)]
    halves += [doc.uuid for doc in period_documents(7, "JES900109Q90", True, middle + 1, end, 13)]
    assert whole == halves and len(set(whole)) == len(whole) == period_count(start, end, 13)
    assert [doc.uuid for doc in period_documents(8, "JES900109Q90", True, start, end, 13)] != whole
