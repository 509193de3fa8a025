"""The service under a hostile or careless client (a real grid4x4 twin through FastAPI's TestClient).

Small limits make the bounds visible: 3 overrides and 3 controller switches per user (burst), and at
most 3 refusal audit rows per user or client address in any 3 s. What must hold: the audit log cannot be
grown without limit (rate limits on every mutating route, bounded rows, throttled failed logins), bodies
over 64 KiB are refused before anything else, a 422 never echoes what was sent, and releasing an
intersection is never limited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, auth, strict_settings, wait_for
from starlette.websockets import WebSocketDisconnect

from citysignal.service.app import MAX_BODY_BYTES, create_app
from citysignal.service.context import build_service

LIMIT = 3
AUDIT_WINDOW_S = 3.0
MARKER = "MARKER-7f3a"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "audit.db"


@pytest.fixture(scope="module")
def client(db_path: Path) -> Iterator[TestClient]:
    settings = replace(strict_settings(f"sqlite:///{db_path}", override_limit=LIMIT), controller_limit=LIMIT,
                       refusal_audit_limit=LIMIT, refusal_audit_window_s=AUDIT_WINDOW_S)  # fmt: skip
    service = build_service(settings, "grid4x4", "maxpressure", speed=20, begin=0, end=1800)
    with TestClient(create_app(service)) as c:
        yield c


def events(client: TestClient, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    res = client.get(f"/api/events?limit=1000&{params}", headers=auth("vera"))
    assert res.status_code == 200, res.text
    return list(res.json())


def last_id(client: TestClient) -> int:
    return max((e["id"] for e in events(client)), default=0)


def database_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def test_bodies_over_64_kib_are_refused_before_anything_else(client: TestClient) -> None:
    before = last_id(client)
    big = {"controller": "fixed", "intersections": ["A0"] * 20000}  # 120 KB, declared in Content-Length
    res = client.post("/api/controller", json=big, headers=auth("ada"))
    assert res.status_code == 413
    chunk = b'{"mode": "hold", "reason": "' + b"x" * 8192
    request = client.build_request("POST", "/api/intersections/A0/override", content=iter([chunk] * 10),
                                   headers={**auth("otto"), "Content-Type": "application/json"})  # fmt: skip
    assert "content-length" not in request.headers  # streamed (chunked): only the bytes read tell
    assert client.send(request).status_code == 413
    # just under the limit it is read and validated (the reason is too long for the model)
    near = {"mode": "hold", "reason": "x" * (MAX_BODY_BYTES - 100)}
    assert client.post("/api/intersections/A0/override", json=near, headers=auth("otto")).status_code == 422
    assert last_id(client) == before  # nothing was written for any of them


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/intersections/A0/override", {"mode": MARKER}),
     ("/api/intersections/A0/override", {"mode": "hold", "reason": MARKER * 40}),
     ("/api/intersections/A0/override", {"mode": "force", "green": MARKER}),
     ("/api/intersections/A0/override", {"mode": "hold", "note": MARKER}),
     ("/api/intersections/A0/override", f'{{"mode": "hold", "reason": "{MARKER}"'),
     ("/api/controller", {"controller": MARKER}),
     ("/api/controller", {"controller": "fixed", "intersections": [MARKER * 12] * 400}),  # ids over 128 chars
     ("/api/controller", {"controller": "fixed", "intersections": [""] * 5000}),
     ("/api/events?before_id=" + MARKER, None)],
)  # fmt: skip
def test_a_422_never_echoes_what_was_sent(client: TestClient, path: str, body: object) -> None:
    if body is None:
        res = client.get(path, headers=auth("vera"))
    elif isinstance(body, str):
        res = client.post(path, content=body, headers={**auth("otto"), "Content-Type": "application/json"})
    else:
        res = client.post(path, json=body, headers=auth("otto"))
    assert res.status_code == 422, res.text
    assert MARKER not in res.text and len(res.text) < 4000
    errors = res.json()["detail"]
    assert 1 <= len(errors) <= 20
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}  # no `input`, no `ctx`
        assert error["loc"] and error["msg"]


def test_a_viewer_cannot_flood_the_audit_log_with_denied_rows(client: TestClient) -> None:
    before = last_id(client)
    codes = [client.post("/api/intersections/B2/override", json={"mode": "hold"}, headers=auth("vera")).status_code
             for _ in range(30)]  # fmt: skip
    assert codes == [403] * LIMIT + [429] * (30 - LIMIT)
    written = [e for e in events(client, after_id=str(before)) if e["actor"] == "vera"]
    assert [e["result"] for e in written].count("forbidden") == LIMIT
    assert [e["result"] for e in written].count("rate_limited") <= LIMIT
    assert len(written) <= 2 * LIMIT


def test_an_operator_cannot_grow_the_audit_database_without_limit(client: TestClient, db_path: Path) -> None:
    """The report: ten switches of 10,000 ids added 13 MB in 0.3 s. Now: a few small rows."""
    before, size = last_id(client), database_bytes(db_path)
    flood = {"controller": "fixed", "intersections": [f"Z{i % 10}" for i in range(10000)]}  # 50 KB, all unknown
    codes = [client.post("/api/controller", json=flood, headers=auth("otto")).status_code for _ in range(10)]
    assert codes == [404] * LIMIT + [429] * (10 - LIMIT)
    written = [e for e in events(client, after_id=str(before)) if e["actor"] == "otto"]
    assert len(written) <= 2 * LIMIT
    for row in written:
        assert len(json.dumps(row["detail"])) < 1000
        assert len(row["detail"]["intersections"]) == 20 and row["detail"]["more_intersections"] == 9980
    assert database_bytes(db_path) - size < 1_000_000


def test_every_action_class_has_its_own_bucket_and_releasing_is_free(client: TestClient) -> None:
    one = {"controller": "sotl", "intersections": ["C1"]}
    codes = [client.post("/api/controller", json=one, headers=auth("ada")).status_code for _ in range(LIMIT + 1)]
    assert codes == [200] * LIMIT + [429]
    res = client.post("/api/controller", json=one, headers=auth("ada"))
    assert res.status_code == 429 and int(res.headers["retry-after"]) >= 1
    # overrides are another class; the same admin still has those
    hold = [client.post("/api/intersections/C1/override", json={"mode": "hold"}, headers=auth("ada")).status_code
            for _ in range(LIMIT + 1)]  # fmt: skip
    assert hold == [200] * LIMIT + [429]
    for _ in range(3 * LIMIT):
        res = client.post("/api/intersections/C1/override", json={"mode": "auto"}, headers=auth("ada"))
        assert res.status_code == 200, res.text


def test_failed_logins_are_audited_through_a_throttle(client: TestClient) -> None:
    before = last_id(client)
    start = time.monotonic()
    wrong = [f"{MARKER}-wrong-token-{i}" for i in range(10)]
    for token in wrong:
        assert client.get("/api/state", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/state").status_code == 401  # no token at all is not a login attempt
    assert time.monotonic() - start < AUDIT_WINDOW_S  # (the ten fit in one window)
    def failed_logins() -> list[dict[str, Any]]:
        return events(client, action="login_failed", after_id=str(before))

    wait_for(lambda: len(failed_logins()) >= LIMIT)
    time.sleep(max(0.0, AUDIT_WINDOW_S - (time.monotonic() - start)) + 0.2)
    # a new window: the next failed login (on the WebSocket this time) is written with the count left out
    with client.websocket_connect("/api/ws") as ws:
        ws.send_json({"token": f"{MARKER}-ws"})
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 4401
    failed = wait_for(lambda: len(rows := failed_logins()) > LIMIT and rows)
    assert len(failed) == LIMIT + 1
    newest = failed[0]
    assert newest["detail"] == {"channel": "websocket", "suppressed": 10 - LIMIT}
    assert newest["actor"] == "testclient" and newest["target"] == "/api/ws" and newest["result"] == "refused"
    assert {e["detail"]["channel"] for e in failed[1:]} == {"http"}
    assert MARKER not in json.dumps(events(client))  # a presented token is never stored


def test_valid_tokens_still_work_after_the_flood(client: TestClient) -> None:
    assert client.get("/api/me", headers=auth("vera")).json() == {"name": "vera", "role": "viewer"}
    with client.websocket_connect("/api/ws") as ws:
        ws.send_json({"token": TOKEN["otto"]})
        assert ws.receive_json()["type"] == "hello"
