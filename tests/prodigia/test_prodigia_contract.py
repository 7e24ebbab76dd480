"""The client against the simulator over real HTTP: every code, the login lock, faults, the WSDL."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from lxml import etree

from providers.base import AuthError, InvalidPayload, PermanentError, TransientError
from providers.prodigia import AddendaClient, ProdigiaConfig, SignedPartChanged, from_env, verify_attached
from providers.prodigia.soap import wsdl_text
from sandbox.server import free_port
from tests.prodigia.conftest import DATOS, ProdigiaSandbox, stamped_cfdi

CFDI = "http://www.sat.gob.mx/cfd/4"


@pytest.mark.parametrize("style", ["escaped", "cdata", "inline"])
def test_code_0_generate_returns_the_addenda_node(prodigia: ProdigiaSandbox, make_client: Any, style: str) -> None:
    prodigia.configure(answer_style=style)
    node = make_client().generate("soriana", DATOS)
    root = etree.fromstring(node)
    assert root.tag == f"{{{CFDI}}}Addenda"
    assert root[0].tag == "{urn:sandbox:prodigia:addenda:soriana}DSCargaRemisionProv"
    assert prodigia.counters()["codes"] == {"0": 1}


def test_code_0_attach_returns_the_checked_cfdi(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    original = stamped_cfdi()
    returned = make_client().attach("soriana", DATOS, original)
    assert verify_attached(original, returned) == returned
    assert etree.fromstring(returned)[-1].tag == f"{{{CFDI}}}Addenda"
    assert prodigia.counters()["operations"]["procesarAdjuntarAddenda"]["calls"] == 1


def test_crlf_datos_are_sent_as_lines(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    node = make_client().generate("Liverpool/HEB", "Liverpool/HEB\r\nPedido|9\r\nPedido|10\r\n")
    values = [e.text for e in etree.fromstring(node)[0]]
    assert values == ["9", "10"]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"passwd": "wrong"}, "1"), ({"usuario": "nadie"}, "1"), ({"contrato": "OTRO"}, "2")],
)
def test_codes_1_and_2_raise_auth_after_exactly_one_call(
    prodigia: ProdigiaSandbox, make_client: Any, overrides: dict[str, str], code: str
) -> None:
    client = make_client(**overrides)
    with pytest.raises(AuthError) as caught:
        client.attach("soriana", DATOS, stamped_cfdi())
    assert caught.value.code == code
    counters = prodigia.counters()
    assert counters["totals"]["calls"] == 1
    assert counters["locked"] == []
    user = overrides.get("usuario", "sandbox")
    assert counters["logins"][user]["consecutive_refusals"] == 1


def test_the_sandbox_locks_a_user_after_three_refusals_until_reset(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    """The lock the client must never cause exists: three refusals, then even the right password fails."""
    bad, good = make_client(passwd="wrong"), make_client()
    for _ in range(3):
        with pytest.raises(AuthError):
            bad.generate("soriana", DATOS)
    assert prodigia.counters()["locked"] == ["sandbox"]
    with pytest.raises(AuthError) as caught:
        good.generate("soriana", DATOS)
    assert "Bloqueo" in str(caught.value)
    prodigia.reset()
    assert good.generate("soriana", DATOS)


def test_a_success_resets_the_count_of_refusals(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    bad, good = make_client(passwd="wrong"), make_client()
    for _ in range(2):
        with pytest.raises(AuthError):
            bad.generate("soriana", DATOS)
    good.generate("soriana", DATOS)
    with pytest.raises(AuthError):
        bad.generate("soriana", DATOS)
    assert prodigia.counters()["logins"]["sandbox"] == {"consecutive_refusals": 1, "refusals": 3, "locked": False}


def test_concurrent_refused_calls_of_one_client_each_call_once(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    """Two threads with wrong credentials: two calls, two AuthErrors, no retry, so no lock."""
    client = make_client(passwd="wrong")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.generate("soriana", DATOS)
        except AuthError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 2
    assert prodigia.calls() == 2
    assert prodigia.counters()["locked"] == []


@pytest.mark.parametrize(
    "knobs",
    [{"force_code": 3}, {"max_datos_bytes": 10}],
    ids=["forced", "oversized"],
)
def test_code_3_is_permanent_with_the_message(
    prodigia: ProdigiaSandbox, make_client: Any, knobs: dict[str, Any]
) -> None:
    prodigia.configure(**knobs)
    with pytest.raises(PermanentError) as caught:
        make_client().generate("soriana", DATOS)
    assert caught.value.code == "3"
    assert "Parámetro inválido" in (caught.value.description or "")
    assert prodigia.calls() == 1


@pytest.mark.parametrize(
    "knobs",
    [{"maintenance": True}, {"maintenance_windows": ["00:00-23:59", "23:59-00:00"]}],
    ids=["switch", "window"],
)
def test_code_5_is_transient_called_once_and_never_a_refused_login(
    prodigia: ProdigiaSandbox, make_client: Any, knobs: dict[str, Any]
) -> None:
    prodigia.configure(**knobs)
    with pytest.raises(TransientError) as caught:
        make_client(passwd="wrong").generate("soriana", DATOS)
    assert caught.value.code == "5"
    counters = prodigia.counters()
    assert counters["totals"]["calls"] == 1
    assert counters["logins"] == {}


def test_a_maintenance_window_elsewhere_in_the_day_lets_calls_through(
    prodigia: ProdigiaSandbox, make_client: Any
) -> None:
    now = time.gmtime()
    start = (now.tm_hour + 2) % 24
    prodigia.configure(maintenance_windows=[f"{start:02d}:00-{start:02d}:30"])
    assert make_client().generate("soriana", DATOS)


@pytest.mark.parametrize(
    "datos",
    ["Walmart\nPedido|1\n", "Soriana\nsin separador\n", "Soriana\n"],
    ids=["unknown-type-in-datos", "bad-line", "no-fields"],
)
def test_code_6_is_permanent_with_the_message(prodigia: ProdigiaSandbox, make_client: Any, datos: str) -> None:
    with pytest.raises(PermanentError) as caught:
        make_client().attach("soriana", datos, stamped_cfdi())
    assert caught.value.code == "6"
    assert (caught.value.description or "").startswith("Ocurrió un error en el procesamiento")


@pytest.mark.parametrize("tamper", ["total", "tfd", "two_addendas", "misplaced"])
def test_a_tampering_service_is_refused(prodigia: ProdigiaSandbox, make_client: Any, tamper: str) -> None:
    prodigia.configure(tamper=tamper)
    with pytest.raises(SignedPartChanged):
        make_client().attach("soriana", DATOS, stamped_cfdi())


def test_local_refusals_never_reach_the_service(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    client = make_client(passwd="wrong")
    with pytest.raises(InvalidPayload):
        client.generate("walmart", DATOS)
    with pytest.raises(InvalidPayload):
        client.generate("soriana", "Soriana\tA|1")
    with pytest.raises(InvalidPayload):
        client.attach("soriana", DATOS, b"<factura/>")
    assert prodigia.calls() == 0


@pytest.mark.parametrize("fault", ["http500_rate", "soap_fault_rate", "malformed_rate"])
def test_faults_are_transient_and_not_retried(prodigia: ProdigiaSandbox, make_client: Any, fault: str) -> None:
    """Any of these may have reached the service, and a refused login cannot be told apart: one call."""
    prodigia.configure(**{fault: 1.0})
    with pytest.raises(TransientError):
        make_client().generate("soriana", DATOS)
    assert prodigia.calls() == 1


def test_an_outage_is_transient(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    prodigia.configure(outage=True)
    with pytest.raises(TransientError, match="HTTP 503"):
        make_client().generate("soriana", DATOS)


def test_refused_connections_are_retried_then_transient() -> None:
    client = AddendaClient(ProdigiaConfig(url=f"http://127.0.0.1:{free_port()}/x", connect_attempts=2))
    try:
        with pytest.raises(TransientError, match="connection failed"):
            client.generate("soriana", DATOS)
    finally:
        client.close()


def test_the_namespace_is_configurable_on_both_sides(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    prodigia.configure(namespace="http://ws.pade.mx/")
    with pytest.raises(TransientError) as caught:
        make_client().generate("soriana", DATOS)
    assert "Cannot find dispatch method" in (caught.value.description or "")
    assert make_client(namespace="http://ws.pade.mx/").generate("soriana", DATOS)


def test_the_served_wsdl_is_the_shipped_one(prodigia: ProdigiaSandbox) -> None:
    """The sandbox generates its WSDL; it must describe exactly the binding the client was built from."""
    served = httpx.get(prodigia.url + "?wsdl").content
    parser = etree.XMLParser(remove_comments=True, remove_blank_text=True)
    served_root = etree.fromstring(served, parser)
    shipped_root = etree.fromstring(wsdl_text("addendas.ws.pade.mx"), parser)
    address = ".//{http://schemas.xmlsoap.org/wsdl/soap/}address"
    assert served_root.find(address).get("location") == prodigia.url
    for root in (served_root, shipped_root):
        root.find(address).set("location", "-")
    # The guessed namespace is a relative URI, which C14N refuses; both are parsed alike, so compare as written.
    assert etree.tostring(served_root) == etree.tostring(shipped_root)


def test_secrets_stay_out_of_repr_and_errors(prodigia: ProdigiaSandbox, make_client: Any) -> None:
    client = make_client(usuario="usuario-secreto", passwd="clave-secreta")
    assert "secreto" not in repr(client) and "clave" not in repr(client)
    with pytest.raises(AuthError) as caught:
        client.generate("soriana", DATOS)
    assert "secret" not in str(caught.value)


def test_from_env_reads_the_settings_and_secret_files(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("de-archivo\n")
    monkeypatch.setenv("PRODIGIA_ADDENDAS_URL", "http://example.invalid/PadeServ/IntegracionAddendas")
    monkeypatch.setenv("PRODIGIA_CONTRATO", "C-9")
    monkeypatch.setenv("PRODIGIA_USUARIO", "u")
    monkeypatch.setenv("PRODIGIA_PASSWD", "de-entorno")
    monkeypatch.setenv("PRODIGIA_PASSWD_FILE", str(secret))
    client = from_env()
    try:
        assert client.config.url == "http://example.invalid/PadeServ/IntegracionAddendas"
        assert client.config.contrato == "C-9"
        assert client.config.passwd == "de-archivo"
    finally:
        client.close()
