"""FastAPI dependencies: the service of this app, the caller's identity by role, rate limits and audit.

`Reader` accepts anyone when read endpoints are open (`CITYSIGNAL_READ_OPEN`) and no token is sent;
a token that is sent must be valid (401 otherwise). `Viewer` needs a valid bearer token (401);
`OverrideActor` and `ControllerActor` need the operator role (403) and are the mutating routes' callers.

What reaches the audit log, and what bounds it: a refused action (403) costs the caller a token of that
action's rate limit (so a viewer cannot write "denied" rows without limit) and is written; a request over
the rate limit (429) and a failed login (a bearer token that matches no one, on HTTP or the WebSocket)
are written through the audit throttle, at most N rows per user or client address and window, with the
number left out in the next row. A presented token is never written anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

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


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def record(service: Service, who: Principal, action: str, target: str, result: str, detail: dict[str, Any]) -> int:
    """Commit one audit row for `who` (before the answer is sent); its id."""
    live = service.engine.live()
    ev = service.store.record(EventIn(who.name, who.role.name, action, target[:128], result, detail,
                                      sim_time=live.time if live else None))  # fmt: skip
    return int(ev["id"])


def audit_failed_login(service: Service, conn: HTTPConnection, channel: str) -> None:
    """A token that matches no one: one row per client address, through the audit throttle."""
    address = client_address(conn)
    suppressed = service.limits.refusal_audit.admit(f"login:{address}")
    if suppressed is None:
        return
    live = service.engine.live()
    service.store.record_later(EventIn(address[:64], "unknown", "login_failed", conn.url.path[:128], "refused",
                                       {"channel": channel, "suppressed": suppressed},
                                       sim_time=live.time if live else None))  # fmt: skip


def enforce_rate(service: Service, who: Principal, action_class: str, action: str, target: str,
                 detail: dict[str, Any]) -> None:  # fmt: skip
    """Take one token of `who`'s `action_class` bucket, or answer 429 (audited through the throttle)."""
    wait = service.limits.take(action_class, who.name)
    if not wait:
        return
    suppressed = service.limits.refusal_audit.admit(f"{action_class}:{who.name}")
    if suppressed is not None:
        record(service, who, action, target, "rate_limited", {**detail, "suppressed": suppressed})
    retry = math.ceil(wait)
    raise HTTPException(429, f"too many {action_class} requests: retry in {retry} s",
                        headers={"Retry-After": str(retry)})  # fmt: skip


def _authenticate(
    service: Service, conn: HTTPConnection, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    principal = service.tokens.authenticate(credentials.credentials if credentials else None)
    if principal is None:
        if credentials is not None:
            audit_failed_login(service, conn, "http")
        raise HTTPException(401, "missing or invalid bearer token", headers=UNAUTHENTICATED)
    return principal


def reader(request: Request, service: ServiceDep, credentials: Credentials) -> Principal:
    if credentials is None and service.settings.read_open:
        return ANONYMOUS
    return _authenticate(service, request, credentials)


def require(
    role: Role, action_class: str | None = None
) -> Callable[[Request, Service, HTTPAuthorizationCredentials | None], Principal]:
    """A caller with at least `role`; for a mutating route, `action_class` names the rate limit a refusal costs."""

    def dependency(request: Request, service: ServiceDep, credentials: Credentials) -> Principal:
        principal = _authenticate(service, request, credentials)
        if principal.role < role:
            if action_class is not None:
                detail = {"method": request.method, "needs": role.name}
                enforce_rate(service, principal, action_class, "denied", request.url.path, detail)
                record(service, principal, "denied", request.url.path, "forbidden", detail)
            raise HTTPException(403, f"needs the {role.name} role (you are {principal.role.name})")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(reader)]
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
OverrideActor = Annotated[Principal, Depends(require(Role.operator, "override"))]
ControllerActor = Annotated[Principal, Depends(require(Role.operator, "controller"))]
