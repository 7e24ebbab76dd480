"""Sample e-CF documents for the demo, benchmarks and tests: valid e-NCF, RNC and totals.

They are unsigned JSON as MSeller takes them; the e-NCF sequence makes each one unique, and the same
sequence always yields the same document, which is what makes a re-run exercise the duplicate path.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

DEFAULT_EMISOR = ("130862346", "Empresa de Pruebas SRL")
DEFAULT_COMPRADOR = ("101023122", "Cliente de Pruebas SA")
DEFAULT_FECHA = "01-04-2026"
ITBIS_RATE = Decimal("0.18")


def encf(sequence: int, doc_type: str = "31") -> str:
    """The 13-character e-NCF: series E, the type, a 10-digit sequence."""
    if not 1 <= sequence <= 9_999_999_999:
        raise ValueError("the sequence number has 10 digits and starts at 1")
    return f"E{doc_type}{sequence:010d}"


def sample_ecf_document(
    sequence: int,
    *,
    doc_type: str = "31",
    emisor: tuple[str, str] = DEFAULT_EMISOR,
    comprador: tuple[str, str] | None = DEFAULT_COMPRADOR,
    lines: int = 1,
    price: Decimal = Decimal("1000.00"),
    fecha: str = DEFAULT_FECHA,
) -> dict[str, Any]:
    """An e-CF of `doc_type` with `lines` taxable items at `price` plus 18 % ITBIS, as a dict."""
    items = [
        {
            "NumeroLinea": str(n),
            "IndicadorFacturacion": "1",
            "NombreItem": f"Servicio de prueba {n}",
            "IndicadorBienoServicio": "2",
            "CantidadItem": "1",
            "UnidadMedida": "43",
            "PrecioUnitarioItem": f"{price:.2f}",
            "MontoItem": f"{price:.2f}",
        }
        for n in range(1, lines + 1)
    ]
    gravado = price * lines
    itbis = (gravado * ITBIS_RATE).quantize(Decimal("0.01"))
    encabezado: dict[str, Any] = {
        "Version": "1.0",
        "IdDoc": {
            "TipoeCF": doc_type,
            "eNCF": encf(sequence, doc_type),
            "FechaVencimientoSecuencia": "31-12-2027",
            "IndicadorMontoGravado": "0",
            "TipoIngresos": "01",
            "TipoPago": "1",
        },
        "Emisor": {
            "RNCEmisor": emisor[0],
            "RazonSocialEmisor": emisor[1],
            "DireccionEmisor": "Av. Winston Churchill 1099, Santo Domingo",
            "FechaEmision": fecha,
        },
        "Totales": {
            "MontoGravadoTotal": f"{gravado:.2f}",
            "MontoGravadoI1": f"{gravado:.2f}",
            "ITBIS1": "18",
            "TotalITBIS": f"{itbis:.2f}",
            "TotalITBIS1": f"{itbis:.2f}",
            "MontoTotal": f"{gravado + itbis:.2f}",
        },
    }
    if comprador is not None:
        encabezado["Comprador"] = {"RNCComprador": comprador[0], "RazonSocialComprador": comprador[1]}
    # Keep the DGII's section order: Encabezado, DetallesItems, then the signature time.
    ordered = {"Version": encabezado.pop("Version"), "IdDoc": encabezado.pop("IdDoc"), **encabezado}
    return {"ECF": {"Encabezado": ordered, "DetallesItems": {"Item": items}, "FechaHoraFirma": f"{fecha} 10:00:00"}}


def sample_ecf(sequence: int, **kwargs: Any) -> bytes:
    """`sample_ecf_document` as the JSON bytes an ERP submits."""
    return json.dumps(sample_ecf_document(sequence, **kwargs), ensure_ascii=False).encode("utf-8")
