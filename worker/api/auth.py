"""Who is calling, and may they: bearer keys checked against the database on every request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.access import Permission, Principal, authenticate
from worker.api.problems import ProblemError
from worker.api.state import ApiState, api_state

_bearer = HTTPBearer(auto_error=False, description="An API key made with `einvoice keys create`.")


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    state: Annotated[ApiState, Depends(api_state)],
) -> Principal:
    """No cache: a revoked key stops working on its next request."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(401, "Unauthorized", "send `Authorization: Bearer KEY`", kind="unauthorized")
    with state.store.db.connection() as conn:
        found = authenticate(conn, state.secret, credentials.credentials)
    if found is None:
        raise ProblemError(401, "Unauthorized", "the key is unknown or revoked", kind="unauthorized")
    request.state.principal = found
    return found


def requires(permission: Permission) -> object:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        # async: FastAPI runs a plain function in its thread pool, a hop each request pays for nothing.
        if not who.may(permission):
            raise ProblemError(403, "Forbidden", f"a {who.role.value} key may not {permission.value}", kind="forbidden")
        return who

    return Depends(check)
