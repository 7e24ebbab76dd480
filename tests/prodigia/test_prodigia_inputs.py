"""What is refused before any call: unknown addenda types, unclean `datos`, CFDI that are not CFDI."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import InvalidPayload
from providers.prodigia import (
    ADDENDA_TYPE_CODES,
    ADDENDA_TYPES,
    UnknownAddendaType,
    addenda_type,
    check_request,
    clean_datos,
)
from providers.prodigia.inputs import parse_cfdi
from tests.prodigia.conftest import stamped_cfdi


def test_the_seed_lists_thirteen_types() -> None:
    names = [item.name for item in ADDENDA_TYPES]
    assert names == [
        "Casa Ley",
        "Mabe",
        "Soriana",
        "Lowes",
        "Soriana Extemporánea",
        "HomeDepot",
        "AmericanStandard",
        "Chedraui",
        "KBFoam",
        "AcerosMx",
        "Liverpool/HEB",
        "City Fresko (Comercial Mexicana)",
        "Koblenz",
    ]
    assert len(set(ADDENDA_TYPE_CODES)) == 13


@pytest.mark.parametrize(
    ("given_name", "code"),
    [
        ("soriana", "soriana"),
        ("Soriana Extemporánea", "soriana-extemporanea"),
        ("SORIANA-EXTEMPORANEA", "soriana-extemporanea"),
        ("Liverpool/HEB", "liverpool-heb"),
        ("City Fresko", "cityfresko"),
        ("Home Depot", "homedepot"),
    ],
)
def test_types_are_found_by_code_or_by_the_seed_name(given_name: str, code: str) -> None:
    assert addenda_type(given_name).code == code


def test_an_unknown_type_names_every_known_one() -> None:
    with pytest.raises(UnknownAddendaType) as caught:
        check_request("walmart", "Walmart\nA|1\n")
    for code in ADDENDA_TYPE_CODES:
        assert code in str(caught.value)


def test_crlf_is_normalised_and_a_bom_dropped() -> None:
    assert clean_datos("\ufeffSoriana\r\nA|1\r\n".encode()) == "Soriana\nA|1\n"


@pytest.mark.parametrize(
    ("datos", "fragment"),
    [
        ("Soriana\rA|1", "U+000D on line 1"),
        ("Soriana\nA|\t1", "U+0009 on line 2"),
        ("Soriana\nA|1\x00", "U+0000"),
        ("Soriana\nA|\x85", "U+0085"),
        ("Soriana\nA|\ufffe", "U+FFFE"),
        ("  \n\n", "empty"),
        (b"Soriana\n\xff", "not UTF-8"),
        ("x" * (256 * 1024 + 1), "larger than"),
        (b"x" * (256 * 1024 + 1), "larger than"),
        ("Soriana\n\udc80", "surrogates"),
    ],
)
def test_unclean_datos_are_refused_with_the_reason(datos: str | bytes, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        clean_datos(datos)
    assert fragment in str(caught.value)


def test_the_size_limit_counts_utf8_bytes() -> None:
    assert clean_datos("ñ" * 10, limit=20)
    with pytest.raises(InvalidPayload):
        clean_datos("ñ" * 11, limit=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_clean_datos_returns_plain_lines_or_refuses(datos: str | bytes) -> None:
    try:
        text = clean_datos(datos)
    except InvalidPayload:
        return
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\ufffe\uffff]", text)
    assert text.strip()
    text.encode("utf-8")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"<a/>", "not a CFDI"),
        (b'<Comprobante xmlns="http://www.sat.gob.mx/cfd/2"/>', "not a CFDI"),
        (b"<cfdi:Comprobante", "not well-formed"),
        (b'<!DOCTYPE x><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4"/>', "DOCTYPE"),
        (b"x" * 100, "larger than"),
    ],
)
def test_a_cfdi_that_is_not_one_is_refused_before_sending(content: bytes, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_cfdi(content, "the CFDI", limit=99)
    assert fragment in str(caught.value)


def test_a_stamped_cfdi_is_accepted() -> None:
    assert parse_cfdi(stamped_cfdi(), "the CFDI").getroot().get("Total") == "116.00"


def test_the_sandbox_offers_exactly_the_client_s_types() -> None:
    from sandbox.prodigia.addendas import KINDS

    assert [(kind.code, kind.name) for kind in KINDS] == [(item.code, item.name) for item in ADDENDA_TYPES]


def test_either_half_of_the_city_fresko_cell_names_it() -> None:
    assert addenda_type("Comercial Mexicana").code == addenda_type("City Fresko").code == "cityfresko"
