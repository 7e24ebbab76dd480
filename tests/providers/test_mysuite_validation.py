"""Local validation of documents and internal ids, and the configuration read from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.base import InvalidPayload
from providers.mysuite import MySuiteClient, MySuiteConfig
from tests.providers.mysuite_samples import native_xml

SECRET = "12211111-1111-1111-1111-111111111111"


@pytest.fixture
def client() -> MySuiteClient:
    return MySuiteClient(MySuiteConfig(environment="test"))


def test_a_native_document_passes(client: MySuiteClient) -> None:
    client.validate(native_xml(), "INV-1")
    client.validate(native_xml(3 << 20), "x" * 50)


@pytest.mark.parametrize(
    ("internal_id", "message"),
    [
        ("", "empty"),
        ("x" * 51, "51 characters; the limit is 50"),
        ("INV\n1", "control"),
        ("INV\x001", "control"),
        ("INV\x7f", "control"),
        (" INV-1", "spaces"),
        ("INV-1 ", "spaces"),
    ],
)
def test_bad_internal_ids(client: MySuiteClient, internal_id: str, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        client.validate(native_xml(), internal_id)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"not xml", "not well-formed"),
        (b"<fx:FactDocMX xmlns:fx='http://www.fact.com.mx/schema/fx'>", "not well-formed"),
        (b"<FactDocMX/>", "root is FactDocMX"),
        (b"<fx:FactDocMX xmlns:fx='urn:other'/>", "root is {urn:other}FactDocMX"),
        (native_xml(root="Comprobante"), "MYSuite expects {http://www.fact.com.mx/schema/fx}FactDocMX"),
        (
            b"<fx:FactDocMX xmlns:fx='http://www.fact.com.mx/schema/fx'>&ext;</fx:FactDocMX>",
            "not well-formed",
        ),
    ],
)
def test_bad_documents(client: MySuiteClient, payload: bytes, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message.replace("{", r"\{").replace("}", r"\}")):
        client.validate(payload, "INV-1")


@pytest.mark.parametrize(
    "doctype",
    [
        b"<!DOCTYPE fx:FactDocMX>",
        b'<!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>',
        b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd">',
        b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_doctype_is_refused(client: MySuiteClient, doctype: bytes) -> None:
    document = native_xml()
    head, rest = document.split(b"\n", 1)
    with pytest.raises(InvalidPayload, match="DOCTYPE"):
        client.validate(head + b"\n" + doctype + rest, "INV-1")


def test_size_limits_per_environment_are_checked_before_parsing() -> None:
    test_env = MySuiteClient(MySuiteConfig(environment="test"))
    production = MySuiteClient(MySuiteConfig(environment="production"))
    too_big_for_test = b"\x00" * ((4 << 20) + 1)  # not XML at all: the size check must come first
    with pytest.raises(InvalidPayload, match=r"at most 4194304 bytes \(4 MiB\)"):
        test_env.validate(too_big_for_test, "INV-1")
    with pytest.raises(InvalidPayload, match="not well-formed"):
        production.validate(too_big_for_test, "INV-1")
    with pytest.raises(InvalidPayload, match=r"production environment accepts at most 41943040 bytes \(40 MiB\)"):
        production.validate(b" " * ((40 << 20) + 1), "INV-1")
    test_env.validate(native_xml(4 << 20), "INV-1")


def test_config_from_environment_with_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "requestor"
    secret.write_text(SECRET + "\n")
    config = MySuiteConfig.from_environ(
        {
            "MYSUITE_REQUESTOR_FILE": str(secret),
            "MYSUITE_REQUESTOR": "stale-value",
            "MYSUITE_ENTITY": "AAA010101AAA",
            "MYSUITE_ENV": "production",
            "MYSUITE_ASYNC_MIN_BYTES": "0",
            "MYSUITE_CONNECT_TIMEOUT": "1.5",
            "MYSUITE_READ_TIMEOUT": "9",
            "MYSUITE_UPLOAD_TIMEOUT": "600",
            "MYSUITE_LINK_TTL_SECONDS": "60",
        }
    )
    assert config.requestor == SECRET
    assert config.user == SECRET  # defaults to the requestor
    assert config.username == "MX.AAA010101AAA.einvoice"
    assert config.max_payload_bytes == 40 << 20
    assert (config.async_min_bytes, config.connect_timeout, config.read_timeout) == (0, 1.5, 9.0)
    assert (config.upload_timeout, config.link_ttl_seconds) == (600.0, 60.0)
    for text in (repr(config), str(config), repr(MySuiteClient(config))):
        assert SECRET not in text and "AAA010101AAA" in text


def test_config_defaults_and_errors() -> None:
    config = MySuiteConfig.from_environ({})
    assert config.async_url == "http://127.0.0.1:8080/mysuite/async/factwsfront.asmx"
    assert config.sync_url == "http://127.0.0.1:8080/mysuite/sync/FactWSFront.asmx"
    assert config.requestor == config.user == "00000000-0000-0000-0000-000000000000"
    assert (config.entity, config.username) == ("JES900109Q90", "MX.JES900109Q90.einvoice")
    assert (config.environment, config.async_min_bytes, config.max_payload_bytes) == (
        "test",
        1 << 20,
        4 << 20,
    )
    user = MySuiteConfig.from_environ({"MYSUITE_USER": "other", "MYSUITE_USERNAME": "MX.JES900109Q90.erp"})
    assert (user.user, user.username) == ("other", "MX.JES900109Q90.erp")
    with pytest.raises(ValueError, match="MYSUITE_ENV"):
        MySuiteConfig.from_environ({"MYSUITE_ENV": "staging"})
    with pytest.raises(ValueError, match="MYSUITE_READ_TIMEOUT"):
        MySuiteConfig.from_environ({"MYSUITE_READ_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="read_timeout"):
        MySuiteConfig.from_environ({"MYSUITE_READ_TIMEOUT": "0"})
