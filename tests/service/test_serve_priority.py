"""The service with priority vehicles (`serve --emergency-per-hour`): the live state reports the preemption in
force and the vehicles calling a signal, and the audit log records each preemption when it starts and ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundled import bundled_layout
from fastapi.testclient import TestClient
from service_helpers import strict_settings, wait_for

from citysignal.control.priority import REACH_M
from citysignal.errors import UserError
from citysignal.scenarios.priority import PriorityDemand
from citysignal.service.app import create_app
from citysignal.service.context import build_service
from citysignal.twin import DEFAULT_SEED


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("priority") / "audit.db"
    service = build_service(strict_settings(f"sqlite:///{db}", read_open=True), "cologne1", "maxpressure",
                            speed=20, begin=25200, end=27000,
                            priority=PriorityDemand(emergency_per_hour=60, seed=DEFAULT_SEED))  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c


def test_the_live_state_reports_an_active_preemption(client: TestClient) -> None:
    def preempting() -> dict[str, Any] | None:
        priority = client.get("/api/state").json()["priority"]
        return priority if any(a["kind"] == "emergency" for a in priority["active"]) else None

    priority = wait_for(preempting, timeout=90, every=0.05)
    row = next(a for a in priority["active"] if a["kind"] == "emergency")
    inter = bundled_layout("cologne1").intersections[0]
    assert row["intersection"] == inter.id and row["vehicle"].startswith("cs_emergency")
    assert 0 <= row["green"] < len(inter.greens)
    assert priority["enabled"] and priority["preemptions"] >= 1
    call = next(c for c in priority["calls"] if c["vehicle"] == row["vehicle"])  # the request it answers
    assert call["kind"] == "emergency" and 0 <= call["distance"] <= REACH_M
    assert client.get("/api/info").json()["emergency_per_hour"] == 60


def test_each_preemption_is_audited_when_it_starts_and_when_it_ends(client: TestClient) -> None:
    def ended() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = client.get("/api/events?action=emergency_preemption").json()
        return events if any(e["result"] == "end" for e in events) else []

    events = wait_for(ended, timeout=90)
    starts = {e["detail"]["vehicle"]: e for e in events if e["result"] == "start"}
    ends = [e for e in events if e["result"] == "end"]
    for end in ends:
        start = starts[end["detail"]["vehicle"]]
        assert end["target"] == start["target"] and end["actor"] == "system"
        assert end["sim_time"] >= start["sim_time"] and end["detail"]["held_s"] == pytest.approx(
            end["sim_time"] - start["sim_time"], abs=0.11
        )


def test_a_window_too_short_for_priority_vehicles_is_refused_before_start(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="too short for priority vehicles"):
        build_service(strict_settings(f"sqlite:///{tmp_path / 'audit.db'}"), "cologne1", "maxpressure", begin=25200,
                      end=25500, priority=PriorityDemand(emergency_per_hour=6))  # fmt: skip
