"""The HTTP API (`einvoice api`): the ERP's way in, with API keys, roles and an audit trail."""

from worker.api.app import create_app

__all__ = ["create_app"]
