"""Settings from the environment; secrets stay out of repr and messages."""

from __future__ import annotations

import logging

import pytest

from providers import get_provider, reset_providers
from providers.base import AuthError, Provider
from providers.hacienda import HaciendaClient, HaciendaSettings
from providers.hacienda.samples import sample_comprobante
from providers.hacienda.settings import DEFAULT_API_URL, DEFAULT_IDP_URL
from tests.hacienda.conftest import PASSWORD, USER


def test_defaults_point_at_the_local_sandbox_with_the_stag_quota():
    settings = HaciendaSettings.from_env({})
    assert (settings.api_url, settings.idp_url, settings.client_id) == (
        DEFAULT_API_URL,
        DEFAULT_IDP_URL,
        "api-stag",
    )
    assert (settings.rate_per_hour, settings.rate_per_day) == (100, 1000)
    assert settings.redis_url is None


def test_password_file_wins_and_stays_out_of_repr(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-file\n")
    env = {
        "HACIENDA_USERNAME": USER,
        "HACIENDA_PASSWORD": "stale",
        "HACIENDA_PASSWORD_FILE": str(secret),
        "HACIENDA_RATE_PER_HOUR": "0",
        "HACIENDA_RATE_BURST": "4",
        "HACIENDA_READ_TIMEOUT": "12.5",
    }
    settings = HaciendaSettings.from_env(env)
    assert settings.password == "s3cret-from-file"
    assert (settings.rate_per_hour, settings.rate_burst, settings.read_timeout) == (0, 4, 12.5)
    client: Provider = HaciendaClient(settings)
    assert isinstance(client, HaciendaClient)
    try:
        for text in (repr(settings), repr(client), repr(client.limiter)):
            assert "s3cret" not in text
        assert client.entity == "3101123456"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("filesystem://", None),
        ("sqla+sqlite:///x.db", None),
    ],
)
def test_redis_defaults_to_a_redis_broker(broker, expected):
    assert HaciendaSettings.from_env({"CELERY_BROKER_URL": broker}).redis_url == expected
    explicit = {"CELERY_BROKER_URL": broker, "HACIENDA_REDIS_URL": "redis://other:6379/3"}
    assert HaciendaSettings.from_env(explicit).redis_url == "redis://other:6379/3"


def test_registry_builds_the_client_from_the_environment(sandbox, monkeypatch, caplog):
    monkeypatch.setenv("HACIENDA_API_URL", sandbox.api_url)
    monkeypatch.setenv("HACIENDA_IDP_URL", sandbox.idp_url)
    monkeypatch.setenv("HACIENDA_USERNAME", USER)
    monkeypatch.setenv("HACIENDA_PASSWORD", PASSWORD)
    monkeypatch.delenv("HACIENDA_REDIS_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    reset_providers()
    try:
        client = get_provider("hacienda")
        assert client.name == "hacienda"
        assert client.entity == "3101123456"
        with caplog.at_level(logging.DEBUG):
            clave = client.submit(sample_comprobante(1), "inv-1").request_id
            client.verify(clave)
        messages = [record.getMessage() for record in caplog.records]
        assert any("logged in" in message for message in messages)
        assert not any("eyJ" in message or PASSWORD in message for message in messages)  # JWTs start eyJ
    finally:
        reset_providers()


def test_auth_error_messages_carry_no_secret(sandbox, make_client):
    with pytest.raises(AuthError) as caught:
        make_client(password="hunter2-secret").submit(sample_comprobante(1), "inv-1")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.__dict__)
