"""Every simulator on one port, at the paths of the interface contract."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount


def build_app() -> Starlette:
    """MYSuite under /mysuite (async and sync services), Hacienda under /hacienda, Prodigia under /prodigia,
    MSeller under /mseller."""
    from sandbox.hacienda import create_app as hacienda_app
    from sandbox.mseller import create_app as mseller_app
    from sandbox.mysuite import create_app as mysuite_app
    from sandbox.prodigia import create_app as prodigia_app

    return Starlette(
        routes=[
            Mount("/mysuite", app=mysuite_app()),
            Mount("/hacienda", app=hacienda_app()),
            Mount("/prodigia", app=prodigia_app()),
            Mount("/mseller", app=mseller_app()),
        ]
    )
