"""Sample comprobantes for the demo, benchmarks and tests: valid claves, signed-looking XML.

The signature is a placeholder with the XAdES shape (the sandbox does not verify it), so these
documents must never be sent to the real Hacienda. The same consecutivo always yields the same
clave, which is what makes a re-run of the demo exercise the duplicate ("ya fue recibido") path.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

COSTA_RICA = timezone(timedelta(hours=-6))
NAMESPACES = {
    "01": ("FacturaElectronica", "facturaElectronica"),
    "02": ("NotaDebitoElectronica", "notaDebitoElectronica"),
    "03": ("NotaCreditoElectronica", "notaCreditoElectronica"),
    "04": ("TiqueteElectronico", "tiqueteElectronico"),
    "08": ("FacturaElectronicaCompra", "facturaElectronicaCompra"),
    "09": ("FacturaElectronicaExportacion", "facturaElectronicaExportacion"),
    "10": ("ReciboElectronicoPago", "reciboElectronicoPago"),
}
DEFAULT_EMISOR = ("02", "3101123456", "Empresa de Pruebas S.A.")
DEFAULT_RECEPTOR = ("01", "114480790", "Cliente de Pruebas")
DEFAULT_FECHA = datetime(2024, 5, 1, 10, 0, 0, tzinfo=COSTA_RICA)


def consecutivo(sequence: int, doc_type: str = "01", branch: int = 1, terminal: int = 1) -> str:
    """The 20-digit NumeroConsecutivo: branch (3), terminal (5), type (2), number (10)."""
    if not 1 <= sequence <= 9_999_999_999:
        raise ValueError("the sequence number has 10 digits and starts at 1")
    return f"{branch:03d}{terminal:05d}{doc_type}{sequence:010d}"


def build_clave(
    emisor_number: str,
    numero_consecutivo: str,
    *,
    issued: datetime = DEFAULT_FECHA,
    situation: str = "1",
    security_code: str | None = None,
) -> str:
    """A Nota 3 clave; the security code defaults to a stable hash so the clave is reproducible."""
    code = security_code or str(int(hashlib.sha256(numero_consecutivo.encode()).hexdigest(), 16))[-8:]
    return f"506{issued:%d%m%y}{emisor_number.zfill(12)}{numero_consecutivo}{situation}{code}"


def sample_comprobante(
    sequence: int,
    *,
    doc_type: str = "01",
    emisor: tuple[str, str, str] = DEFAULT_EMISOR,
    receptor: tuple[str, str, str] | None = DEFAULT_RECEPTOR,
    issued: datetime = DEFAULT_FECHA,
    situation: str = "1",
    security_code: str | None = None,
    lines: int = 1,
    clave: str | None = None,
) -> bytes:
    """A v4.4 comprobante of `doc_type` with `lines` detail lines; `clave` overrides the computed one."""
    root, ns_name = NAMESPACES[doc_type]
    numero = consecutivo(sequence, doc_type)
    key = clave or build_clave(emisor[1], numero, issued=issued, situation=situation, security_code=security_code)
    fecha = issued.isoformat(timespec="seconds")
    detail = "".join(
        f"""
    <LineaDetalle>
      <NumeroLinea>{n}</NumeroLinea>
      <CodigoCABYS>4321000000000</CodigoCABYS>
      <Cantidad>1.000</Cantidad>
      <UnidadMedida>Unid</UnidadMedida>
      <Detalle>Servicio de prueba {n}</Detalle>
      <PrecioUnitario>10000.00000</PrecioUnitario>
      <MontoTotal>10000.00000</MontoTotal>
      <SubTotal>10000.00000</SubTotal>
      <BaseImponible>10000.00000</BaseImponible>
      <Impuesto>
        <Codigo>01</Codigo>
        <CodigoTarifaIVA>08</CodigoTarifaIVA>
        <Tarifa>13.00</Tarifa>
        <Monto>1300.00000</Monto>
      </Impuesto>
      <ImpuestoAsumidoEmisorFabrica>0.00000</ImpuestoAsumidoEmisorFabrica>
      <ImpuestoNeto>1300.00000</ImpuestoNeto>
      <MontoTotalLinea>11300.00000</MontoTotalLinea>
    </LineaDetalle>"""
        for n in range(1, lines + 1)
    )
    receptor_xml = ""
    if receptor is not None:
        receptor_xml = f"""
  <Receptor>
    <Nombre>{escape(receptor[2])}</Nombre>
    <Identificacion><Tipo>{receptor[0]}</Tipo><Numero>{receptor[1]}</Numero></Identificacion>
    <CorreoElectronico>cliente@example.com</CorreoElectronico>
  </Receptor>"""
    total = 11300 * lines
    document = f"""<?xml version="1.0" encoding="utf-8"?>
<{root} xmlns="https://cdn.comprobanteselectronicos.go.cr/xml-schemas/v4.4/{ns_name}"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
  <Clave>{key}</Clave>
  <ProveedorSistemas>{emisor[1]}</ProveedorSistemas>
  <CodigoActividadEmisor>620100</CodigoActividadEmisor>
  <NumeroConsecutivo>{numero}</NumeroConsecutivo>
  <FechaEmision>{fecha}</FechaEmision>
  <Emisor>
    <Nombre>{escape(emisor[2])}</Nombre>
    <Identificacion><Tipo>{emisor[0]}</Tipo><Numero>{emisor[1]}</Numero></Identificacion>
    <Ubicacion><Provincia>1</Provincia><Canton>01</Canton><Distrito>01</Distrito>
      <OtrasSenas>San José</OtrasSenas></Ubicacion>
    <CorreoElectronico>facturas@example.com</CorreoElectronico>
  </Emisor>{receptor_xml}
  <CondicionVenta>01</CondicionVenta>
  <DetalleServicio>{detail}
  </DetalleServicio>
  <ResumenFactura>
    <CodigoTipoMoneda><CodigoMoneda>CRC</CodigoMoneda><TipoCambio>1.00000</TipoCambio></CodigoTipoMoneda>
    <TotalServGravados>{10000 * lines}.00000</TotalServGravados>
    <TotalGravado>{10000 * lines}.00000</TotalGravado>
    <TotalVenta>{10000 * lines}.00000</TotalVenta>
    <TotalVentaNeta>{10000 * lines}.00000</TotalVentaNeta>
    <TotalImpuesto>{1300 * lines}.00000</TotalImpuesto>
    <MedioPago><TipoMedioPago>04</TipoMedioPago></MedioPago>
    <TotalComprobante>{total}.00000</TotalComprobante>
  </ResumenFactura>
  <ds:Signature Id="Signature-{key[-8:]}">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
      <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
      <ds:Reference URI="">
        <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <ds:DigestValue>{hashlib.sha256(key.encode()).hexdigest()}</ds:DigestValue>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue>U0FORELPWC1OT1QtQS1SRUFMLVNJR05BVFVSRQ==</ds:SignatureValue>
  </ds:Signature>
</{root}>
"""
    return document.encode("utf-8")
