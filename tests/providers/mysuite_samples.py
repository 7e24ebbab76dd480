"""Recorded MYSuite answers (verbatim files under data/) and a writer of .NET-shaped envelopes."""

from __future__ import annotations

import base64
from pathlib import Path
from xml.sax.saxutils import escape

DATA = Path(__file__).with_name("data")

TIMBRAR_RESPONSE = (DATA / "timbrar_response_test_env.xml").read_bytes()
"""TIMBRAR in the test environment, from SAT-CFDI/python-satcfdi (mysuite.md §4.1), verbatim."""

SEED_VERIFY_XML = (DATA / "seed001_verify_rd1.xml").read_bytes()
"""Seed 001's decoded ResponseData1 for ASYNC_CONVERT_VERIFY, exactly as the seed prints it."""

SEED_VERIFY_XML_PRETTY = (DATA / "seed001_verify_rd1_pretty.xml").read_bytes()
SEED_VERIFY_JSON = (DATA / "seed001_verify_rd2.json").read_bytes()
"""Seed 001's decoded ResponseData2, with the leading space in InternalID."""

SEED_REQUEST_ID = "a6b30f75-37c1-4972-aa9c-3cdf523b9bdd"


def b64(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def envelope(
    *,
    result: bool = True,
    code: str | None = "1",
    data: str | None = None,
    description: str | None = "",
    hint: str | None = "",
    requestor_active: str = "true",
    identifier: dict[str, str] | None = None,
    rd1: str | None = None,
    rd2: str | None = None,
    rd3: str | None = None,
    transaction: str = "ASYNC_CONVERT_VERIFY",
) -> bytes:
    """A RequestTransactionResponse shaped like the recorded one (nulls omitted, empties as <X/>)."""

    def element(name: str, value: str | None) -> str:
        if value is None:
            return ""
        if value == "":
            return f"<{name}/>"
        return f"<{name}>{escape(value)}</{name}>"

    ident = ""
    if identifier is not None:
        ident = "<Identifier>" + "".join(element(k, v) for k, v in identifier.items()) + "</Identifier>"
    response_data = "".join(
        element(name, value) for name, value in (("ResponseData1", rd1), ("ResponseData2", rd2), ("ResponseData3", rd3))
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        '<soap:Body><RequestTransactionResponse xmlns="http://www.fact.com.mx/schema/ws">'
        "<RequestTransactionResult><Request>"
        "<Requestor>00000000-0000-0000-0000-000000000000</Requestor>"
        f"<RequestorActive>{requestor_active}</RequestorActive>"
        f"<Transaction>{transaction}</Transaction><Country>MX</Country><Entity>JES900109Q90</Entity>"
        "<User>00000000-0000-0000-0000-000000000000</User><UserName>MX.JES900109Q90.einvoice</UserName>"
        "<Id>96f342f4-a28a-487a-907f-7d00f388a8ce</Id><TimeStamp>2023-03-21T10:56:25.5256369-06:00</TimeStamp>"
        "</Request><Response>"
        f"<Result>{'true' if result else 'false'}</Result>"
        "<TimeStamp>2023-03-21T10:56:26.1661906-06:00</TimeStamp><LastResult/>"
        f"{element('Code', code)}{element('Description', description)}{element('Hint', hint)}"
        f"{element('Data', data)}<Processor>TEST-BACK02</Processor>{ident}"
        f"</Response><ResponseData>{response_data}</ResponseData>"
        "</RequestTransactionResult></RequestTransactionResponse></soap:Body></soap:Envelope>"
    ).encode()


def native_xml(size: int | None = None, root: str = "FactDocMX", internal_id: str = "INV-1") -> bytes:
    """A v8 native XML (fx:FactDocMX), padded with concepts up to about `size` bytes when given."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<fx:{root} xmlns:fx="http://www.fact.com.mx/schema/fx">'
        "<fx:Version>8</fx:Version><fx:Identificacion><fx:CdgPaisEmisor>MX</fx:CdgPaisEmisor>"
        "<fx:TipoDeComprobante>FACTURA</fx:TipoDeComprobante><fx:RFCEmisor>JES900109Q90</fx:RFCEmisor>"
        f"<fx:NumeroInterno>{internal_id}</fx:NumeroInterno></fx:Identificacion><fx:Conceptos>"
    ).encode()
    tail = f"</fx:Conceptos></fx:{root}>".encode()
    concept = (
        b"<fx:Concepto><fx:Cantidad>1</fx:Cantidad><fx:Descripcion>Servicio</fx:Descripcion>"
        b"<fx:ValorUnitario>100.00</fx:ValorUnitario><fx:Importe>100.00</fx:Importe></fx:Concepto>\n"
    )
    count = 1 if size is None else max(1, (size - len(head) - len(tail)) // len(concept))
    return head + concept * count + tail
