"""Property tests: the parsers answer any input with values or their one typed error, never a crash."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from providers.base import InvalidPayload
from providers.mseller.ecf import MalformedAnswer, parse_batch, parse_dgii_responses, parse_ecf
from providers.mseller.samples import sample_ecf_document

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
reply_keys = st.sampled_from(["trackId", "codigo", "estado", "encf", "fechaRecepcion", "mensajes", "error", "mensaje"])
replies = st.dictionaries(reply_keys, json_values, max_size=8)
codigo = st.integers(min_value=0, max_value=9999) | st.integers(min_value=0, max_value=9999).map(str)
message = st.fixed_dictionaries({"codigo": codigo, "valor": st.text(min_size=1, max_size=40)})


@given(st.lists(replies.map(json.dumps) | replies | json_values | st.text(max_size=30), max_size=5) | json_values)
def test_any_input_parses_or_is_malformed(raw: Any) -> None:
    try:
        parsed = parse_dgii_responses(raw)
    except MalformedAnswer:
        return
    for reply in parsed:
        assert reply.codigo is None or isinstance(reply.codigo, str)
        assert all(isinstance(m.codigo, str) and isinstance(m.valor, str) for m in reply.messages)


@given(codigo, st.sampled_from(["Aceptado", "Rechazado", "Aceptado Condicional"]), st.lists(message, max_size=4))
def test_string_or_number_codigo_reads_the_same(code: int | str, estado: str, messages: list[dict[str, Any]]) -> None:
    entry = {"trackId": "t", "codigo": code, "estado": estado, "mensajes": messages}
    (reply,) = parse_dgii_responses([json.dumps(entry)])
    assert reply.codigo == str(code)
    assert reply.estado == estado
    assert [(m.codigo, m.valor) for m in reply.messages] == [
        (str(m["codigo"]), m["valor"].strip()) for m in messages if m["valor"].strip() or str(m["codigo"]) != "0"
    ]


@given(json_values | st.fixed_dictionaries({"results": st.lists(json_values, max_size=4)}))
def test_any_batch_answer_parses_or_is_malformed(raw: Any) -> None:
    try:
        records = parse_batch(raw)
    except MalformedAnswer:
        return
    assert all(isinstance(key, str) for key in records)


@given(json_values)
def test_any_json_document_is_valid_or_refused_as_invalid(document: Any) -> None:
    with contextlib.suppress(InvalidPayload):
        parse_ecf(json.dumps({"ECF": document}).encode(), max_bytes=10**6)


@given(st.sampled_from(["MontoTotal", "MontoGravadoTotal", "TotalITBIS", "MontoExento"]), json_values)
def test_any_amount_is_read_or_refused_as_invalid(field: str, value: Any) -> None:
    document = sample_ecf_document(1)
    document["ECF"]["Encabezado"]["Totales"][field] = value
    with contextlib.suppress(InvalidPayload):
        parse_ecf(json.dumps(document).encode(), max_bytes=10**6)
