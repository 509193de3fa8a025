"""What-if in the service, against a real twin (grid4x4 at x20) through FastAPI's TestClient.

An operator forks the live twin and races two controllers; both start from the fork's vehicles, the
rows are the bench rows over the horizon, best first, the live twin keeps running meanwhile, the request
and the result are audited, and an admin deploys the winner through the ordinary controller switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient
from service_helpers import auth, strict_settings, wait_for

from citysignal.bench.metrics import METRIC_KEYS
from citysignal.service.app import create_app
from citysignal.service.context import build_service
from citysignal.service.whatif import NICE

HORIZON = 120


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("whatif") / "audit.db"
    service = build_service(strict_settings(f"sqlite:///{db}"), "grid4x4", "maxpressure", speed=20, begin=0,
                            end=1800)  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c


def get(client: TestClient, path: str, who: str = "vera") -> Any:
    res = client.get(path, headers=auth(who))
    assert res.status_code == 200, res.text
    return res.json()


def events(client: TestClient, action: str) -> list[dict[str, Any]]:
    return list(get(client, f"/api/events?limit=1000&action={action}"))


def finished(client: TestClient, race_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        races = get(client, f"/api/whatif?race={race_id}")
        assert len(races) == 1 and races[0]["id"] == race_id
        return races[0] if races[0]["status"] not in ("forking", "running") else None

    return wait_for(done, timeout=180, every=0.5)


def test_a_race_forks_the_live_twin_and_an_admin_deploys_the_winner(client: TestClient) -> None:
    before = get(client, "/api/state")
    res = client.post("/api/whatif", json={"candidates": ["fixed", "maxpressure"], "horizon": HORIZON},
                      headers=auth("otto"))  # fmt: skip
    assert res.status_code == 202, res.text
    started = res.json()
    race_id = started["event_id"]
    assert started["result"] == "started" and started["detail"]["race"] == race_id
    asked = next(e for e in events(client, "whatif") if e["id"] == race_id)
    assert asked["actor"] == "otto" and asked["detail"]["candidates"] == ["fixed", "maxpressure"]

    busy = client.post("/api/whatif", json={"candidates": ["fixed"], "horizon": 60}, headers=auth("otto"))
    assert busy.status_code == 409 and "running" in busy.json()["detail"]  # one race at a time

    race = finished(client, race_id)
    assert race["status"] == "done", race["error"]
    assert race["at"] >= race["live_time"] >= before["time"]  # forked at or after the request
    assert race["vehicles"] > 0 and race["same_start"] is True  # both candidates started from the fork's vehicles
    rows = race["rows"]
    assert sorted(r["candidate"] for r in rows) == ["fixed", "maxpressure"] and race["winner"] == rows[0]["candidate"]
    assert rows[0]["resco_delay"] < rows[1]["resco_delay"]  # best first, and the candidates did differ
    for row in rows:
        assert set(METRIC_KEYS) <= set(row) and row["at"] == race["at"] and row["horizon"] == HORIZON
        assert row["safety_violations"] == 0 and row["arrived"] > 0
        assert 0 < row["wall_s"] <= row["race_wall_s"] == race["race_wall_s"]
        curve = race["curves"][row["candidate"]]
        assert curve["t"][0] == race["at"] and race["at"] + HORIZON - 10 <= curve["t"][-1] < race["at"] + HORIZON
        assert len(curve["queue"]) == len(curve["t"])
    assert race["progress"] == {"fixed": 1.0, "maxpressure": 1.0} and race["fraction"] == 1.0
    assert get(client, "/api/state")["time"] > race["at"]  # the live twin ran on meanwhile

    done = wait_for(lambda: [e for e in events(client, "whatif_done") if e["detail"]["race"] == race_id])
    assert done[0]["result"] == "done" and done[0]["detail"]["winner"] == race["winner"]
    assert done[0]["detail"]["by"] == "otto" and set(done[0]["detail"]["ranking"]) == {"fixed", "maxpressure"}

    winner = race["winner"]
    loser = rows[1]["candidate"]
    city = {"controller": winner, "whatif": race_id}
    assert client.post("/api/controller", json=city, headers=auth("otto")).status_code == 403  # city-wide: admin
    assert client.post("/api/controller", json={"controller": "sotl", "whatif": race_id},
                       headers=auth("ada")).status_code == 422  # fmt: skip
    assert client.post("/api/controller", json={"controller": winner, "whatif": race_id + 1000},
                       headers=auth("ada")).status_code == 422  # fmt: skip
    client.post("/api/controller", json={"controller": loser}, headers=auth("ada"))
    deployed = client.post("/api/controller", json=city, headers=auth("ada"))
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["detail"]["whatif"] == race_id and deployed.json()["detail"]["controller"] == winner
    switch = next(e for e in events(client, "controller_switch") if e["id"] == deployed.json()["event_id"])
    assert switch["actor"] == "ada" and switch["result"] == "applied" and switch["detail"]["whatif"] == race_id
    state = wait_for(lambda: (s := get(client, "/api/state")) and {s["controllers"][i] for i in s["assignment"]}
                     == {winner} and s)  # fmt: skip
    assert state["kpi"]["violations"] == 0


@pytest.mark.parametrize(
    ("body", "who", "status"),
    [
        ({"candidates": ["fixed"], "horizon": 120}, "vera", 403),
        ({"candidates": ["fixed", "actuated"], "horizon": 120}, "otto", 422),  # SUMO's own program: not offered
        ({"candidates": ["fixed", "genius"], "horizon": 120}, "otto", 422),
        ({"candidates": ["fixed", "fixed"], "horizon": 120}, "otto", 422),
        ({"candidates": [], "horizon": 120}, "otto", 422),
        ({"candidates": ["fixed"], "horizon": 30}, "otto", 422),
        ({"candidates": ["fixed"], "horizon": 3600}, "otto", 409),  # past the episode's end (1800 s)
        ({"candidates": ["fixed"], "horizon": 120, "seed": 1}, "otto", 422),
    ],
)
def test_bad_what_if_requests_are_refused(client: TestClient, body: dict[str, Any], who: str, status: int) -> None:
    res = client.post("/api/whatif", json=body, headers=auth(who))
    assert res.status_code == status, res.text
    assert client.post("/api/whatif", json=body).status_code == 401


def test_refusals_after_validation_are_audited(client: TestClient) -> None:
    res = client.post("/api/whatif", json={"candidates": ["fixed", "genius"], "horizon": 60}, headers=auth("otto"))
    assert res.status_code == 422
    refused = [e for e in events(client, "whatif") if e["result"] == "refused"]
    assert refused and refused[0]["actor"] == "otto" and "genius" in refused[0]["detail"]["error"]


def test_races_are_listed_newest_first_and_the_query_is_checked(client: TestClient) -> None:
    races = get(client, "/api/whatif")
    assert [r["id"] for r in races] == sorted((r["id"] for r in races), reverse=True)
    assert get(client, "/api/whatif?race=999999") == []
    assert client.get("/api/whatif?race=0", headers=auth("vera")).status_code == 422
    assert client.get("/api/whatif").status_code == 401


def test_openapi_documents_the_what_if_routes(client: TestClient) -> None:
    spec = get(client, "/api/openapi.json")
    post = spec["paths"]["/api/whatif"]["post"]
    assert {"202", "401", "403", "409", "422", "429"} <= set(post["responses"])
    assert "get" in spec["paths"]["/api/whatif"]


def test_candidates_run_niced_and_a_dead_one_fails_the_race_with_the_reason(client: TestClient) -> None:
    """The race runs off the control loop, behind the live twin in the CPU queue; when a candidate's
    process dies the race says so, the slot is free again and the end is audited."""
    wait_for(lambda: get(client, "/api/state")["time"] < 800, timeout=120)  # room for a long horizon
    left = 1800 - get(client, "/api/state")["time"]
    res = client.post("/api/whatif", json={"candidates": ["fixed", "maxpressure"], "horizon": int(left - 300)},
                      headers=auth("otto"))  # fmt: skip
    assert res.status_code == 202, res.text
    race_id = res.json()["event_id"]
    base = psutil.Process().nice()  # this test's own niceness (pytest may run niced): the live twin has it too
    if base >= 19:
        pytest.skip("pytest runs at the lowest priority: the candidates cannot be niced below the twin")
    niced = wait_for(lambda: [p for p in psutil.Process().children() if p.nice() > base], timeout=30, every=0.05)
    assert {p.nice() for p in psutil.Process().children()} == {base, min(base + NICE, 19)}  # the twin keeps priority
    niced[0].kill()
    race = finished(client, race_id)
    assert race["status"] == "failed" and "its process ended" in race["error"] and race["rows"] == []
    done = wait_for(lambda: [e for e in events(client, "whatif_done") if e["detail"]["race"] == race_id])
    assert done[0]["result"] == "failed" and "its process ended" in done[0]["detail"]["error"]
    wait_for(lambda: not [p for p in psutil.Process().children() if p.nice() > base])  # the other one ended too
    again = client.post("/api/whatif", json={"candidates": ["fixed"], "horizon": 60}, headers=auth("otto"))
    assert again.status_code == 202, again.text  # the slot is free
    assert finished(client, again.json()["event_id"])["status"] == "done"
