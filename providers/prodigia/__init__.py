"""Prodigia (PADE) IntegracionAddendas: retailers' `cfdi:Addenda` nodes built from ERP text lines.

Not an invoice provider (nothing is issued, nothing has fiscal value), so it is not in the provider
registry: the addenda step and `einvoice addenda` build their client with `from_env()`.
"""

from providers.prodigia.client import AddendaClient, check_request, from_env
from providers.prodigia.config import ProdigiaConfig
from providers.prodigia.inputs import (
    ADDENDA_TYPE_CODES,
    ADDENDA_TYPES,
    MAX_DATOS_BYTES,
    AddendaType,
    UnknownAddendaType,
    addenda_type,
    clean_datos,
)
from providers.prodigia.parsing import AddendaAnswer, parse_answer
from providers.prodigia.signed import AddendaRefused, SignedPartChanged, verify_attached

__all__ = [
    "ADDENDA_TYPES",
    "ADDENDA_TYPE_CODES",
    "MAX_DATOS_BYTES",
    "AddendaAnswer",
    "AddendaClient",
    "AddendaRefused",
    "AddendaType",
    "ProdigiaConfig",
    "SignedPartChanged",
    "UnknownAddendaType",
    "addenda_type",
    "check_request",
    "clean_datos",
    "from_env",
    "parse_answer",
    "verify_attached",
]
