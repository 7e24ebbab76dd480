"""Simulator of Costa Rica's Hacienda IDP and API de Recepción v1, mounted under `/hacienda`.

Paths (relative to the mount):

- `POST /idp/auth/realms/{realm}/protocol/openid-connect/token`: password and refresh_token
  grants (form-encoded, Keycloak bodies; bad credentials → 401 `invalid_grant`).
- `POST /recepcion/v1/recepcion` and `GET /recepcion/v1/recepcion/{clave}`, also under
  `/recepcion-sandbox/v1/` (both sandbox path styles in use).
- `GET|POST /_admin/config`, `POST /_admin/reset`, `GET /_admin/counters`,
  `POST /_admin/expire-tokens` (`{"refresh": true}` also ends the refresh tokens).

Configuration from the environment (`SANDBOX_HACIENDA_<FIELD>`, see `config.HaciendaSandboxConfig`):

- `PRESET`: `default` or `bench` (no processing time, no quota, no latency).
- `USERS` (`name:password,…`; default `cpj-3-101-123456@stag.comprobanteselectronicos.go.cr:sandbox`),
  `CLIENT_IDS` (`api-stag,api-prod`), `REALMS` (`rut-stag,rut`), `BLOCKED_USERS` (403 on recepción).
- `ACCESS_TOKEN_SECONDS` (300), `REFRESH_TOKEN_SECONDS` (1800), `REFUSE_TOKENS` (every bearer → 401).
- `PROCESSING_SECONDS` (2: first half `recibido`, then `procesando`, then final), `REJECT_SHARE`
  (0; the share of claves, chosen by a hash of the clave, that end `rechazado`), `REJECT_MESSAGE`,
  `STRICT_CLAVE` (true: date, type and situación checked), `STATUS_STYLE` (`hyphen`: `ind-estado`
  lower case; `camel`: `indEstado` upper case as in Anexo 3).
- `QUOTA_PER_HOUR` (100), `QUOTA_PER_DAY` (1000), `QUOTA_HOUR_SECONDS` (3600), `QUOTA_DAY_SECONDS`
  (86400): fixed windows over recepción POSTs and GETs; 0 disables a window.
- Faults: `LATENCY_MS` (0), `ERROR_SHARE` (0) with `ERROR_STATUS` (500; 499 or 5xx), `DROP_SHARE` (0,
  connection closed mid-answer), `MALFORMED_SHARE` (0, garbled answer after the work was done),
  `OUTAGE` (false, 503 everywhere), `FAULT_SCOPE` (`all`, `idp` or `recepcion`), `SEED` (fault draws).
"""

from sandbox.hacienda.app import create_app
from sandbox.hacienda.config import HaciendaSandboxConfig

__all__ = ["HaciendaSandboxConfig", "create_app"]
