"""Fault knobs, outage, bench preset and the admin API."""

from __future__ import annotations

import time

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount

from sandbox.knobs import ConfigError
from sandbox.mysuite import MySuiteSandboxConfig, create_app
from sandbox.server import ServerThread
from tests.sandbox.conftest import ASYNC, Client, b64, envelope, native_xml


def submit_raw(mysuite: Client, internal_id: str) -> httpx.Response:
    return mysuite.post(ASYNC, envelope("ASYNC_CONVERT_NATIVE_XML", b64(native_xml()), internal_id))


def test_latency_is_added_to_every_soap_call(mysuite: Client) -> None:
    mysuite.admin(latency_ms=300)
    started = time.monotonic()
    assert mysuite.submit("slow").result
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("knob", ["http500_rate", "soap_fault_rate"])
def test_500_faults_happen_before_any_effect(mysuite: Client, knob: str) -> None:
    mysuite.admin(**{knob: 1})
    response = submit_raw(mysuite, "f500")
    assert response.status_code == 500
    is_fault = response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope')
    assert is_fault == (knob == "soap_fault_rate")
    if is_fault:
        assert etree.fromstring(response.content).findtext(".//faultcode") == "soap:Server"
    counter = mysuite.counters()["async"]["f500"]
    assert counter == counter | {"calls": 1, "faults": 1, "documents": 0}
    mysuite.admin(**{knob: 0})
    assert mysuite.submit("f500").result


def test_drop_before_effect_creates_nothing(mysuite: Client) -> None:
    mysuite.admin(drop_rate=1)
    with pytest.raises(httpx.TransportError):
        submit_raw(mysuite, "dropped")
    mysuite.admin(drop_rate=0)
    assert mysuite.counters()["async"]["dropped"]["documents"] == 0
    assert mysuite.submit("dropped").result


def test_drop_after_effect_makes_the_resend_answer_3196(mysuite: Client) -> None:
    mysuite.admin(drop_after_rate=1)
    with pytest.raises(httpx.TransportError):
        submit_raw(mysuite, "lost-answer")
    mysuite.admin(drop_after_rate=0)
    resend = mysuite.submit("lost-answer")
    assert not resend.result and resend.code == 3196
    counter = mysuite.counters()["async"]["lost-answer"]
    assert counter["documents"] == 1 and counter["duplicates"] == 1 and counter["calls"] == 2
    assert resend.data(1) == counter["request_id"]


def test_malformed_answer_after_effect(mysuite: Client) -> None:
    mysuite.admin(malformed_rate=1)
    response = submit_raw(mysuite, "garbled")
    assert response.status_code == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(response.content)
    assert mysuite.counters()["async"]["garbled"]["documents"] == 1


def test_outage_503_covers_soap_and_wsdl(mysuite: Client) -> None:
    mysuite.admin(outage=True)
    assert submit_raw(mysuite, "down").status_code == 503
    assert mysuite.http.get(f"{ASYNC}?WSDL").status_code == 503
    mysuite.admin(outage=False)
    assert "down" not in mysuite.counters()["async"]
    assert mysuite.submit("down").result


def test_outage_by_dropped_connections(mysuite: Client) -> None:
    mysuite.admin(outage=True, outage_mode="drop")
    with pytest.raises(httpx.TransportError):
        submit_raw(mysuite, "down-drop")


def test_fault_transactions_limits_the_rates(mysuite: Client) -> None:
    request_id = mysuite.submit("filtered").data(1) or ""
    mysuite.admin(http500_rate=1, fault_transactions=["ASYNC_CONVERT_NATIVE_XML"])
    assert mysuite.call("ASYNC_CONVERT_VERIFY", request_id).result
    assert submit_raw(mysuite, "filtered-2").status_code == 500
    totals = mysuite.counters()["transactions"]
    assert totals["ASYNC_CONVERT_VERIFY"] == {"calls": 1, "faults": 0}
    assert totals["ASYNC_CONVERT_NATIVE_XML"] == {"calls": 2, "faults": 1}


def test_fault_stream_is_reproducible_from_the_seed(mysuite: Client) -> None:
    def statuses() -> list[int]:
        mysuite.http.post("/mysuite/_admin/reset")
        mysuite.admin(http500_rate=0.5, seed=11)
        return [submit_raw(mysuite, f"seeded-{n}").status_code for n in range(12)]

    first, second = statuses(), statuses()
    assert first == second and set(first) == {200, 500}


def test_files_are_faulted_only_when_asked(mysuite: Client) -> None:
    mysuite.admin(processing_base_seconds=0)
    request_id = mysuite.submit("files").data(1) or ""
    link = mysuite.call("ASYNC_RETRIEVE_DOCUMENT", request_id).decoded(1).decode()
    mysuite.admin(http500_rate=1)
    assert httpx.get(link).status_code == 200
    mysuite.admin(faults_on_files=True)
    assert httpx.get(link).status_code == 500
    mysuite.admin(http500_rate=0, drop_rate=1)
    with pytest.raises(httpx.TransportError):
        httpx.get(link)
    mysuite.admin(drop_rate=0, outage=True)
    assert httpx.get(link).status_code == 503
    assert mysuite.counters()["files"]["faults"] == 2


def test_bench_preset_removes_minimum_and_waiting(mysuite: Client) -> None:
    config = mysuite.admin(preset="bench", latency_ms=5)
    assert config["min_bytes"] == 0 and config["processing_base_seconds"] == 0 and config["seconds_per_mb"] == 0
    assert config["latency_ms"] == 5
    config = mysuite.admin(preset="bench")
    assert config["latency_ms"] == 0
    answer = mysuite.call("ASYNC_CONVERT_NATIVE_XML", b64(native_xml(300)), "tiny")
    assert answer.result
    assert mysuite.call("ASYNC_RETRIEVE_DOCUMENT", answer.data(1) or "").result
    restored = mysuite.admin(preset="default")
    assert restored["min_bytes"] == 1024 and restored["processing_base_seconds"] == 0.25


def test_admin_config_round_trip_and_validation(mysuite: Client) -> None:
    config = mysuite.http.get("/mysuite/_admin/config").json()
    assert config["env"] == "test" and config["effective_max_bytes"] == 4 * 1024 * 1024
    assert config["link_ttl_seconds"] == 5 * 24 * 3600 and config["effective_processor"] == "TEST-BACK02"
    updated = mysuite.admin(max_bytes=5000, fault_transactions="ASYNC_CONVERT_VERIFY, GET_DOCUMENT")
    assert updated["effective_max_bytes"] == 5000
    assert updated["fault_transactions"] == ["ASYNC_CONVERT_VERIFY", "GET_DOCUMENT"]
    for bad in ({"nope": 1}, {"failure_rate": 2}, {"env": "staging"}, {"latency_ms": "x"}, {"preset": "x"}):
        response = mysuite.http.post("/mysuite/_admin/config", json=bad)
        assert response.status_code == 400 and "error" in response.json()
    assert mysuite.http.post("/mysuite/_admin/config", content=b"[1]").status_code == 400
    assert mysuite.http.post("/mysuite/_admin/config", content=b"{").status_code == 400
    assert mysuite.http.get("/mysuite/_admin/config").json()["max_bytes"] == 5000


def test_reset_forgets_documents_and_counters(mysuite: Client) -> None:
    request_id = mysuite.submit("forget-me").data(1) or ""
    assert mysuite.http.post("/mysuite/_admin/reset").json() == {"reset": True}
    counters = mysuite.counters()
    assert counters["async"] == {} and counters["transactions"] == {} and counters["totals"]["requests"] == 0
    assert not mysuite.call("ASYNC_CONVERT_VERIFY", request_id).result
    assert mysuite.submit("forget-me").result


def test_counters_shape(mysuite: Client) -> None:
    mysuite.submit("shape")
    mysuite.call("CONVERT_NATIVE_XML", b64(native_xml(numero_interno="SH-1")), "XML")
    counters = mysuite.counters()
    entry = counters["async"]["shape"]
    assert set(entry) == {
        "calls", "documents", "duplicates", "faults", "entity", "request_id", "status", "ready_at", "size",
    }  # fmt: skip
    assert entry["status"] == 1 and entry["ready_at"] > time.time() - 1
    assert counters["sync"]["SH-1"] == {"calls": 1, "documents": 1}
    assert counters["totals"] == counters["totals"] | {"calls": 2, "faults": 0, "requests": 1, "issued": 2}


def test_configuration_from_the_environment() -> None:
    config = MySuiteSandboxConfig.from_env(
        {
            "SANDBOX_MYSUITE_ENV": "production",
            "SANDBOX_MYSUITE_FAILURE_RATE": "0.25",
            "SANDBOX_MYSUITE_OUTAGE": "true",
            "SANDBOX_MYSUITE_FAULT_TRANSACTIONS": "async_convert_verify,GET_DOCUMENT",
            "SANDBOX_MYSUITE_LATENCY_MS": "40",
            "SANDBOX_MYSUITE_MAX_BYTES": "",
        }
    )
    assert config.env == "production" and config.effective_max_bytes == 40 * 1024 * 1024
    assert config.failure_rate == 0.25 and config.outage is True and config.latency_ms == 40
    assert config.fault_transactions == ("ASYNC_CONVERT_VERIFY", "GET_DOCUMENT")
    bench = MySuiteSandboxConfig.from_env({"SANDBOX_MYSUITE_BENCH": "1", "SANDBOX_MYSUITE_LATENCY_MS": "40"})
    assert (bench.min_bytes, bench.processing_base_seconds, bench.seconds_per_mb, bench.latency_ms) == (
        0,
        0,
        0,
        0,
    )
    with pytest.raises(ConfigError):
        MySuiteSandboxConfig.from_env({"SANDBOX_MYSUITE_DROP_RATE": "1.5"})


def test_create_app_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MYSUITE_ENV", "production")
    monkeypatch.setenv("SANDBOX_MYSUITE_PROCESSOR", "LOCAL-01")
    app = Starlette(routes=[Mount("/mysuite", app=create_app())])
    with ServerThread(app) as server:
        config = httpx.get(f"{server.url}/mysuite/_admin/config").json()
    assert config["env"] == "production" and config["effective_processor"] == "LOCAL-01"
