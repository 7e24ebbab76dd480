"""MYSuite (Mexico) FactWSFront client: submit, verify, retrieve and download, over SOAP with zeep.

`from_env()` is the factory the provider registry calls.
"""

from providers.mysuite.client import LinkExpired, MySuiteClient, from_env
from providers.mysuite.config import MySuiteConfig

__all__ = ["LinkExpired", "MySuiteClient", "MySuiteConfig", "from_env"]
