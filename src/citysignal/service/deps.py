"""FastAPI dependencies: the service of this app, and the caller's identity by role.

`Reader` accepts anyone when read endpoints are open (`CITYSIGNAL_READ_OPEN`) and no token is sent;
a token that is sent must be valid (401 otherwise). `Viewer`, `Operator` and `Admin` need a valid
bearer token (401) with at least that role (403). A refused operator action (403) is written to the
audit log: who tried what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from citysignal.service.config import Role
from citysignal.service.context import Service
from citysignal.service.security import ANONYMOUS, Principal
from citysignal.service.store import EventIn

bearer = HTTPBearer(auto_error=False, description="A token from CITYSIGNAL_TOKENS (name:role:token).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def get_service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]


def _authenticate(service: Service, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    principal = service.tokens.authenticate(credentials.credentials if credentials else None)
    if principal is None:
        raise HTTPException(401, "missing or invalid bearer token", headers=UNAUTHENTICATED)
    return principal


def reader(service: ServiceDep, credentials: Credentials) -> Principal:
    if credentials is None and service.settings.read_open:
        return ANONYMOUS
    return _authenticate(service, credentials)


def require(role: Role) -> Callable[[Request, Service, HTTPAuthorizationCredentials | None], Principal]:
    def dependency(request: Request, service: ServiceDep, credentials: Credentials) -> Principal:
        principal = _authenticate(service, credentials)
        if principal.role < role:
            if request.method != "GET":
                live = service.engine.live()
                service.store.record(EventIn(
                    principal.name, principal.role.name, "denied", request.url.path, "forbidden",
                    {"method": request.method, "needs": role.name}, sim_time=live.time if live else None,
                ))  # fmt: skip
            raise HTTPException(403, f"needs the {role.name} role (you are {principal.role.name})")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(reader)]
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
