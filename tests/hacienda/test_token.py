"""IDP tokens: one login shared through Redis, early refresh, re-login, refused credentials."""

from __future__ import annotations

import threading
import time

import pytest

from providers.base import AuthError, TransientError
from providers.hacienda.samples import sample_comprobante


def test_one_login_shared_by_two_clients_through_redis(sandbox, make_client, redis_url):
    first = make_client(redis_url=redis_url)
    second = make_client(redis_url=redis_url)

    first.submit(sample_comprobante(1), "inv-1")
    second.submit(sample_comprobante(2), "inv-2")
    second.verify(first.submit(sample_comprobante(3), "inv-3").request_id)

    assert sandbox.counters()["tokens"]["logins"] == 1


def test_without_redis_each_client_logs_in_once(sandbox, make_client):
    clients = [make_client(), make_client()]
    for n, client in enumerate(clients * 2, start=1):
        client.submit(sample_comprobante(n), f"inv-{n}")

    assert sandbox.counters()["tokens"]["logins"] == 2


def test_concurrent_processes_do_not_all_log_in(sandbox, make_client, redis_url):
    clients = [make_client(redis_url=redis_url) for _ in range(3)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        barrier.wait()
        try:
            clients[n % 3].submit(sample_comprobante(100 + n), f"inv-{n}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert sandbox.totals()["created"] == 6
    assert sandbox.counters()["tokens"]["logins"] == 1


def test_token_refreshed_before_expiry(sandbox, make_client, redis_url):
    sandbox.configure(access_token_seconds=2)
    client = make_client(redis_url=redis_url)
    client.submit(sample_comprobante(1), "inv-1")

    time.sleep(1.2)  # less than 1 s of the 2 s lifetime left: inside the refresh margin
    client.submit(sample_comprobante(2), "inv-2")

    counters = sandbox.counters()
    assert counters["tokens"] == {"logins": 1, "refreshes": 1, "login_failures": 0, "refresh_failures": 0}
    assert counters["totals"].get("status_401", 0) == 0


def test_logs_in_again_when_refresh_token_has_expired(sandbox, make_client):
    sandbox.configure(access_token_seconds=2, refresh_token_seconds=1)
    client = make_client()
    client.submit(sample_comprobante(1), "inv-1")

    time.sleep(1.2)
    client.submit(sample_comprobante(2), "inv-2")

    assert sandbox.counters()["tokens"] == {
        "logins": 2,
        "refreshes": 0,
        "login_failures": 0,
        "refresh_failures": 0,
    }


def test_logs_in_again_when_the_idp_refuses_the_refresh(sandbox, make_client, redis_url):
    client = make_client(redis_url=redis_url)
    client.submit(sample_comprobante(1), "inv-1")
    sandbox.expire_tokens(refresh=True)  # session ended on the IDP side

    result = client.submit(sample_comprobante(2), "inv-2")

    assert result.adopted is False
    counters = sandbox.counters()
    assert counters["tokens"] == {"logins": 2, "refreshes": 0, "login_failures": 0, "refresh_failures": 1}
    assert counters["totals"]["status_401"] == 1


def test_revoked_access_token_is_refreshed_once_and_the_call_retried(sandbox, make_client):
    client = make_client()
    client.submit(sample_comprobante(1), "inv-1")
    sandbox.expire_tokens()

    client.submit(sample_comprobante(2), "inv-2")

    counters = sandbox.counters()
    assert counters["tokens"]["refreshes"] == 1
    assert counters["tokens"]["logins"] == 1
    assert counters["totals"]["status_401"] == 1
    assert counters["totals"]["created"] == 2


def test_bad_credentials_raise_auth_error_and_are_not_retried(sandbox, make_client):
    client = make_client(password="wrong")

    with pytest.raises(AuthError) as first:
        client.submit(sample_comprobante(1), "inv-1")
    with pytest.raises(AuthError) as second:
        client.verify(sample_comprobante_clave(1))

    assert "Invalid user credentials" in str(first.value)
    assert "wrong" not in str(first.value)
    assert "suspended" in str(second.value)
    counters = sandbox.counters()
    assert counters["tokens"]["login_failures"] == 1
    assert counters["totals"].get("posts", 0) == 0


def test_unknown_client_id_is_an_auth_error(sandbox, make_client):
    with pytest.raises(AuthError, match="invalid_client"):
        make_client(client_id="api-other").submit(sample_comprobante(1), "inv-1")


def test_missing_credentials_are_an_auth_error_before_any_call(sandbox, make_client):
    with pytest.raises(AuthError, match="not configured"):
        make_client(username=None, password=None).submit(sample_comprobante(1), "inv-1")
    assert sandbox.counters()["tokens"]["login_failures"] == 0


def test_idp_server_errors_are_transient(sandbox, make_client):
    sandbox.configure(error_share=1.0, error_status=503, fault_scope="idp")
    with pytest.raises(TransientError) as caught:
        make_client().submit(sample_comprobante(1), "inv-1")
    assert caught.value.code == "503"
    assert "falla simulada" in str(caught.value)


def test_garbled_idp_answer_is_transient(sandbox, make_client):
    sandbox.configure(malformed_share=1.0, fault_scope="idp")
    with pytest.raises(TransientError, match="unreadable token"):
        make_client().submit(sample_comprobante(1), "inv-1")


def sample_comprobante_clave(sequence: int) -> str:
    from providers.hacienda.comprobante import parse_comprobante

    return parse_comprobante(sample_comprobante(sequence), max_bytes=1 << 20).clave.value


def test_unreachable_redis_is_transient(sandbox, make_client):
    from sandbox.server import free_port

    client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(TransientError, match="unavailable"):
        client.submit(sample_comprobante(1), "inv-1")
    assert sandbox.totals().get("posts", 0) == 0
