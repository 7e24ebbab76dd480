"""Simulator of MSeller ECF (Dominican Republic), mounted under `/mseller`.

Paths (relative to the mount), each under an environment `{entorno}` = `TesteCF`, `CerteCF`, `eCF`:

- `POST /{entorno}/customer/authentication`: `{email, password}` → `{accessToken, idToken,
  refreshToken}`; only the idToken opens the business calls.
- `POST /{entorno}/documentos-ecf` (`?validate=true` only validates), `GET
  /{entorno}/documentos-ecf?ecf=`, `POST /{entorno}/documentos-ecf/status/batch`.
- `GET|POST /_admin/config`, `POST /_admin/reset`, `GET /_admin/counters`, `POST
  /_admin/expire-tokens`.

Configuration from the environment (`SANDBOX_MSELLER_<FIELD>`, see `config.MSellerSandboxConfig`)
and the invented parts are listed in `README.md`.
"""

from sandbox.mseller.app import create_app
from sandbox.mseller.config import MSellerSandboxConfig

__all__ = ["MSellerSandboxConfig", "create_app"]
