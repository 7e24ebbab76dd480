"""The MSeller client against its sandbox over real HTTP: every behaviour the pipeline relies on."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from providers.base import AuthError, PermanentError, RateLimitedError, TransientError, VerifyStatus
from providers.mseller import AccountPausedError, InProcessBudget, MSellerClient
from providers.mseller.budget import next_month_start
from providers.mseller.samples import encf, sample_ecf
from tests.mseller.conftest import UNCERTIFIED, Sandbox

Factory = Callable[..., MSellerClient]


def test_send_then_batch_status_gives_the_final_record(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    submitted = client.submit(sample_ecf(1), "inv-1")
    assert submitted.request_id == encf(1) and not submitted.adopted
    assert b'"securityCode"' in submitted.files["receipt"]
    result = client.verify(encf(1))
    assert result.status is VerifyStatus.ISSUED
    assert result.document is not None and result.document.fiscal_id == encf(1)
    extra = result.document.extra
    assert len(extra["security_code"]) == 6
    assert extra["qr_url"].startswith("https://ecf.dgii.gov.do/testecf/consultatimbre?")
    assert extra["internal_track_id"] and extra["signed_date"]
    assert b'"dgiiResponse"' in result.files["json"]
    # One send and one status query were counted, and the login was not.
    assert sandbox.totals()["counted"] == 2
    assert sandbox.totals()["logins"] == 1


def test_retrieve_returns_the_record_of_an_issued_document(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    client.submit(sample_ecf(2), "inv-2")
    retrieved = client.retrieve(encf(2))
    assert retrieved.links == {} and retrieved.expires_at is None
    assert retrieved.document is not None and retrieved.document.fiscal_id == encf(2)
    assert b'"Aceptado"' in retrieved.files["json"]
    assert client.retrieve_in_verify


def test_processing_time_keeps_the_document_pending(sandbox: Sandbox, make_client: Factory) -> None:
    sandbox.configure(processing_seconds=1.5)
    client = make_client()
    client.submit(sample_ecf(3), "inv-3")
    assert client.verify(encf(3)).status is VerifyStatus.PENDING
    with pytest.raises(TransientError):
        client.retrieve(encf(3))
    time.sleep(1.6)
    assert client.verify(encf(3)).status is VerifyStatus.ISSUED


def test_batch_status_with_mixed_outcomes_is_one_counted_request(sandbox: Sandbox, make_client: Factory) -> None:
    ids = {name: encf(10 + n) for n, name in enumerate(("accepted", "conditional", "rejected", "error"))}
    sandbox.configure(outcomes={value: key for key, value in ids.items()})
    client = make_client()
    for n in range(4):
        client.submit(sample_ecf(10 + n), f"inv-{n}")
    consumo = encf(20, "32")
    client.submit(sample_ecf(20, doc_type="32", comprador=None), "inv-consumo")
    unknown = encf(99)
    before = sandbox.totals()["counted"]
    results = client.verify_many([*ids.values(), consumo, unknown])
    assert sandbox.totals()["counted"] - before == 1

    accepted = results[ids["accepted"]]
    assert not isinstance(accepted, Exception) and accepted.status is VerifyStatus.ISSUED
    conditional = results[ids["conditional"]]
    assert not isinstance(conditional, Exception) and conditional.status is VerifyStatus.ISSUED
    assert conditional.document is not None
    assert conditional.document.extra["status"] == "Aceptado Condicional"
    assert "9004" in conditional.document.extra["observations"]
    rejected = results[ids["rejected"]]
    assert not isinstance(rejected, Exception) and rejected.status is VerifyStatus.FAILED
    assert rejected.error_code == "1920"
    assert rejected.error_message is not None and "MontoGravadoTotal del área Totales" in rejected.error_message
    error = results[ids["error"]]
    assert not isinstance(error, Exception) and error.status is VerifyStatus.FAILED
    assert error.error_code == "Error"
    summary = results[consumo]
    assert not isinstance(summary, Exception) and summary.status is VerifyStatus.ISSUED
    assert summary.document is not None and summary.document.extra["dgii_code"] == "1"
    pending = results[unknown]
    assert not isinstance(pending, Exception) and pending.status is VerifyStatus.PENDING


def test_more_ids_than_a_batch_holds_take_several_calls(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    results = client.verify_many([encf(n) for n in range(1, 151)])
    assert len(results) == 150
    assert sandbox.totals()["status_batch"] == 2
    assert sandbox.totals()["batch_ecfs"] == 150


def test_the_token_is_shared_through_redis(sandbox: Sandbox, make_client: Factory, redis_url: str) -> None:
    first, second = make_client(redis_url=redis_url), make_client(redis_url=redis_url)
    first.submit(sample_ecf(30), "a")
    second.submit(sample_ecf(31), "b")
    assert sandbox.totals()["logins"] == 1


def test_the_token_is_renewed_before_it_expires(sandbox: Sandbox, make_client: Factory, redis_url: str) -> None:
    sandbox.configure(token_seconds=3)
    client = make_client(redis_url=redis_url)
    client.submit(sample_ecf(32), "a")
    # The margin is capped at half the lifetime: after 1.6 s of a 3 s token, a new login comes first.
    time.sleep(1.6)
    client.verify(encf(32))
    totals = sandbox.totals()
    assert totals["logins"] == 2
    assert totals.get("status_401", 0) == 0


def test_a_401_logs_in_again_once(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    client.submit(sample_ecf(33), "a")
    sandbox.expire_tokens()
    assert client.verify(encf(33)).status is VerifyStatus.ISSUED
    totals = sandbox.totals()
    assert totals["logins"] == 2 and totals["status_401"] == 1


def test_a_second_401_is_an_auth_error(sandbox: Sandbox, make_client: Factory) -> None:
    sandbox.configure(refuse_tokens=True)
    client = make_client()
    with pytest.raises(AuthError) as caught:
        client.submit(sample_ecf(34), "a")
    assert caught.value.code == "401"
    totals = sandbox.totals()
    assert totals["logins"] == 2 and totals["status_401"] == 2
    assert sandbox.ecf(encf(34)) == {}


def test_refused_credentials_are_an_auth_error_without_retries(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client(password="equivocada")
    for _ in range(3):
        with pytest.raises(AuthError):
            client.submit(sample_ecf(35), "a")
    # The cool-down keeps the client from trying the wrong password again.
    assert sandbox.totals()["login_failures"] == 1


def test_a_wrong_api_key_is_an_auth_error(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client(api_key="sandbox-ecf-key")  # a key of the production environment
    with pytest.raises(AuthError) as caught:
        client.submit(sample_ecf(36), "a")
    assert caught.value.code == "403"


def test_no_certificate_is_an_auth_error(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client(email=UNCERTIFIED, password="otra")
    with pytest.raises(AuthError) as caught:
        client.submit(sample_ecf(37), "a")
    assert caught.value.code == "CERTIFICATE_NOT_CONFIGURED"


def test_a_lost_answer_is_adopted_and_never_sent_twice(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    sandbox.configure(lost_answer_share=1.0, fault_scope="api")
    with pytest.raises(TransientError):
        client.submit(sample_ecf(40), "a")
    assert sandbox.ecf(encf(40))["created"] == 1
    sandbox.configure(lost_answer_share=0.0)
    result = client.submit(sample_ecf(40), "a", attempt=2)
    assert result.adopted and result.request_id == encf(40)
    assert sandbox.ecf(encf(40))["posts"] == 1


def test_a_garbled_answer_is_adopted_and_never_sent_twice(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    sandbox.configure(malformed_share=1.0, fault_scope="api")
    with pytest.raises(TransientError):
        client.submit(sample_ecf(41), "a")
    sandbox.configure(malformed_share=0.0)
    assert client.submit(sample_ecf(41), "a", attempt=2).adopted
    assert sandbox.ecf(encf(41))["posts"] == 1


def test_after_a_5xx_the_lookup_finds_nothing_and_the_document_is_sent(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    sandbox.configure(error_share=1.0, fault_scope="api")
    with pytest.raises(TransientError) as caught:
        client.submit(sample_ecf(42), "a")
    assert caught.value.code == "500"
    sandbox.configure(error_share=0.0)
    result = client.submit(sample_ecf(42), "a", attempt=2)
    assert not result.adopted
    assert sandbox.ecf(encf(42)) == {"posts": 1, "created": 1}


def test_a_duplicate_encf_is_adopted(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    client.submit(sample_ecf(43), "a")
    again = client.submit(sample_ecf(43), "a")
    assert again.adopted and again.request_id == encf(43)
    assert sandbox.ecf(encf(43)) == {"posts": 2, "created": 1, "duplicates": 1}


def test_a_400_is_permanent(sandbox: Sandbox, make_client: Factory) -> None:
    sandbox.configure(outcomes={encf(44): "invalid"})
    client = make_client()
    with pytest.raises(PermanentError) as caught:
        client.submit(sample_ecf(44), "a")
    assert caught.value.code == "ECF_VALIDATION_FAILED"
    assert sandbox.totals()["invalid"] == 1


def test_an_invalid_document_is_never_sent(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    bad = sample_ecf(45).replace(b'"MontoTotal": "1180.00"', b'"MontoTotal": "1500.00"')
    from providers.base import InvalidPayload

    with pytest.raises(InvalidPayload):
        client.validate(bad, "a")
    with pytest.raises(InvalidPayload):
        client.submit(bad, "a")
    assert sandbox.totals().get("sends", 0) == 0


def test_a_monthly_429_pauses_the_account_until_next_month(sandbox: Sandbox, make_client: Factory) -> None:
    sandbox.configure(monthly_requests=2)
    client = make_client()
    client.submit(sample_ecf(50), "a")
    client.submit(sample_ecf(51), "b")
    with pytest.raises(AccountPausedError) as caught:
        client.verify_many([encf(50), encf(51)])
    error = caught.value
    assert isinstance(error, RateLimitedError) and error.account_paused
    assert error.code == "RATE_LIMIT_EXCEEDED"
    assert error.retry_after is not None
    assert abs(error.retry_after - (next_month_start(datetime.now(UTC)) - datetime.now(UTC)).total_seconds()) < 60
    assert error.resume_at.day == 1 and error.resume_at > datetime.now(UTC)
    assert sandbox.totals()["status_429_monthly"] == 1


def test_the_local_budget_stops_before_the_provider_would(sandbox: Sandbox, make_client: Factory) -> None:
    budget = InProcessBudget(2)
    client = make_client(budget=budget)
    client.submit(sample_ecf(52), "a")
    client.verify(encf(52))
    with pytest.raises(AccountPausedError) as caught:
        client.verify(encf(52))
    assert caught.value.code == "MONTHLY_BUDGET"
    assert budget.usage() == (2, 2)
    assert sandbox.totals()["counted"] == 2


def test_a_per_second_429_is_a_short_wait_not_a_pause(sandbox: Sandbox, make_client: Factory) -> None:
    sandbox.configure(rate_per_second=2)
    client = make_client()
    with pytest.raises(RateLimitedError) as caught:
        for n in range(10):
            client.submit(sample_ecf(60 + n), "a")
    assert not isinstance(caught.value, AccountPausedError)
    assert caught.value.retry_after == 1.0


def test_the_shared_bucket_keeps_to_the_plan_speed(sandbox: Sandbox, make_client: Factory, redis_url: str) -> None:
    sandbox.configure(rate_per_second=5)
    first = make_client(redis_url=redis_url, rate_per_second=5, rate_wait=10.0)
    second = make_client(redis_url=redis_url, rate_per_second=5, rate_wait=10.0)
    for n in range(12):
        (first if n % 2 else second).submit(sample_ecf(70 + n), "a")
    totals = sandbox.totals()
    assert totals["created"] == 12
    assert totals.get("status_429_throttled", 0) == 0


def test_an_outage_is_transient(sandbox: Sandbox, make_client: Factory) -> None:
    client = make_client()
    client.submit(sample_ecf(80), "a")
    sandbox.configure(outage=True)
    with pytest.raises(TransientError) as caught:
        client.verify_many([encf(80)])
    assert caught.value.code == "503"
