"""Contract tests: the Descarga Masiva client against the MYSuite sandbox over real HTTP.

Every transaction and every SAT code the sandbox simulates is driven through the client, and the
sandbox's counters say what really reached it (registrations, polls, links, package downloads).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from providers.base import PermanentError, TransientError
from providers.mysuite import MySuiteClient
from providers.mysuite.client import DownloadTooLarge
from providers.mysuite.descarga import (
    CfdiRecord,
    DescargaClient,
    DescargaOutcome,
    Direction,
    DocumentStatus,
    DownloadQuery,
    DuplicateActive,
    FielCredentials,
    FielMissing,
    MaxDownloadsReached,
    Period,
    PeriodExhausted,
    RequestKind,
    Rule,
    RuleViolation,
    SatRejected,
    SatState,
    Service,
    TaxIdRole,
    TooManyResults,
    iter_package,
    split_period,
)
from providers.mysuite.descarga.wire import dictionary, parse_registrations
from tests.providers.conftest import MySuiteSandbox

ENTITY = "JES900109Q90"
FIEL_PASSWORD = "s3cr3t-FIEL-pass"
FIEL_CER = b"-----FIEL CERTIFICATE BYTES-----" * 4
FIEL_KEY = b"-----FIEL PRIVATE KEY BYTES-----" * 4

MakeClient = Callable[..., MySuiteClient]


@pytest.fixture
def descarga(make_client: MakeClient) -> Iterator[DescargaClient]:
    yield DescargaClient(make_client(), FielCredentials(FIEL_CER, FIEL_KEY, FIEL_PASSWORD))


def days_ago(start: int, end: int) -> Period:
    now = datetime.now(UTC).replace(microsecond=0)
    return Period(now - timedelta(days=start), now - timedelta(days=end))


def query(period: Period | None = None, **overrides: Any) -> DownloadQuery:
    values: dict[str, Any] = {
        "rfc": ENTITY,
        "period": period or days_ago(3, 1),
        "role": TaxIdRole.RECEPTOR,
        "kind": RequestKind.CFDI,
    }
    values.update(overrides)
    return DownloadQuery(**values)


def wait_for(client: DescargaClient, request_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_request(request_id)
        if status.outcome is not DescargaOutcome.PENDING or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def dm(sandbox: MySuiteSandbox) -> dict[str, Any]:
    counters: dict[str, Any] = sandbox.counters()["descarga"]
    return counters


# -- the whole walk -------------------------------------------------------------------------------


def test_register_poll_download_index(sandbox: MySuiteSandbox, descarga: DescargaClient, tmp_path: Path) -> None:
    sandbox.configure(dm_timeline="1,2,3", dm_step_seconds=1.0, dm_package_size=25, dm_cfdi_per_day=20)
    [registration] = descarga.register(query())
    assert registration.error is None and not registration.adopted
    assert registration.code == "5000" and registration.request_id and registration.sat_request_id
    assert (registration.service, registration.kind, registration.role) == ("CFDIS", "CFDI", "RECEPTOR")
    request_id = registration.request_id

    first = descarga.get_request(request_id)
    assert first.sat_state is SatState.ACCEPTED and first.outcome is DescargaOutcome.PENDING
    assert first.package_ids == () and first.cfdi_count == 0
    status = wait_for(descarga, request_id)
    assert status.sat_state is SatState.FINISHED and status.outcome is DescargaOutcome.READY
    assert status.cfdi_count == 40 and len(status.package_ids) == 2
    assert all(
        package.startswith(status.sat_request_id.upper() + "_0")
        for package in status.package_ids
        if status.sat_request_id
    )

    uuids: list[str] = []
    for package_id in status.package_ids:
        package = descarga.download_package(request_id, package_id, tmp_path / f"{package_id}.zip")
        assert package.path.exists() and len(package.sha256) == 64 and package.entries > 0
        records = [record for record in iter_package(package.path, Direction.RECEIVED)]
        assert all(isinstance(record, CfdiRecord) for record in records)
        uuids.extend(record.uuid for record in records if isinstance(record, CfdiRecord))
        assert all(record.receiver_rfc == ENTITY for record in records if isinstance(record, CfdiRecord))
    assert len(uuids) == len(set(uuids)) == 40

    counters = dm(sandbox)
    assert counters["requests"][request_id]["polls"] >= 3
    for package_id in status.package_ids:
        assert counters["packages"][package_id.lower()] == {"links": 1, "refused": 0, "downloads": 1}
    assert counters["registrations"] == {"5000": 1}


def test_both_services_roles_and_kinds_register_one_request_each(
    sandbox: MySuiteSandbox, descarga: DescargaClient
) -> None:
    records = descarga.register(
        query(service=Service.AMBOS, role=TaxIdRole.AMBOS, kind=RequestKind.AMBOS, status=DocumentStatus.VIGENTE)
    )
    assert len(records) == 8
    assert {(r.service, r.role, r.kind) for r in records} == {
        (service, role, kind)
        for service in ("CFDIS", "RETENCIONES")
        for role in ("EMISOR", "RECEPTOR")
        for kind in ("CFDI", "Metadata")
    }
    assert all(r.error is None and r.request_id for r in records)
    assert len({r.request_id for r in records}) == 8


def test_metadata_package_carries_status_and_cancellations(
    sandbox: MySuiteSandbox, descarga: DescargaClient, tmp_path: Path
) -> None:
    sandbox.configure(dm_step_seconds=0, dm_cfdi_per_day=50, dm_cancelled_rate=0.3)
    [registration] = descarga.register(query(days_ago(5, 1), role=TaxIdRole.EMISOR, kind=RequestKind.METADATA))
    assert registration.request_id is not None
    status = descarga.get_request(registration.request_id)
    assert status.outcome is DescargaOutcome.READY
    package = descarga.download_package(registration.request_id, status.package_ids[0], tmp_path / "m.zip")
    records = [record for record in iter_package(package.path, Direction.ISSUED) if isinstance(record, CfdiRecord)]
    assert len(records) == 200
    cancelled = [record for record in records if record.status and record.status.value == "cancelado"]
    assert 0 < len(cancelled) < len(records)
    assert all(record.cancelled_at is not None for record in cancelled)
    assert all(record.issuer_rfc == ENTITY and record.source == "metadata" for record in records)


# -- terminal states ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeline", "state", "outcome", "code"),
    [
        ("1,5", SatState.REJECTED, DescargaOutcome.EMPTY, 5004),
        ("1,4", SatState.ERROR, DescargaOutcome.FAILED, 5000),
        ("1,6", SatState.EXPIRED, DescargaOutcome.EXPIRED, 5000),
    ],
)
def test_scripted_endings(
    sandbox: MySuiteSandbox,
    descarga: DescargaClient,
    timeline: str,
    state: SatState,
    outcome: DescargaOutcome,
    code: int,
) -> None:
    sandbox.configure(dm_timeline=timeline, dm_step_seconds=1.0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    assert descarga.get_request(registration.request_id).outcome is DescargaOutcome.PENDING
    status = wait_for(descarga, registration.request_id)
    assert (status.sat_state, status.outcome, status.request_code) == (state, outcome, code)
    assert status.package_ids == ()


def test_a_period_without_documents_ends_as_5004(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_timeline="1,2,3", dm_step_seconds=0, dm_cfdi_per_day=0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    status = descarga.get_request(registration.request_id)
    assert status.outcome is DescargaOutcome.EMPTY and status.request_code == 5004
    assert status.sat_state is SatState.REJECTED


def test_in_progress_is_pending(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_timeline="1,2", dm_step_seconds=0.1)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    time.sleep(0.3)
    status = descarga.get_request(registration.request_id)
    assert status.sat_state is SatState.IN_PROGRESS and status.outcome is DescargaOutcome.PENDING
    assert status.package_ids == () and status.cfdi_count == 0


def test_a_request_stuck_at_one_stays_pending(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_timeline="1", dm_step_seconds=0.05)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    time.sleep(0.3)
    status = descarga.get_request(registration.request_id)
    assert status.sat_state is SatState.ACCEPTED and status.outcome is DescargaOutcome.PENDING


# -- SAT's limits ---------------------------------------------------------------------------------


def test_third_registration_of_a_cfdi_period_is_5002_but_metadata_is_exempt(
    sandbox: MySuiteSandbox, descarga: DescargaClient
) -> None:
    sandbox.configure(dm_timeline="3", dm_step_seconds=0)
    period = days_ago(4, 2)
    for _ in range(2):
        [ok] = descarga.register(query(period))
        assert ok.error is None
    [third] = descarga.register(query(period))
    assert isinstance(third.error, PeriodExhausted) and third.error.code == "5002"
    assert third.request_id is None
    shifted = Period(period.start + timedelta(seconds=1), period.end)
    [other] = descarga.register(query(shifted))
    assert other.error is None
    for _ in range(3):
        [meta] = descarga.register(query(period, kind=RequestKind.METADATA))
        assert meta.error is None
    assert dm(sandbox)["registrations"] == {"5000": 6, "5002": 1}


def test_too_many_documents_is_5003_and_the_halves_register(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_cfdi_per_day=10, dm_max_cfdi=25)
    period = days_ago(5, 1)
    [refused] = descarga.register(query(period))
    assert isinstance(refused.error, TooManyResults)
    assert refused.error.period == period
    first, second = split_period(period)
    accepted = [descarga.register(query(half))[0] for half in (first, second)]
    assert all(item.error is None for item in accepted)
    assert dm(sandbox)["registrations"] == {"5003": 1, "5000": 2}


def test_identical_active_request_is_adopted(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_timeline="1,2,3", dm_step_seconds=30)
    # One query object: two calls to `query()` straddling a second boundary would differ.
    identical = query()
    [original] = descarga.register(identical)
    [again] = descarga.register(identical)
    assert again.adopted and again.error is None and again.code == "5005"
    assert again.request_id == original.request_id
    assert len(dm(sandbox)["requests"]) == 1


def test_duplicate_without_an_id_is_a_wait() -> None:
    document = '<Solicitudes><Solicitud CodEstatus="5005" Mensaje="Solicitud duplicada" /></Solicitudes>'
    [record] = parse_registrations(base64.b64encode(document.encode()).decode())
    assert isinstance(record.error, DuplicateActive) and not record.adopted


def test_received_cfdi_not_vigente_is_refused_by_sat_when_sent(
    sandbox: MySuiteSandbox, descarga: DescargaClient
) -> None:
    # The local rule stops it first; the sandbox enforces it too (301) for clients without it.
    with pytest.raises(RuleViolation) as refused:
        descarga.register(query(status=DocumentStatus.TODOS))
    assert refused.value.rule is Rule.RECEIVED_VIGENTE
    assert sandbox.calls("REGISTRAR_SOLICITUD_DM_SAT") == 0
    start, end = days_ago(3, 1).wire()
    params = [("FielCer", "x"), ("FielKey", "y"), ("FielPass", "z"), ("Servicio", "CFDIS"), ("FechaInicial", start)]
    params += [
        ("FechaFinal", end),
        ("TipoSolicitud", "CFDI"),
        ("TipoTaxID", "RECEPTOR"),
        ("EstadoComprobante", "Todos"),
    ]
    reply = descarga.mysuite._exchange(sandbox.sync_url, "REGISTRAR_SOLICITUD_DM_SAT", dictionary("Params", params))
    [record] = parse_registrations(reply.response_data1)
    assert isinstance(record.error, SatRejected) and record.error.code == "301"


def test_third_package_download_is_refused(sandbox: MySuiteSandbox, descarga: DescargaClient, tmp_path: Path) -> None:
    sandbox.configure(dm_step_seconds=0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    status = descarga.get_request(registration.request_id)
    package_id = status.package_ids[0]
    for attempt in range(2):
        descarga.download_package(registration.request_id, package_id, tmp_path / f"{attempt}.zip")
    with pytest.raises(MaxDownloadsReached):
        descarga.download_package(registration.request_id, package_id, tmp_path / "third.zip")
    assert not (tmp_path / "third.zip").exists()
    assert dm(sandbox)["packages"][package_id.lower()] == {"links": 2, "refused": 1, "downloads": 2}


def test_package_link_before_the_request_finished_is_refused(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_timeline="1", dm_step_seconds=0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    with pytest.raises(PermanentError):
        descarga.package_link(registration.request_id, f"{registration.sat_request_id}_01")


def test_download_over_the_size_cap_keeps_nothing(
    sandbox: MySuiteSandbox, descarga: DescargaClient, tmp_path: Path
) -> None:
    sandbox.configure(dm_step_seconds=0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    package_id = descarga.get_request(registration.request_id).package_ids[0]
    with pytest.raises(DownloadTooLarge):
        descarga.download_package(registration.request_id, package_id, tmp_path / "p.zip", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_unknown_request_is_a_permanent_refusal(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    with pytest.raises(PermanentError) as refused:
        descarga.get_request("6f1c1e0e-0000-4000-8000-000000000000")
    assert refused.value.code == "9005"


# -- listing --------------------------------------------------------------------------------------


def test_list_requests_pages_filters_and_counts(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(dm_step_seconds=0)
    descarga.register(query(role=TaxIdRole.AMBOS, kind=RequestKind.AMBOS))  # 4 requests
    page = descarga.list_requests(page=1, page_size=3)
    assert (page.page, page.page_size, page.total_rows, page.total_pages) == (1, 3, 4, 2)
    assert len(page.rows) == 3
    second = descarga.list_requests(page=2, page_size=3)
    assert len(second.rows) == 1
    assert {row.request_id for row in page.rows + second.rows} == set(dm(sandbox)["requests"])
    metadata = descarga.list_requests(filters=[("TipoSolicitud", "=", "Metadata", "")])
    assert metadata.total_rows == 2 and all(row.kind == "Metadata" for row in metadata.rows)
    finished = [row for row in page.rows + second.rows if row.sat_state is SatState.FINISHED]
    assert finished and all(row.package_ids for row in finished)


# -- local rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"period": Period(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))}, Rule.PERIOD_ORDER),
        ({"period": Period(datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 2, 1, tzinfo=UTC))}, Rule.HISTORY_WINDOW),
        ({"status": DocumentStatus.CANCELADO}, Rule.RECEIVED_VIGENTE),
        ({"receiver_rfcs": ("AAA010101AAA",) * 6, "role": TaxIdRole.EMISOR}, Rule.RECEIVER_RFCS),
        ({"rfc": "NOT-AN-RFC"}, Rule.RFC_FORMAT),
    ],
)
def test_local_rules_refuse_before_any_call(
    sandbox: MySuiteSandbox, descarga: DescargaClient, overrides: dict[str, Any], rule: Rule
) -> None:
    with pytest.raises(RuleViolation) as refused:
        descarga.register(query(**overrides))
    assert refused.value.rule is rule and refused.value.code == rule.value
    assert sandbox.calls("REGISTRAR_SOLICITUD_DM_SAT") == 0


# -- faults ---------------------------------------------------------------------------------------


def test_registration_is_not_retried_but_reads_are(sandbox: MySuiteSandbox, descarga: DescargaClient) -> None:
    sandbox.configure(http500_rate=1.0, fault_transactions=["REGISTRAR_SOLICITUD_DM_SAT"])
    with pytest.raises(TransientError):
        descarga.register(query())
    assert sandbox.calls("REGISTRAR_SOLICITUD_DM_SAT") == 1
    sandbox.configure(http500_rate=0.0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    sandbox.configure(soap_fault_rate=1.0, fault_transactions=["OBTENER_SOLICITUD_DM_SAT"])
    with pytest.raises(TransientError):
        descarga.get_request(registration.request_id)
    assert sandbox.calls("OBTENER_SOLICITUD_DM_SAT") == descarga.config.incall_attempts


def test_a_dropped_package_download_is_retried_in_call(
    sandbox: MySuiteSandbox, descarga: DescargaClient, tmp_path: Path
) -> None:
    sandbox.configure(dm_step_seconds=0)
    [registration] = descarga.register(query())
    assert registration.request_id is not None
    package_id = descarga.get_request(registration.request_id).package_ids[0]
    sandbox.configure(faults_on_files=True, malformed_rate=1.0, fault_transactions=["FILES"])
    with pytest.raises(TransientError):
        descarga.download_package(registration.request_id, package_id, tmp_path / "p.zip")
    assert not (tmp_path / "p.zip").exists()


# -- secrets --------------------------------------------------------------------------------------


def test_fiel_never_shows_in_repr_or_logs(
    sandbox: MySuiteSandbox, descarga: DescargaClient, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = [FIEL_PASSWORD, base64.b64encode(FIEL_CER).decode(), base64.b64encode(FIEL_KEY).decode()]
    secrets += [FIEL_CER.decode(), FIEL_KEY.decode()]
    caplog.set_level(logging.DEBUG)
    sandbox.configure(http500_rate=1.0, fault_transactions=["REGISTRAR_SOLICITUD_DM_SAT"])
    with pytest.raises(TransientError) as failed:
        descarga.register(query())
    sandbox.configure(http500_rate=0.0)
    records = descarga.register(query())
    shown = " ".join(
        [caplog.text, repr(descarga), str(descarga), repr(descarga.mysuite), repr(records), str(failed.value)]
    )
    shown += repr(descarga._fiel) + str(descarga._fiel)
    for secret in secrets:
        assert secret not in shown


def test_fiel_comes_from_file_settings_only(tmp_path: Path) -> None:
    cer, key, password = tmp_path / "fiel.cer", tmp_path / "fiel.key", tmp_path / "pass"
    cer.write_bytes(FIEL_CER)
    key.write_bytes(FIEL_KEY)
    password.write_text(FIEL_PASSWORD + "\n")
    environ = {
        "MYSUITE_FIEL_CER_FILE": str(cer),
        "MYSUITE_FIEL_KEY_FILE": str(key),
        "MYSUITE_FIEL_PASSWORD_FILE": str(password),
        "MYSUITE_FIEL_PASSWORD": "stale",
    }
    fiel = FielCredentials.from_environ(environ)
    assert (fiel.certificate, fiel.key, fiel.password) == (FIEL_CER, FIEL_KEY, FIEL_PASSWORD)
    assert FIEL_PASSWORD not in repr(fiel)
    with pytest.raises(FielMissing):
        FielCredentials.from_environ({k: v for k, v in environ.items() if k != "MYSUITE_FIEL_KEY_FILE"})
    with pytest.raises(FielMissing):
        FielCredentials.from_environ(dict(environ, MYSUITE_FIEL_CER_FILE=str(tmp_path / "missing.cer")))
