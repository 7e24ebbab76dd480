"""Contract tests: the MYSuite client against the MYSuite sandbox over real HTTP, faults included."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.base import (
    AuthError,
    InvalidPayload,
    PermanentError,
    ProviderError,
    RateLimitedError,
    TransientError,
    VerifyStatus,
    add_request_observer,
)
from providers.links import LinkPolicy
from providers.mysuite import LinkExpired, MySuiteClient
from sandbox.server import ServerThread
from tests.providers.conftest import MySuiteSandbox
from tests.providers.mysuite_samples import native_xml

MakeClient = Callable[..., MySuiteClient]
REQUESTOR = "12211111-1111-1111-1111-111111111111"
LARGE = (1 << 20) + 4096  # just over the async minimum: goes to the async host

observations: list[tuple[str, str, str]] = []
_observations_lock = threading.Lock()


def _record(provider: str, operation: str, outcome: str, seconds: float) -> None:
    with _observations_lock:
        observations.append((provider, operation, outcome))


add_request_observer(_record)


def _observed_since(mark: int) -> list[tuple[str, str, str]]:
    with _observations_lock:
        return observations[mark:]


def _mark() -> int:
    with _observations_lock:
        return len(observations)


# -- the async happy path ------------------------------------------------------------------------


def test_async_submit_verify_retrieve_download(
    sandbox: MySuiteSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client()
    mark = _mark()
    submitted = client.submit(native_xml(LARGE, internal_id="INV-A1"), "INV-A1")
    assert not submitted.adopted and submitted.issued is None
    assert sandbox.counters()["async"]["INV-A1"]["request_id"] == submitted.request_id

    verified = client.verify(submitted.request_id)
    assert verified.status is VerifyStatus.ISSUED
    document = verified.document
    assert document is not None and document.guid and document.year and document.serial
    assert document.enrolled_at is not None
    assert abs(document.enrolled_at - datetime.now(UTC)) < timedelta(minutes=1)  # Mexico time read right

    before = datetime.now(UTC)
    retrieved = client.retrieve(submitted.request_id)
    assert set(retrieved.links) == {"xml", "pdf"}
    assert retrieved.expires_at is not None
    assert timedelta(days=5) - timedelta(seconds=5) < retrieved.expires_at - before <= timedelta(days=5, seconds=5)
    assert retrieved.document is not None and retrieved.document.guid == document.guid
    again = client.retrieve(submitted.request_id)
    assert again.links["xml"] != retrieved.links["xml"]  # every call makes new links

    for kind in ("xml", "pdf"):
        result = client.download(retrieved.links[kind], tmp_path / f"{kind}.zip")
        data = result.path.read_bytes()
        assert result.content_type == "application/zip"
        assert result.size == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
        with zipfile.ZipFile(result.path) as archive:
            inner = archive.read(archive.namelist()[0])
        assert (document.guid.encode() in inner) if kind == "xml" else inner.startswith(b"%PDF")
    assert not list(tmp_path.glob(".*.part"))

    operations = [(op, outcome) for provider, op, outcome in _observed_since(mark) if provider == "mysuite"]
    assert operations == [
        ("submit", "ok"),
        ("verify", "ok"),
        ("retrieve", "ok"),
        ("retrieve", "ok"),
        ("download", "ok"),
        ("download", "ok"),
    ]


def test_raw_link_content_is_sniffed(sandbox: MySuiteSandbox, make_client: MakeClient, tmp_path: Path) -> None:
    sandbox.configure(link_content="raw")
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-RAW"), "INV-RAW").request_id
    links = client.retrieve(request_id).links
    assert client.download(links["xml"], tmp_path / "a.xml").content_type == "application/xml"
    assert client.download(links["pdf"], tmp_path / "a.pdf").content_type == "application/pdf"


def test_pending_then_issued(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(processing_base_seconds=0.6)
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-P"), "INV-P").request_id
    pending = client.verify(request_id)
    assert pending.status is VerifyStatus.PENDING and pending.document is None
    with pytest.raises(PermanentError) as refused:  # links only exist for issued documents
        client.retrieve(request_id)
    assert refused.value.code == "9006" and not isinstance(refused.value, AuthError)
    time.sleep(0.7)
    assert client.verify(request_id).status is VerifyStatus.ISSUED


def test_failed_document(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(failure_rate=1.0)
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-F"), "INV-F").request_id
    result = client.verify(request_id)
    assert result.status is VerifyStatus.FAILED
    assert result.error_message is not None and result.error_message.startswith("CFDI40")  # base64-decoded


def test_json_copy_with_leading_space_is_read(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(json_leading_space=True)
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-J"), "INV-J").request_id
    assert client.verify(request_id).status is VerifyStatus.ISSUED


def test_duplicate_submit_is_adopted(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    payload = native_xml(LARGE, internal_id="INV-D")
    first = client.submit(payload, "INV-D")
    second = client.submit(payload, "INV-D", attempt=2)
    assert second.adopted and second.request_id == first.request_id
    counters = sandbox.counters()["async"]["INV-D"]
    assert (counters["documents"], counters["duplicates"]) == (1, 1)


def test_lost_async_answer_then_resend_adopts(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(drop_after_rate=1.0, fault_transactions=["ASYNC_CONVERT_NATIVE_XML"])
    client = make_client()
    payload = native_xml(LARGE, internal_id="INV-LOST")
    with pytest.raises(TransientError):
        client.submit(payload, "INV-LOST")
    assert sandbox.calls("ASYNC_CONVERT_NATIVE_XML") == 1  # submits are never retried in-call
    sandbox.configure(drop_after_rate=0.0)
    resent = client.submit(payload, "INV-LOST", attempt=2)
    assert resent.adopted
    assert sandbox.counters()["async"]["INV-LOST"]["documents"] == 1


# -- the sync path -------------------------------------------------------------------------------


def test_small_documents_are_converted_synchronously(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    result = client.submit(native_xml(internal_id="INV-S1"), "INV-S1")
    assert result.issued is not None and result.request_id == result.issued.guid
    assert result.issued.serial and result.issued.year
    assert result.files["xml"].lstrip().startswith(b"<") and result.issued.guid.encode() in result.files["xml"]
    assert result.files["pdf"].startswith(b"%PDF")
    assert sandbox.calls("CONVERT_NATIVE_XML") == 1 and sandbox.calls("ASYNC_CONVERT_NATIVE_XML") == 0


def test_resend_looks_up_before_converting(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    payload = native_xml(internal_id="INV-S2")
    first = client.submit(payload, "INV-S2")
    resent = client.submit(payload, "INV-S2", attempt=2)
    assert resent.adopted and resent.issued is not None and first.issued is not None
    assert resent.request_id == first.request_id
    assert (resent.issued.batch, resent.issued.serial) == (first.issued.batch, first.issued.serial)
    assert resent.files["xml"] and resent.files["pdf"]
    assert sandbox.counters()["sync"]["INV-S2"] == {"calls": 1, "documents": 1}
    assert sandbox.calls("LOOKUP_ISSUED_INTERNAL_ID") == 1 and sandbox.calls("GET_DOCUMENT") == 1


def test_resend_of_a_never_issued_document_converts(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    result = client.submit(native_xml(internal_id="INV-S3"), "INV-S3", attempt=3)
    assert result.issued is not None and not result.adopted
    assert sandbox.calls("LOOKUP_ISSUED_INTERNAL_ID") == 1
    assert sandbox.counters()["sync"]["INV-S3"] == {"calls": 1, "documents": 1}


def test_lost_sync_answer_is_not_converted_twice(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(drop_after_rate=1.0, fault_transactions=["CONVERT_NATIVE_XML"])
    client = make_client()
    payload = native_xml(internal_id="INV-S4")
    with pytest.raises(TransientError):
        client.submit(payload, "INV-S4")
    assert sandbox.calls("CONVERT_NATIVE_XML") == 1  # not retried in-call: not idempotent
    resent = client.submit(payload, "INV-S4", attempt=2)  # the fault knob is still on for converts
    assert resent.adopted and resent.issued is not None
    assert sandbox.counters()["sync"]["INV-S4"] == {"calls": 1, "documents": 1}


def test_invalid_native_document_is_permanent(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    without_version = native_xml(internal_id="INV-S5").replace(b"<fx:Version>8</fx:Version>", b"")
    with pytest.raises(PermanentError) as refused:
        client.submit(without_version, "INV-S5")
    assert refused.value.code == "9003" and type(refused.value) is PermanentError
    assert "Version" in (refused.value.data or "")


# -- size rules ----------------------------------------------------------------------------------


def test_test_environment_refuses_over_4_mib_without_calling(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client(environment="test")
    with pytest.raises(InvalidPayload, match="at most 4194304 bytes"):
        client.submit(native_xml((4 << 20) + 10_000), "INV-BIG")
    assert sandbox.counters()["totals"]["calls"] == 0


def test_production_environment_accepts_over_4_mib(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(env="production")
    client = make_client(environment="production")
    payload = native_xml(5 << 20, internal_id="INV-5M")
    result = client.submit(payload, "INV-5M")
    assert sandbox.counters()["async"]["INV-5M"]["size"] == len(payload)
    assert client.verify(result.request_id).status is VerifyStatus.ISSUED


def test_async_threshold_is_configurable(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(preset="bench")  # the simulator drops its 1 MB minimum as well
    client = make_client(async_min_bytes=0)
    result = client.submit(native_xml(internal_id="INV-T0"), "INV-T0")
    assert result.issued is None and sandbox.calls("ASYNC_CONVERT_NATIVE_XML") == 1


def test_provider_minimum_size_refusal_is_permanent(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client(async_min_bytes=0)  # misconfigured: small documents sent to the async host
    with pytest.raises(PermanentError) as refused:
        client.submit(native_xml(internal_id="INV-T1"), "INV-T1")
    assert refused.value.code == "9001" and type(refused.value) is PermanentError
    assert "servicio normal" in (refused.value.data or "")


# -- links ---------------------------------------------------------------------------------------


def test_expired_and_forged_links(sandbox: MySuiteSandbox, make_client: MakeClient, tmp_path: Path) -> None:
    sandbox.configure(link_ttl_seconds=0)
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-L"), "INV-L").request_id
    links = client.retrieve(request_id).links
    with pytest.raises(LinkExpired) as expired:
        client.download(links["xml"], tmp_path / "x.zip")
    assert links["xml"] not in str(expired.value)
    with pytest.raises(LinkExpired):
        client.download(links["pdf"][:-3] + "abc", tmp_path / "y.zip")
    assert not any(tmp_path.iterdir())  # nothing half-written left behind
    sandbox.configure(link_ttl_seconds=3600)
    fresh = client.retrieve(request_id).links  # the pipeline's answer to LinkExpired
    assert client.download(fresh["xml"], tmp_path / "x.zip").size > 0


def test_download_server_errors_are_transient(sandbox: MySuiteSandbox, make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-DL"), "INV-DL").request_id
    links = client.retrieve(request_id).links
    sandbox.configure(faults_on_files=True, http500_rate=1.0, fault_transactions=["FILES"])
    with pytest.raises(TransientError):
        client.download(links["xml"], tmp_path / "x.zip")
    assert sandbox.counters()["files"]["faults"] == 3  # retried in-call: downloads are idempotent
    sandbox.configure(http500_rate=0.0, drop_rate=1.0)
    with pytest.raises(TransientError):
        client.download(links["xml"], tmp_path / "x.zip")
    assert not any(tmp_path.iterdir())


# -- faults and their error classes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "code"),
    [
        ({"http500_rate": 1.0}, None),
        ({"soap_fault_rate": 1.0}, "soap:Server"),
        ({"drop_rate": 1.0}, None),
        ({"drop_after_rate": 1.0}, None),
        ({"malformed_rate": 1.0}, None),
        ({"outage": True}, None),
        ({"outage": True, "outage_mode": "drop"}, None),
    ],
)
def test_fault_knobs_are_transient_and_idempotent_calls_retry(
    sandbox: MySuiteSandbox, make_client: MakeClient, knobs: dict[str, Any], code: str | None
) -> None:
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-K"), "INV-K").request_id
    sandbox.configure(fault_transactions=["ASYNC_CONVERT_VERIFY"], **knobs)
    with pytest.raises(TransientError) as failed:
        client.verify(request_id)
    assert type(failed.value) is TransientError and failed.value.code == code
    if "outage" not in knobs:  # an outage answers before the call is counted
        assert sandbox.calls("ASYNC_CONVERT_VERIFY") == 3  # three tries in-call, then the pipeline's turn
    sandbox.configure(preset="default", processing_base_seconds=0, seconds_per_mb=0)
    assert client.verify(request_id).status is VerifyStatus.ISSUED


def test_in_call_retries_stop_while_the_provider_looks_down(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    """Three calls in a row without an answer: later calls are not retried in-call, until an answer."""
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-S"), "INV-S").request_id
    sandbox.configure(http500_rate=1.0, fault_transactions=["ASYNC_CONVERT_VERIFY"])
    with pytest.raises(TransientError):
        client.verify(request_id)
    assert sandbox.calls("ASYNC_CONVERT_VERIFY") == 3
    with pytest.raises(TransientError):
        client.verify(request_id)
    assert sandbox.calls("ASYNC_CONVERT_VERIFY") == 4  # one try: the provider looks down
    sandbox.configure(http500_rate=0.0)
    assert client.verify(request_id).status is VerifyStatus.ISSUED
    sandbox.configure(http500_rate=1.0)
    with pytest.raises(TransientError):
        client.verify(request_id)
    assert sandbox.calls("ASYNC_CONVERT_VERIFY") == 8  # the answer ended the streak: three tries again


def test_intermittent_faults_are_absorbed_by_in_call_retries(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-I"), "INV-I").request_id
    sandbox.configure(seed=7, http500_rate=0.3, fault_transactions=["ASYNC_CONVERT_VERIFY"])
    results = [client.verify(request_id).status for _ in range(10)]
    assert results == [VerifyStatus.ISSUED] * 10
    counters = sandbox.counters()["transactions"]["ASYNC_CONVERT_VERIFY"]
    assert counters["faults"] > 0 and counters["calls"] == 10 + counters["faults"]


def test_wrong_requestor_is_an_auth_error(sandbox: MySuiteSandbox, make_client: MakeClient, caplog: Any) -> None:
    sandbox.configure(requestor="99999999-9999-9999-9999-999999999999")
    client = make_client()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as refused:
        client.submit(native_xml(LARGE, internal_id="INV-AUTH"), "INV-AUTH")
    assert refused.value.code == "9008"
    with pytest.raises(AuthError):
        client.verify("a6b30f75-37c1-4972-aa9c-3cdf523b9bdd")
    assert sandbox.calls("ASYNC_CONVERT_VERIFY") == 1  # auth errors are never retried
    not_a_guid = make_client(requestor="not-a-guid", user="not-a-guid")
    with pytest.raises(AuthError):
        not_a_guid.submit(native_xml(internal_id="INV-AUTH2"), "INV-AUTH2")
    everything = " ".join([str(refused.value), caplog.text])
    assert REQUESTOR not in everything


def test_unknown_request_is_permanent(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(PermanentError) as refused:
        client.verify("fd339e5c-3685-4773-a3ea-be28c8b92dfe")
    assert refused.value.code == "9005" and type(refused.value) is PermanentError
    with pytest.raises(PermanentError, match="malformed"):
        client.verify("not a request id")


def test_read_timeout_is_transient(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client(read_timeout=0.2, incall_attempts=1)
    sandbox.configure(latency_ms=600)
    mark = _mark()
    with pytest.raises(TransientError, match="timed out"):
        client.verify("fd339e5c-3685-4773-a3ea-be28c8b92dfe")
    assert _observed_since(mark) == [("mysuite", "verify", "transient")]


def test_upload_timeout_applies_to_submits(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    sandbox.configure(latency_ms=600)
    with pytest.raises(TransientError, match="timed out"):
        make_client(read_timeout=5.0, upload_timeout=0.2).submit(native_xml(LARGE, internal_id="INV-U"), "INV-U")
    result = make_client(read_timeout=0.2, upload_timeout=5.0).submit(native_xml(LARGE, internal_id="INV-U2"), "INV-U2")
    assert result.request_id


def test_connection_refused_is_transient(make_client: MakeClient) -> None:
    from sandbox.server import free_port

    url = f"http://127.0.0.1:{free_port()}/mysuite/async/factwsfront.asmx"
    client = make_client(async_url=url, incall_attempts=2)
    with pytest.raises(TransientError, match="connection failed"):
        client.verify("fd339e5c-3685-4773-a3ea-be28c8b92dfe")


# -- HTTP statuses the sandbox has no knob for: a minimal stand-in service -----------------------


@pytest.fixture(scope="module")
def status_server() -> Iterator[str]:
    async def answer(request: Request) -> Response:
        status = int(request.path_params["status"])
        headers = {"Retry-After": "12"} if status == 429 else {}
        return Response(b"<html>refused</html>", status_code=status, headers=headers, media_type="text/html")

    app = Starlette(routes=[Route("/{status:int}/{rest:path}", answer, methods=["GET", "POST"])])
    with ServerThread(app) as server:
        yield server.url


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, RateLimitedError),
        (401, AuthError),
        (403, AuthError),
        (503, TransientError),
        (404, PermanentError),
    ],
)
def test_http_statuses_on_soap_calls(
    make_client: MakeClient, status_server: str, status: int, error: type[ProviderError]
) -> None:
    client = make_client(async_url=f"{status_server}/{status}/factwsfront.asmx")
    with pytest.raises(error) as raised:
        client.verify("fd339e5c-3685-4773-a3ea-be28c8b92dfe")
    assert type(raised.value) is error
    if status == 429:
        assert raised.value.retry_after == 12.0


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (403, LinkExpired),
        (404, LinkExpired),
        (410, LinkExpired),
        (429, RateLimitedError),
        (502, TransientError),
    ],
)
def test_http_statuses_on_downloads(
    make_client: MakeClient, status_server: str, tmp_path: Path, status: int, error: type
) -> None:
    with pytest.raises(error) as raised:
        client = make_client(links=LinkPolicy.for_provider([status_server], {}))
        client.download(f"{status_server}/{status}/file.zip?sig=secret", tmp_path / "f.zip")
    assert type(raised.value) is error and "secret" not in str(raised.value)
    assert not any(tmp_path.iterdir())


# -- sharing one client ------------------------------------------------------------------------


def test_one_client_shared_by_threads(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    request_ids = [client.submit(native_xml(LARGE, internal_id=f"INV-C{i}"), f"INV-C{i}").request_id for i in range(3)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda rid: client.verify(rid).status, request_ids * 8))
    assert statuses == [VerifyStatus.ISSUED] * 24


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_pool(sandbox: MySuiteSandbox, make_client: MakeClient) -> None:
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id="INV-FORK"), "INV-FORK").request_id
    assert client.verify(request_id).status is VerifyStatus.ISSUED  # the parent's pool holds a connection
    inherited = client._pool._http
    pid = os.fork()
    if pid == 0:  # the child: must not reuse the parent's connection
        code = 1
        try:
            fresh = client._pool._http is None
            status = client.verify(request_id).status
            code = 0 if fresh and status is VerifyStatus.ISSUED and client._pool._http is not inherited else 2
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert client._pool._http is inherited
    assert client.verify(request_id).status is VerifyStatus.ISSUED
    client.close()
    assert client._pool._http is None
    assert client.verify(request_id).status is VerifyStatus.ISSUED  # a closed client reopens its pool


def test_logs_never_show_links_or_credentials(
    sandbox: MySuiteSandbox, make_client: MakeClient, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    payload = native_xml(LARGE, internal_id="INV-LOG")
    request_id = client.submit(payload, "INV-LOG").request_id
    links = client.retrieve(request_id).links
    sandbox.configure(faults_on_files=True, http500_rate=1.0, fault_transactions=["FILES"])
    with pytest.raises(TransientError):
        client.download(links["xml"], tmp_path / "x.zip")  # retried in-call, so logged
    sandbox.configure(http500_rate=0.0)
    client.download(links["pdf"], tmp_path / "p.zip")
    assert "Retrying" in caplog.text and "HTTP Request" in caplog.text
    for secret in (links["xml"].rsplit("/", 1)[1], links["pdf"].rsplit("/", 1)[1], REQUESTOR):
        assert secret not in caplog.text
    assert payload[-200:].decode() not in caplog.text
