"""HTTP and WebSocket routes under /api. Read routes need `Reader`, actions an operator (or admin).

Every operator action is committed to the audit store before the answer is sent (the answer carries
the record's id), so what an operator saw acknowledged survives a kill -9. Hold/force overrides and
controller switches are rate-limited per user (deps.enforce_rate); handing an intersection back
(`mode: auto`) never is. An audit row keeps what was asked in bounded form: at most
`AUDIT_IDS` intersection ids of a switch (and how many more), an error message cut to `AUDIT_TEXT`.
Query ids are bounded to SQL's 64-bit integers, so no number the database cannot hold reaches it.

What-if (`service.whatif`): `POST /api/whatif` (operator; it takes a token of the controller-switch rate
limit) forks the live twin and starts a race, audited as `whatif` before the 202 answer, whose audit id is
the race's id; `GET /api/whatif?race=ID` polls it (progress, then the ranked rows and queue curves), and the
race's end is audited by the system (`whatif_done`, with the ranking). Deploying a candidate is the
ordinary controller switch (city-wide: admin), through the guard; naming the race (`whatif`) puts it in
the switch's audit row, and a race that did not finish, or did not run that controller, is refused (422).

WebSocket `/api/ws`: browsers cannot set headers on a WebSocket, so the client's first message is
`{"token": "..."}` (empty when reads are open); then the server sends `{"type": "hello"}` and one
`{"type": "state"}` frame per second (`seq` and `sent_at` first, so a client can read them without
parsing the rest). Close codes: 4401 unauthenticated (a token that is not a string included; a token that
matches no one is audited as a failed login), 1008 foreign origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, WebSocket
from numpy.typing import NDArray
from starlette.websockets import WebSocketDisconnect

from citysignal.service.config import Role
from citysignal.service.context import Service
from citysignal.service.deps import (
    ControllerActor,
    OverrideActor,
    Reader,
    ServiceDep,
    Viewer,
    audit_failed_login,
    enforce_rate,
    record,
)
from citysignal.service.engine import CommandError
from citysignal.service.hub import Hub
from citysignal.service.schemas import (
    ActionResult,
    ControllerRequest,
    Health,
    IntersectionId,
    Me,
    OverrideRequest,
    WhatIfRequest,
)
from citysignal.service.security import ANONYMOUS
from citysignal.service.whatif import WhatIfRunner

WS_AUTH_TIMEOUT_S = 5.0
MAX_ID = 2**63 - 1  # the largest id a SQL BIGINT (and SQLite's INTEGER) holds
AUDIT_IDS = 20
AUDIT_TEXT = 300
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    403: {"description": "The token's role is not enough"},
}
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"description": "Unknown intersection"},
    409: {"description": "The intersection cannot take this now"},
    422: {"description": "Invalid body (or a green / controller that does not exist)"},
    413: {"description": "Body over 64 KiB"},
    429: {"description": "Too many requests of this kind; see Retry-After"},
    503: {"description": "The twin is not running"},
}
WHATIF_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    409: {"description": "A race is running, no snapshot of this episode yet, or the horizon passes its end"},
    422: {"description": "Invalid body, or a candidate the service does not offer"},
    413: {"description": "Body over 64 KiB"},
    429: {"description": "Too many requests of this kind; see Retry-After"},
    503: {"description": "The twin is not running"},
}

router = APIRouter(prefix="/api")
# Lane congestion travels as one character per observed lane: level = index in LEVELS (0 free .. 63 full).
LEVELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"


def encode_levels(fraction: NDArray[np.float64]) -> str:
    """Queue fractions (0..1) as one character each: a 2,562-lane city is 2.5 KiB per frame, not 8."""
    levels = np.clip(np.rint(np.asarray(fraction) * (len(LEVELS) - 1)), 0, len(LEVELS) - 1).astype(np.int64)
    return "".join(LEVELS[i] for i in levels.tolist())


def state_payload(service: Service) -> dict[str, Any]:
    """The live city: signal states, lane congestion, KPIs (shared by GET /api/state and the stream)."""
    engine = service.engine
    out: dict[str, Any] = {
        "type": "state",
        "run_id": service.run_id,
        "scenario": service.scenario.name,
        "running": engine.running,
        "error": engine.error,
        "speed": engine.config.speed,
        "last_event_id": service.store.last_event_id,
        "controllers": list(engine.offered),
    }
    live = engine.live()
    if live is None:
        return out
    index = {name: i for i, name in enumerate(engine.offered)}
    out.update(
        time=live.time,
        episode=live.episode,
        begin=service.scenario.begin,
        end=service.scenario.end,
        pace=round(live.pace, 2),
        capacity=round(live.capacity, 1),
        signals=list(live.shown),
        green=live.green.tolist(),
        assignment=[index[name] for name in live.assignment],
        overrides=live.overrides,
        kpi=live.kpi,
        kpi_sample=live.kpi_sample,
        lanes=encode_levels(live.queue_fraction),
        priority=live.priority,
        field=live.field,
    )
    return out


@router.get("/health", response_model=Health, tags=["service"], summary="Liveness (no token needed)")
def health(service: ServiceDep, response: Response) -> Health:
    engine = service.engine
    live = engine.live()
    status, reason = engine.health()
    if status != "ok":
        response.status_code = 503
    return Health(status=status, running=status == "ok", sim_time=live.time if live else None,
                  error=reason, store_write_errors=service.store.write_errors)  # fmt: skip


@router.get("/me", response_model=Me, tags=["service"], responses=AUTH_ERRORS, summary="Who the token belongs to")
def me(who: Viewer) -> Me:
    return Me(name=who.name, role=who.role.name)  # type: ignore[arg-type]


@router.get("/info", tags=["service"], responses=AUTH_ERRORS, summary="Scenario, controllers, settings in force")
def info(service: ServiceDep, _: Reader) -> dict[str, Any]:
    return service.info()


@router.get("/network", tags=["city"], responses=AUTH_ERRORS, summary="Map geometry (lanes, intersections)")
def network(service: ServiceDep, _: Reader) -> Response:
    return Response(service.geometry_json, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get("/state", tags=["city"], responses=AUTH_ERRORS, summary="Live state: signals, lane queues, KPIs")
def state(service: ServiceDep, _: Reader) -> dict[str, Any]:
    return state_payload(service)


@router.get("/intersections/{inter_id}", tags=["city"], responses={**AUTH_ERRORS, 404: {"description": "Unknown"}},
            summary="One intersection: phases, queues per approach, controller and why")  # fmt: skip
def intersection(inter_id: Annotated[IntersectionId, Path()], service: ServiceDep, _: Reader) -> dict[str, Any]:
    try:
        return service.engine.detail(inter_id)
    except CommandError as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.get("/events", tags=["audit"], responses=AUTH_ERRORS, summary="Audit log, newest first, over every run")
def events(
    service: ServiceDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    action: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    target: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict[str, Any]]:
    return service.store.events(limit, before_id, after_id, action, target)


@router.get("/kpis", tags=["audit"], responses=AUTH_ERRORS, summary="KPI samples (every 10 s simulated), oldest first")
def kpis(
    service: ServiceDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=5000)] = 360,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> list[dict[str, Any]]:
    return service.store.kpis(limit, after_id)


@router.post("/intersections/{inter_id}/override", response_model=ActionResult, tags=["operator"],
             responses=ACTION_ERRORS, summary="Hold / force a green, or back to automatic, via the guard")  # fmt: skip
def override(
    inter_id: Annotated[IntersectionId, Path()], body: OverrideRequest, who: OverrideActor, service: ServiceDep
) -> ActionResult:
    asked = {"mode": body.mode, "green": body.green, "reason": body.reason}
    if body.mode != "auto":  # handing an intersection back must always be possible
        enforce_rate(service, who, "override", "override", inter_id, asked)
    try:
        res = service.engine.set_override(inter_id, body.mode, body.green, who.name, body.reason)
    except CommandError as exc:
        record(service, who, "override", inter_id, "refused", {**asked, "error": exc.message[:AUDIT_TEXT]})
        raise HTTPException(exc.status, exc.message[:AUDIT_TEXT]) from None
    detail = {**asked, **{k: v for k, v in res.items() if k != "result"}}
    event_id = record(service, who, "override", inter_id, res["result"], detail)
    return ActionResult(event_id=event_id, action="override", target=inter_id, result=res["result"], detail=detail)


@router.post("/controller", response_model=ActionResult, tags=["operator"], responses=ACTION_ERRORS,
             summary="Switch the controller of some intersections (operator) or city-wide (admin)")  # fmt: skip
def switch_controller(
    body: ControllerRequest, who: ControllerActor, service: ServiceDep, request: Request
) -> ActionResult:
    ids = body.intersections
    target = "city" if ids is None else ",".join(ids)
    asked: dict[str, Any] = {"controller": body.controller, "intersections": None if ids is None else ids[:AUDIT_IDS]}
    if ids is not None and len(ids) > AUDIT_IDS:
        asked["more_intersections"] = len(ids) - AUDIT_IDS
    if body.whatif is not None:
        asked["whatif"] = body.whatif
    enforce_rate(service, who, "controller", "controller_switch", target, asked)
    if ids is None and who.role < Role.admin:
        record(service, who, "controller_switch", target, "forbidden", asked)
        raise HTTPException(403, "switching the whole city needs the admin role")
    try:
        if body.whatif is not None:
            _check_deploy(request.app.state.whatif, body.whatif, body.controller)
        res = service.engine.switch_controller(body.controller, ids, who.name)
    except CommandError as exc:
        record(service, who, "controller_switch", target, "refused", {**asked, "error": exc.message[:AUDIT_TEXT]})
        raise HTTPException(exc.status, exc.message[:AUDIT_TEXT]) from None
    detail = {**asked, **{k: v for k, v in res.items() if k != "result"}}
    event_id = record(service, who, "controller_switch", target, res["result"], detail)
    return ActionResult(event_id=event_id, action="controller_switch", target=target[:128], result=res["result"],
                        detail=detail)  # fmt: skip


def _check_deploy(runner: WhatIfRunner, race_id: int, controller: str) -> None:
    """A switch that names a what-if race deploys one of its candidates, once the race has finished."""
    race = runner.get(race_id)
    if race is None:
        raise CommandError(422, f"no what-if race {race_id} in this run")
    if race.status != "done":
        raise CommandError(422, f"what-if race {race_id} is {race.status}: nothing to deploy")
    if controller not in race.candidates:
        raise CommandError(422, f"'{controller}' did not run in what-if race {race_id}")


@router.post("/whatif", response_model=ActionResult, status_code=202, tags=["what-if"], responses=WHATIF_ERRORS,
             summary="Fork the live twin now and race candidate controllers (poll GET /whatif?race=ID)")  # fmt: skip
def start_whatif(body: WhatIfRequest, who: ControllerActor, service: ServiceDep, request: Request) -> ActionResult:
    runner: WhatIfRunner = request.app.state.whatif
    asked: dict[str, Any] = {"candidates": body.candidates, "horizon": body.horizon}
    enforce_rate(service, who, "controller", "whatif", "city", asked)
    try:
        race = runner.prepare(body.candidates, float(body.horizon))
    except CommandError as exc:
        record(service, who, "whatif", "city", "refused", {**asked, "error": exc.message[:AUDIT_TEXT]})
        raise HTTPException(exc.status, exc.message[:AUDIT_TEXT]) from None
    detail = {**asked, "live_time": race.live_time, "episode": race.episode}
    try:
        event_id = record(service, who, "whatif", "city", "started", detail)
    except BaseException:
        runner.release()
        raise
    runner.launch(race, event_id, who.name)
    return ActionResult(event_id=event_id, action="whatif", target="city", result="started",
                        detail={**detail, "race": event_id})  # fmt: skip


@router.get("/whatif", tags=["what-if"], responses=AUTH_ERRORS,
            summary="What-if races of this run, newest first: progress, then ranked rows and queue curves")  # fmt: skip
def whatif_races(
    _: Reader, request: Request, race: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> list[dict[str, Any]]:
    runner: WhatIfRunner = request.app.state.whatif
    return [r.public() for r in runner.races() if race is None or r.id == race]


@router.websocket("/ws")
async def stream(ws: WebSocket) -> None:
    service: Service = ws.app.state.service
    hub: Hub = ws.app.state.hub
    origin = ws.headers.get("origin")
    if origin is not None and origin.rstrip("/") not in service.settings.allowed_origins():
        await ws.close(code=1008, reason="origin not allowed")
        return
    await ws.accept()
    try:
        first = json.loads(await asyncio.wait_for(ws.receive_text(), WS_AUTH_TIMEOUT_S))
        token: object = first.get("token") if isinstance(first, dict) else None
    except (TimeoutError, WebSocketDisconnect, ValueError, KeyError):
        token = None
    principal = service.tokens.authenticate(token) if isinstance(token, str) and token else None
    if principal is None and token in (None, "") and service.settings.read_open:
        principal = ANONYMOUS
    if principal is None:
        if token not in (None, ""):
            audit_failed_login(service, ws, "websocket")
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code=4401, reason="missing or invalid token")
        return
    sub = hub.subscribe()

    async def send() -> None:
        await ws.send_json({"type": "hello", "user": principal.name, "role": principal.role.name,
                            "run_id": service.run_id, "period_s": hub.period_s})  # fmt: skip
        while True:
            await ws.send_text(await sub.queue.get())

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    tasks = {asyncio.ensure_future(send()), asyncio.ensure_future(receive())}
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, asyncio.CancelledError):
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        hub.unsubscribe(sub)
