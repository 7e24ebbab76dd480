"""MSeller ECF (Dominican Republic): the e-CF as JSON, signed and sent to the DGII by MSeller.

The ERP payload is the e-CF JSON with root `ECF`; its e-NCF is the request id. See
`providers.mseller.settings` for the environment variables, `budget` for the monthly plan count,
`samples` for test documents.
"""

from providers.mseller.budget import AccountPausedError, InProcessBudget, MonthlyBudget
from providers.mseller.client import MSellerClient, from_env
from providers.mseller.settings import PLANS, MSellerSettings

__all__ = [
    "PLANS",
    "AccountPausedError",
    "InProcessBudget",
    "MSellerClient",
    "MSellerSettings",
    "MonthlyBudget",
    "from_env",
]
