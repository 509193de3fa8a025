"""Every API route against a real service (grid4x4 twin at x20) through FastAPI's TestClient.

Roles: no token or a wrong one -> 401, a role too low -> 403 (and the refused action is audited);
bad bodies -> 422; overrides and switches pass through the safety guard and are in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, auth, strict_settings, wait_for
from starlette.websockets import WebSocketDisconnect

from citysignal.service.app import create_app
from citysignal.service.context import build_service
from citysignal.service.routes import LEVELS, encode_levels

READ_ROUTES = ["/api/me", "/api/info", "/api/network", "/api/state", "/api/intersections/A0", "/api/events",
               "/api/kpis"]  # fmt: skip
SERVED_ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "audit.db"


@pytest.fixture(scope="module")
def client(db_path: Path) -> Iterator[TestClient]:
    service = build_service(strict_settings(f"sqlite:///{db_path}"), "grid4x4", "maxpressure",
                            speed=20, begin=0, end=1800)  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c


def get(client: TestClient, path: str, who: str = "vera") -> Any:
    res = client.get(path, headers=auth(who))
    assert res.status_code == 200, res.text
    return res.json()


def events(client: TestClient, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return list(get(client, f"/api/events?limit=1000&{params}"))


def test_health_needs_no_token(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["running"] is True and body["error"] is None


@pytest.mark.parametrize("path", READ_ROUTES)
def test_read_routes_refuse_missing_and_wrong_tokens(client: TestClient, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get(path, headers={"Authorization": f"Basic {TOKEN['vera']}"}).status_code == 401


def test_me_and_info(client: TestClient) -> None:
    assert get(client, "/api/me", "otto") == {"name": "otto", "role": "operator"}
    info = get(client, "/api/info")
    assert info["scenario"] == "grid4x4" and info["intersections"] == 16
    assert "actuated" not in info["controllers"] and {"fixed", "maxpressure", "sotl"} <= set(info["controllers"])
    assert info["store"] == {"backend": "sqlite", "journal_mode": "wal"}


def test_network_geometry_has_every_lane_and_intersection(client: TestClient) -> None:
    geo = get(client, "/api/network")
    assert len(geo["lanes"]) == 240 and len(geo["intersections"]) == 16
    x0, y0, x1, y1 = geo["bounds"]
    for lane in geo["lanes"]:
        xs, ys = lane["s"][0::2], lane["s"][1::2]
        assert len(xs) >= 2 and all(x0 - 1 <= x <= x1 + 1 for x in xs) and all(y0 - 1 <= y <= y1 + 1 for y in ys)
    observed = {lane["i"] for lane in geo["lanes"]}
    assert observed == set(range(len(geo["layout_lanes"])))  # every observed lane is drawn once
    a0 = next(i for i in geo["intersections"] if i["id"] == "A0")
    assert len(a0["greens"]) == 8 and a0["stops"]
    assert x0 <= a0["x"] <= x1 and y0 <= a0["y"] <= y1


def test_state_shows_signals_queues_and_kpis(client: TestClient) -> None:
    first = get(client, "/api/state")
    assert len(first["signals"]) == 16 and len(first["lanes"]) == 240
    assert set(first["lanes"]) <= set(LEVELS)
    assert set(first["kpi"]) >= {"vehicles", "halting", "mean_speed", "violations", "preemptions"}
    later = wait_for(lambda: (s := get(client, "/api/state"))["time"] > first["time"] and s)
    assert later["kpi"]["violations"] == 0 and later["running"]


def test_lane_levels_encode_queue_fractions() -> None:
    assert encode_levels(np.array([0.0, 0.004, 0.5, 1.0, 3.0, -1.0])) == "00W__0"


def test_intersection_detail_explains_the_controller(client: TestClient) -> None:
    d = get(client, "/api/intersections/B1")
    assert d["id"] == "B1" and d["controller"] == "maxpressure"
    assert d["explain"].startswith("max-pressure:")
    assert len(d["greens"]) == 8 and all(len(g["state"]) == len(d["shown"]) for g in d["greens"])
    assert len(d["approaches"]) == 4 and all(a["halting"] <= a["vehicles"] for a in d["approaches"])
    assert client.get("/api/intersections/nope", headers=auth("vera")).status_code == 404


def test_events_and_kpis_and_their_query_validation(client: TestClient) -> None:
    assert any(e["action"] == "service_start" for e in events(client))
    samples = wait_for(lambda: get(client, "/api/kpis"))
    assert samples[0]["controller"] == "maxpressure" and samples[-1]["violations"] == 0
    huge = "99999999999999999999999"  # beyond SQL's 64-bit integers: refused before the database sees it
    for bad in ("limit=0", "limit=5000", "before_id=0", "action=DROP%20TABLE", "after_id=-1", f"before_id={huge}",
                f"after_id={huge}", f"before_id={2**63}"):  # fmt: skip
        assert client.get(f"/api/events?{bad}", headers=auth("vera")).status_code == 422, bad
    for bad in ("limit=0", f"after_id={huge}", f"after_id={2**63}"):
        assert client.get(f"/api/kpis?{bad}", headers=auth("vera")).status_code == 422, bad
    assert client.get(f"/api/events?before_id={2**63 - 1}", headers=auth("vera")).status_code == 200
    assert client.get(f"/api/kpis?after_id={2**63 - 1}", headers=auth("vera")).json() == []


def test_override_needs_operator_and_a_refusal_is_audited(client: TestClient) -> None:
    body = {"mode": "hold"}
    assert client.post("/api/intersections/A0/override", json=body).status_code == 401
    res = client.post("/api/intersections/A0/override", json=body, headers=auth("vera"))
    assert res.status_code == 403 and "operator" in res.json()["detail"]
    denied = events(client, action="denied")
    assert denied and denied[0]["actor"] == "vera" and denied[0]["target"] == "/api/intersections/A0/override"
    assert get(client, "/api/intersections/A0")["override"] is None


@pytest.mark.parametrize(
    "body",
    [{}, {"mode": "jump"}, {"mode": "force"}, {"mode": "hold", "green": 1}, {"mode": "force", "green": -1},
     {"mode": "force", "green": "two"}, {"mode": "auto", "extra": 1}, {"mode": "hold", "reason": "x" * 201},
     ["hold"], "hold"],
)  # fmt: skip
def test_override_rejects_bad_bodies(client: TestClient, body: object) -> None:
    res = client.post("/api/intersections/A0/override", json=body, headers=auth("otto"))
    assert res.status_code == 422, res.text


def test_override_rejects_a_green_the_intersection_does_not_have(client: TestClient) -> None:
    res = client.post("/api/intersections/A0/override", json={"mode": "force", "green": 8}, headers=auth("otto"))
    assert res.status_code == 422 and "greens 0..7" in res.json()["detail"]
    assert events(client, action="override", target="A0")[0]["result"] == "refused"
    res = client.post("/api/intersections/Z9/override", json={"mode": "hold"}, headers=auth("otto"))
    assert res.status_code == 404


def test_force_hold_auto_go_through_the_guard_and_the_audit_log(client: TestClient) -> None:
    now = get(client, "/api/intersections/C2")
    want = (now["green"] + 3) % len(now["greens"]) if now["green"] >= 0 else 0
    res = client.post("/api/intersections/C2/override", json={"mode": "force", "green": want, "reason": "incident"},
                      headers=auth("otto"))  # fmt: skip
    assert res.status_code == 200, res.text
    ack = res.json()
    assert ack["result"] in ("applied", "deferred") and ack["detail"]["green"] == want
    logged = {e["id"]: e for e in events(client, action="override", target="C2")}[ack["event_id"]]
    assert logged["actor"] == "otto" and logged["role"] == "operator" and logged["detail"]["reason"] == "incident"
    # the guard carries it out: after min green and a yellow/all-red transition, the forced green shows
    shown = wait_for(lambda: (d := get(client, "/api/intersections/C2"))["green"] == want and d)
    assert shown["override"]["mode"] == "force" and shown["explain"].startswith("operator override by otto")
    assert get(client, "/api/state")["overrides"]["C2"]["green"] == want

    held = client.post("/api/intersections/C2/override", json={"mode": "hold"}, headers=auth("otto")).json()
    assert held["detail"]["green"] == want and held["result"] == "applied"
    back = client.post("/api/intersections/C2/override", json={"mode": "auto"}, headers=auth("otto")).json()
    assert back["result"] == "applied" and back["detail"]["previous"]["mode"] == "hold"
    assert get(client, "/api/intersections/C2")["override"] is None
    assert get(client, "/api/state")["kpi"]["violations"] == 0


def test_controller_switch_per_intersection_and_city_wide(client: TestClient) -> None:
    res = client.post("/api/controller", json={"controller": "sotl", "intersections": ["D3"]}, headers=auth("otto"))
    assert res.status_code == 200 and res.json()["detail"]["before"] == {"maxpressure": 1}
    d3 = get(client, "/api/intersections/D3")
    assert d3["controller"] == "sotl" and d3["explain"].startswith("SOTL:")
    assert get(client, "/api/intersections/D2")["controller"] == "maxpressure"
    assert events(client, action="controller_switch")[0]["actor"] == "otto"

    city = {"controller": "fixed"}
    assert client.post("/api/controller", json=city, headers=auth("vera")).status_code == 403
    res = client.post("/api/controller", json=city, headers=auth("otto"))
    assert res.status_code == 403 and "admin" in res.json()["detail"]
    assert events(client, action="controller_switch")[0]["result"] == "forbidden"
    res = client.post("/api/controller", json=city, headers=auth("ada"))
    assert res.status_code == 200 and res.json()["detail"]["intersections"] == 16
    def running_controllers() -> set[str]:
        state = get(client, "/api/state")
        return {state["controllers"][i] for i in state["assignment"]}

    wait_for(lambda: running_controllers() == {"fixed"})
    assert get(client, "/api/intersections/D3")["explain"].startswith("fixed:")
    client.post("/api/controller", json={"controller": "maxpressure"}, headers=auth("ada"))


@pytest.mark.parametrize(
    ("body", "status"),
    [({"controller": "actuated"}, 422), ({"controller": "nosuch"}, 422), ({"controller": "Fixed"}, 422),
     ({"controller": "fixed", "intersections": []}, 422), ({"controller": "fixed", "intersections": [""]}, 422),
     ({"controller": "fixed", "intersections": ["A0"], "x": 1}, 422), ({}, 422),
     ({"controller": "fixed", "intersections": ["A0", "nope"]}, 404)],
)  # fmt: skip
def test_controller_switch_rejects_bad_requests(client: TestClient, body: dict[str, Any], status: int) -> None:
    assert client.post("/api/controller", json=body, headers=auth("ada")).status_code == status


def test_overrides_are_rate_limited_per_user_but_releasing_never_is(client: TestClient) -> None:
    hold, release = {"mode": "hold"}, {"mode": "auto"}
    codes = [client.post("/api/intersections/A3/override", json=hold, headers=auth("burst")).status_code
             for _ in range(9)]  # fmt: skip
    assert codes == [200] * 8 + [429]  # a burst of 8 (strict_settings), then 8 per minute
    res = client.post("/api/intersections/A3/override", json={"mode": "force", "green": 0}, headers=auth("burst"))
    assert res.status_code == 429 and 0 < int(res.headers["retry-after"]) <= 8
    assert events(client, action="override", target="A3")[0]["result"] == "rate_limited"
    # handing the intersection back is never limited, however empty the bucket
    for _ in range(12):
        assert client.post("/api/intersections/A3/override", json=release, headers=auth("burst")).status_code == 200
    # another operator is not throttled by burst's requests
    assert client.post("/api/intersections/A3/override", json=hold, headers=auth("otto")).status_code == 200
    assert client.post("/api/intersections/A3/override", json=release, headers=auth("otto")).status_code == 200


def test_cors_allows_only_the_served_origin(client: TestClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = client.options("/api/state", headers={"Origin": SERVED_ORIGIN, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == SERVED_ORIGIN
    evil = client.options("/api/state", headers={"Origin": "http://evil.example", **preflight})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    simple = client.get("/api/state", headers={"Origin": "http://evil.example", **auth("vera")})
    assert "access-control-allow-origin" not in simple.headers


def test_websocket_streams_state_frames_at_1_hz(client: TestClient) -> None:
    with client.websocket_connect("/api/ws") as ws:
        ws.send_json({"token": TOKEN["vera"]})
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["user"] == "vera" and hello["period_s"] == 1.0
        frames = [ws.receive_json() for _ in range(3)]
    assert all(f["type"] == "state" and len(f["signals"]) == 16 and len(f["lanes"]) == 240 for f in frames)
    assert [f["seq"] - frames[0]["seq"] for f in frames] == [0, 1, 2]
    assert frames[0]["time"] < frames[1]["time"] < frames[2]["time"]
    gaps = [b["sent_at"] - a["sent_at"] for a, b in pairwise(frames)]
    assert all(0.5 < g < 1.5 for g in gaps), gaps


@pytest.mark.parametrize(
    "first",
    [{"token": "wrong-token-0123456789"}, {"token": ""}, {"nothing": 1}, {"token": 123}, {"token": ["x"]},
     {"token": None}, {"token": {"token": "x"}}, ["token"], "token"],
)  # fmt: skip
def test_websocket_refuses_without_a_valid_token(client: TestClient, first: dict[str, Any]) -> None:
    with client.websocket_connect("/api/ws") as ws:
        ws.send_json(first)
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 4401


def test_websocket_refuses_a_foreign_origin(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(
        "/api/ws", headers={"Origin": "http://evil.example"}
    ):
        pass
    assert info.value.code == 1008


def test_dashboard_is_served_with_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    for asset in ("/static/app.js", "/static/style.css"):
        res = client.get(asset)
        assert res.status_code == 200 and "//cdn" not in res.text and "https://" not in res.text


def test_openapi_documents_every_route_and_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert set(spec["paths"]) >= {"/api/health", "/api/me", "/api/info", "/api/network", "/api/state",
                                  "/api/intersections/{inter_id}", "/api/events", "/api/kpis",
                                  "/api/intersections/{inter_id}/override", "/api/controller"}  # fmt: skip
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    post = spec["paths"]["/api/intersections/{inter_id}/override"]["post"]
    assert {"401", "403", "422", "429"} <= set(post["responses"])
    assert client.get("/docs").status_code == 404  # FastAPI's own pages would load scripts from a CDN
    assert client.get("/api/docs").status_code == 200  # ours is served from here (test_api_docs.py)
