"""The Prodigia IntegracionAddendas client: plain-text `datos` in, a `cfdi:Addenda` (or a CFDI with one) out.

The service is synchronous and keeps no state, so a call may be repeated safely, with one exception
that shapes this client: every call carries the login, and Prodigia locks the account after three
refused logins ("Bloqueo de acceso… 3 ocasiones, ya sea a través del portal o webservice"). Hence:

- A call is retried here only when the request provably never left (connection refused, connect
  timeout): such an attempt cannot count as a login. Anything that may have reached the service,
  even an unreadable answer, is raised at once and the caller's schedule decides.
- Codes 1 and 2 raise AuthError and are never retried by this client.
- Code 5 (maintenance) raises TransientError without a short in-call retry, so the account is not
  hammered while the service is down; the caller backs off.

Concurrency: one client is shared by every thread of a process (httpx's pool is thread-safe, zeep
serialisation is locked). After a fork the child drops the pool it inherited (providers/http.py),
because the parent still owns those sockets.
"""

from __future__ import annotations

import logging

import httpx
import tenacity
from lxml import etree

from providers.base import TransientError, observed
from providers.http import ForkSafePool, read_capped, timeout
from providers.prodigia import inputs
from providers.prodigia.config import ProdigiaConfig
from providers.prodigia.inputs import (
    CFDI_NAMESPACES,
    AddendaType,
    cfdi_text,
    clean_datos,
    parse_cfdi,
)
from providers.prodigia.parsing import AddendaAnswer, interpret_http_answer, refusal
from providers.prodigia.signed import AddendaRefused, verify_attached
from providers.prodigia.soap import EnvelopeBuilder
from providers.xml import parse_untrusted

log = logging.getLogger(__name__)

PROVIDER = "prodigia"
MAX_ANSWER_BYTES = 64 << 20
"""Largest answer read into memory: a CFDI of MAX_CFDI_BYTES in base64 plus the envelope."""


class _NotSent(Exception):
    """The connection failed before the request was written: retrying cannot count as a login."""


def check_request(addenda_type: str, datos: str | bytes, max_datos_bytes: int | None = None) -> tuple[AddendaType, str]:
    """The known type and cleaned `datos` of an addenda request, or InvalidPayload (no network).

    The producer calls this at submit time, so a request that can never succeed is refused before a
    job exists.
    """
    found = inputs.addenda_type(addenda_type)
    if max_datos_bytes is None:
        return found, clean_datos(datos)
    return found, clean_datos(datos, max_datos_bytes)


class AddendaClient:
    """Calls procesarAddenda / procesarAdjuntarAddenda and returns only documents it has checked."""

    name = PROVIDER

    def __init__(self, config: ProdigiaConfig) -> None:
        self.config = config
        self._envelopes = EnvelopeBuilder(config.namespace)
        self._pool = ForkSafePool(
            lambda: httpx.Client(timeout=timeout(config.connect_timeout, config.read_timeout), follow_redirects=False)
        )

    def __repr__(self) -> str:
        return f"AddendaClient({self.config!r})"

    # -- the API -----------------------------------------------------------------------------

    def generate(self, addenda_type: str, datos: str | bytes) -> bytes:
        """The `cfdi:Addenda` node built from `datos` (procesarAddenda), checked to be one.

        `addenda_type` is one of ADDENDA_TYPES (code or seed name). The operations have no type parameter:
        the service reads the addenda from `datos` itself, so the type is checked here and is the
        caller's record of what was asked for.
        """
        _, text = check_request(addenda_type, datos, self.config.max_datos_bytes)
        answer = self._call("procesarAddenda", datos=text)
        return _checked_node(answer.xml or b"")

    def attach(self, addenda_type: str, datos: str | bytes, cfdi_xml: bytes) -> bytes:
        """`cfdi_xml` with the addenda attached (procesarAdjuntarAddenda), after the signed-part check.

        Returns the service's document byte for byte once `verify_attached` has accepted it; raises
        SignedPartChanged if the service altered anything the seal or the TimbreFiscalDigital covers.
        """
        _, text = check_request(addenda_type, datos, self.config.max_datos_bytes)
        parse_cfdi(cfdi_xml, "the CFDI", self.config.max_cfdi_bytes)
        answer = self._call("procesarAdjuntarAddenda", datos=text, xmlcfdi=cfdi_text(cfdi_xml))
        return verify_attached(cfdi_xml, answer.xml or b"")

    # -- connection pool ---------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close()

    # -- requests ----------------------------------------------------------------------------

    def _call(self, operation: str, **fields: str) -> AddendaAnswer:
        """One observed call; success is code 0 with a document, anything else raises by its code."""
        with observed(PROVIDER, operation):
            headers, body = self._envelopes.build(
                operation,
                contrato=self.config.contrato,
                usuario=self.config.usuario,
                passwd=self.config.passwd,
                **fields,
            )
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(_NotSent),
                stop=tenacity.stop_after_attempt(self.config.connect_attempts),
                wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            )
            try:
                status, answer_headers, content = retrying(self._post, headers, body)
            except _NotSent as exc:
                raise TransientError(f"Prodigia {operation}: connection failed ({exc})") from None
            answer = interpret_http_answer(status, answer_headers, content)
            if not answer.ok:
                raise refusal(answer, operation)
            log.info("prodigia %s ok id=%s", operation, answer.id)
            return answer

    def _post(self, headers: dict[str, str], body: bytes) -> tuple[int, httpx.Headers, bytes]:
        try:
            with self._pool.client().stream("POST", self.config.url, content=body, headers=headers) as response:
                content = read_capped(response.iter_bytes(), MAX_ANSWER_BYTES, "Prodigia")
                return response.status_code, response.headers, content
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _NotSent(type(exc).__name__) from None
        except httpx.TimeoutException as exc:
            raise TransientError(f"Prodigia timed out ({type(exc).__name__})") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransientError(f"Prodigia connection failed ({type(exc).__name__})") from None


def _checked_node(content: bytes) -> bytes:
    """The procesarAddenda document if it is a well-formed `cfdi:Addenda` with content."""
    root = parse_untrusted(content, "the addenda returned", AddendaRefused)
    qname = etree.QName(root)
    if qname.localname != "Addenda" or qname.namespace not in CFDI_NAMESPACES:
        raise AddendaRefused("the document returned is not a cfdi:Addenda")
    if not any(isinstance(child.tag, str) for child in root):
        raise AddendaRefused("the cfdi:Addenda returned is empty")
    return content


def from_env() -> AddendaClient:
    """The client configured by `PRODIGIA_*` settings (it is not an invoice provider of the registry)."""
    return AddendaClient(ProdigiaConfig.from_environ())
