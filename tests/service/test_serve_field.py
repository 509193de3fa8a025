"""The service driving simulated field controllers (`serve --field`): the live state names the field and the
intersections in comm loss, the audit log records each comm loss and its end, and control resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from field_sim import field_sim
from service_helpers import strict_settings, wait_for

from citysignal.errors import UserError
from citysignal.scenarios import resolve
from citysignal.scenarios.priority import PriorityDemand
from citysignal.service.app import create_app
from citysignal.service.context import build_service


def test_comm_loss_is_published_and_audited_and_control_resumes(tmp_path: Path) -> None:
    sc = resolve("cologne1")
    cut, back, end = sc.begin + 60, sc.begin + 90, sc.begin + 200
    outage = ("--outage", f"{cut:g}-{back:g}", "--step-timeout", "0.2")
    with field_sim("cologne1", end, tmp_path / "field", *outage) as port:
        service = build_service(strict_settings(f"sqlite:///{tmp_path / 'audit.db'}", read_open=True), "cologne1",
                                "maxpressure", end=end, field=f"snmp://127.0.0.1:{port}?timeout=0.1")  # fmt: skip
        with TestClient(create_app(service)) as client:

            def state() -> dict[str, Any]:
                body: dict[str, Any] = client.get("/api/state").json()
                return body

            lost = wait_for(lambda: (state().get("field") or {}).get("comm_loss"), timeout=90, every=0.05)
            assert lost == [service.engine.layout.ids[0]]

            def audited() -> list[dict[str, Any]]:
                rows: list[dict[str, Any]] = client.get("/api/events?action=comm_restored").json()
                return rows

            restored = wait_for(audited, timeout=90)
            loss = client.get("/api/events?action=comm_loss").json()
            assert len(loss) == len(restored) == 1
            assert loss[0]["target"] == restored[0]["target"] == lost[0] and loss[0]["result"] == "error"
            assert cut - 1 <= loss[0]["sim_time"] <= restored[0]["sim_time"] and back <= restored[0]["sim_time"]
            final = wait_for(lambda: (s := state()).get("time", 0) >= end and s, timeout=90)
            assert final["field"]["comm_loss"] == [] and final["kpi"]["violations"] == 0
            assert final["field"]["address"].startswith("snmp://public@127.0.0.1:")


def test_field_mode_refuses_simulated_priority_vehicles(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--field"):
        build_service(strict_settings(f"sqlite:///{tmp_path / 'audit.db'}"), "cologne1", "maxpressure",
                      field="snmp://127.0.0.1:9", priority=PriorityDemand(emergency_per_hour=6))  # fmt: skip
