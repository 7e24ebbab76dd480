"""Costa Rica's Ministerio de Hacienda (API de Recepción v1 with a Keycloak IDP).

The ERP payload is the signed comprobante XML; its clave is the request id. See
`providers.hacienda.settings` for the environment variables, `samples` for test documents.
"""

from providers.hacienda.client import HaciendaClient, from_env
from providers.hacienda.settings import HaciendaSettings

__all__ = ["HaciendaClient", "HaciendaSettings", "from_env"]
