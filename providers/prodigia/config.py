"""Prodigia addendas settings, read once from the environment (or `*_FILE` secrets), never printed in full."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.env import Env
from providers.prodigia.inputs import MAX_CFDI_BYTES, MAX_DATOS_BYTES
from providers.prodigia.soap import SHIPPED_NAMESPACE

DEFAULT_URL = "http://127.0.0.1:8080/prodigia/PadeServ/IntegracionAddendas"
# The sandbox's default account, so that a checkout with no settings talks to the local simulator.
DEFAULT_CONTRATO = "SANDBOX-CONTRATO"
DEFAULT_USUARIO = "sandbox"
DEFAULT_PASSWD = "sandbox"


@dataclass(frozen=True)
class ProdigiaConfig:
    """Where and as whom to call the addendas service.

    `usuario` and `passwd` are the login that three refusals lock, so they are left out of `repr`;
    `contrato` is shown because operators need to see which contract a pause is about.
    """

    url: str = DEFAULT_URL
    contrato: str = DEFAULT_CONTRATO
    usuario: str = field(default=DEFAULT_USUARIO, repr=False)
    passwd: str = field(default=DEFAULT_PASSWD, repr=False)
    namespace: str = SHIPPED_NAMESPACE
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    connect_attempts: int = 3
    max_datos_bytes: int = MAX_DATOS_BYTES
    max_cfdi_bytes: int = MAX_CFDI_BYTES

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.connect_attempts < 1 or self.max_datos_bytes < 1 or self.max_cfdi_bytes < 1:
            raise ValueError("connect_attempts and the size limits must be at least 1")
        if not self.namespace.strip():
            raise ValueError("PRODIGIA_NAMESPACE must not be empty")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ProdigiaConfig:
        """Build the config from `PRODIGIA_*` variables; unset ones keep the sandbox defaults."""

        env = Env(environ)
        return cls(
            url=env.text("PRODIGIA_ADDENDAS_URL", DEFAULT_URL),
            contrato=env.text("PRODIGIA_CONTRATO", DEFAULT_CONTRATO),
            usuario=env.text("PRODIGIA_USUARIO", DEFAULT_USUARIO),
            passwd=env.text("PRODIGIA_PASSWD", DEFAULT_PASSWD),
            namespace=env.text("PRODIGIA_NAMESPACE", SHIPPED_NAMESPACE),
            connect_timeout=env.number("PRODIGIA_CONNECT_TIMEOUT", 5.0),
            read_timeout=env.number("PRODIGIA_READ_TIMEOUT", 60.0),
        )
