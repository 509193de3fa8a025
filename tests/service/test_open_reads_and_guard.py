"""Open read endpoints, episode restarts, and the guard preempting an operator's hold (max-red bound).

A short window (3 simulated minutes at x60) so episodes restart every few seconds, and max_red = 15 s
so a held green starves the other approaches quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import auth, strict_settings, wait_for

from citysignal.service.app import create_app
from citysignal.service.context import build_service


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("open") / "audit.db"
    service = build_service(strict_settings(f"sqlite:///{db}", read_open=True, override_limit=30), "grid4x4", "fixed",
                            speed=60, begin=600, end=780, max_red=15)  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c


def events(client: TestClient, action: str) -> list[dict[str, Any]]:
    res = client.get(f"/api/events?action={action}")
    assert res.status_code == 200
    return list(res.json())


def test_open_reads_need_no_token_but_a_wrong_token_is_still_refused(client: TestClient) -> None:
    for path in ("/api/info", "/api/network", "/api/state", "/api/intersections/A0", "/api/events", "/api/kpis"):
        assert client.get(path).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get("/api/me").status_code == 401  # "who am I" needs a token even when reads are open
    assert client.post("/api/intersections/A0/override", json={"mode": "hold"}).status_code == 401
    with client.websocket_connect("/api/ws") as ws:
        ws.send_json({"token": ""})
        assert ws.receive_json()["user"] == "anonymous"
        assert ws.receive_json()["type"] == "state"


def test_episodes_restart_and_keep_the_operators_overrides(client: TestClient) -> None:
    res = client.post("/api/intersections/B2/override", json={"mode": "force", "green": 1}, headers=auth("otto"))
    assert res.status_code == 200
    wait_for(lambda: client.get("/api/state").json()["episode"] >= 1, timeout=20)
    assert events(client, "episode_restart")
    state = client.get("/api/state").json()
    assert state["overrides"]["B2"]["green"] == 1 and state["kpi"]["violations"] == 0
    client.post("/api/intersections/B2/override", json={"mode": "auto"}, headers=auth("otto"))


def test_the_guard_preempts_a_hold_that_starves_traffic_and_logs_it(client: TestClient) -> None:
    # hold every intersection, so some red approach with waiting vehicles passes max_red soon
    ids = [i["id"] for i in client.get("/api/network").json()["intersections"]]
    for inter in ids:
        res = client.post(f"/api/intersections/{inter}/override", json={"mode": "hold"}, headers=auth("otto"))
        assert res.status_code == 200, res.text
    preempted = wait_for(lambda: events(client, "guard_preempted"), timeout=30)
    first = preempted[-1]
    assert first["actor"] == "system" and first["result"] == "preempted" and "max-red" in first["detail"]["why"]
    detail = client.get(f"/api/intersections/{first['target']}").json()
    assert detail["override"] is not None  # the override stays; the guard resumes it after serving the queue
    assert client.get("/api/state").json()["kpi"]["violations"] == 0
