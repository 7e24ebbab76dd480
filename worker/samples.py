"""Generated MYSuite native XML invoices (fx:FactDocMX version 8) of a chosen size, for demo, tests and benchmarks.

The size is reached with invoice lines, as a real large invoice would be, so the documents are
realistic for parsers and for the sandbox's validation.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<fx:FactDocMX xmlns:fx="http://www.fact.com.mx/schema/fx" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.fact.com.mx/schema/fx http://www.mysuitemex.com/fact/schema/fx_2010_g.xsd">
  <fx:Version>8</fx:Version>
  <fx:Identificacion>
    <fx:CdgPaisEmisor>MX</fx:CdgPaisEmisor>
    <fx:TipoDeComprobante>FACTURA</fx:TipoDeComprobante>
    <fx:RFCEmisor>{entity}</fx:RFCEmisor>
    <fx:RazonSocialEmisor>EMPRESA DE PRUEBAS SA DE CV</fx:RazonSocialEmisor>
    <fx:Usuario>einvoice</fx:Usuario>
    <fx:NumeroInterno>{internal_id}</fx:NumeroInterno>
    <fx:AsignacionSolicitada>
      <fx:Folio>{folio}</fx:Folio>
      <fx:TiempoDeEmision>2026-11-20T10:00:00</fx:TiempoDeEmision>
    </fx:AsignacionSolicitada>
    <fx:Exportacion>01</fx:Exportacion>
    <fx:LugarExpedicion>06600</fx:LugarExpedicion>
  </fx:Identificacion>
  <fx:Emisor><fx:RegimenFiscal><fx:Regimen>601</fx:Regimen></fx:RegimenFiscal></fx:Emisor>
  <fx:Receptor>
    <fx:CdgPaisReceptor>MX</fx:CdgPaisReceptor>
    <fx:RFCReceptor>XAXX010101000</fx:RFCReceptor>
    <fx:NombreReceptor>PUBLICO EN GENERAL</fx:NombreReceptor>
    <fx:DomicilioFiscalReceptor>06600</fx:DomicilioFiscalReceptor>
    <fx:RegimenFiscalReceptor>616</fx:RegimenFiscalReceptor>
    <fx:UsoCFDI>S01</fx:UsoCFDI>
  </fx:Receptor>
  <fx:Conceptos>
"""
LINE = (
    "    <fx:Concepto><fx:Cantidad>1</fx:Cantidad><fx:ClaveUnidad>H87</fx:ClaveUnidad>"
    "<fx:UnidadDeMedida>PIEZA</fx:UnidadDeMedida><fx:ClaveProdServ>01010101</fx:ClaveProdServ>"
    "<fx:Codigo>SKU-{n:08d}</fx:Codigo><fx:Descripcion>Articulo de prueba {n}</fx:Descripcion>"
    "<fx:ValorUnitario>100.00</fx:ValorUnitario><fx:Importe>100.00</fx:Importe><fx:ObjetoImp>02</fx:ObjetoImp>"
    '<fx:ImpuestosSAT><fx:Traslados><fx:Traslado Base="100.00" Importe="16.00" Impuesto="002" '
    'TasaOCuota="0.160000" TipoFactor="Tasa" /></fx:Traslados></fx:ImpuestosSAT></fx:Concepto>\n'
)
TAIL = """  </fx:Conceptos>
  <fx:Totales>
    <fx:Moneda>MXN</fx:Moneda><fx:TipoDeCambioVenta>1</fx:TipoDeCambioVenta>
    <fx:SubTotalBruto>{subtotal}</fx:SubTotalBruto><fx:SubTotal>{subtotal}</fx:SubTotal>
    <fx:Total>{total}</fx:Total><fx:TotalEnLetra>-</fx:TotalEnLetra><fx:FormaDePago>99</fx:FormaDePago>
  </fx:Totales>
  <fx:ComprobanteEx><fx:TerminosDePago><fx:MetodoDePago>PPD</fx:MetodoDePago></fx:TerminosDePago></fx:ComprobanteEx>
</fx:FactDocMX>
"""


def native_xml(internal_id: str, size_bytes: int = 2048, entity: str = "JES900109Q90", folio: int = 1) -> bytes:
    """A well-formed fx:FactDocMX of at least `size_bytes` (at least one invoice line)."""
    head = HEAD.format(entity=escape(entity), internal_id=escape(internal_id), folio=folio).encode()
    line_len = len(LINE.format(n=0).encode())
    tail_len = len(TAIL.format(subtotal="0.00", total="0.00").encode()) + 16
    lines = max(1, (size_bytes - len(head) - tail_len + line_len - 1) // line_len)
    body = "".join(LINE.format(n=n) for n in range(lines)).encode()
    subtotal = f"{lines * 100:.2f}"
    total = f"{lines * 116:.2f}"
    return head + body + TAIL.format(subtotal=subtotal, total=total).encode()
