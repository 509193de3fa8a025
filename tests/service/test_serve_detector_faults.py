"""The service with faulty detectors (`serve --detector-faults`): the controllers run behind the detector
checks, an intersection whose detectors died says it runs the fixed-time fallback, and the KPIs still read
the true lanes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bundled import bundled_layout
from fastapi.testclient import TestClient
from service_helpers import strict_settings, wait_for

from citysignal.service.app import create_app
from citysignal.service.context import build_service
from citysignal.twin.faults import FaultSpec


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("faults") / "audit.db"
    service = build_service(strict_settings(f"sqlite:///{db}", read_open=True), "cologne1", "maxpressure",
                            speed=400, begin=25200, end=27000, faults=FaultSpec(1.0, "missing"))  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c


def test_dead_detectors_put_the_intersection_on_its_fixed_time_plan(client: TestClient) -> None:
    inter = bundled_layout("cologne1").ids[0]

    def fallback() -> dict[str, Any] | None:
        detail = client.get(f"/api/intersections/{inter}").json()
        return detail if str(detail["explain"]).startswith("fixed-time fallback") else None

    detail = wait_for(fallback, timeout=60)
    assert "missing" in detail["explain"]
    marked = {lane: why for ap in detail["approaches"] for lane, why in ap["faulty"].items()}
    assert "missing" in marked.values()  # what the dashboard marks on each approach
    kpis = client.get("/api/kpis").json()
    assert kpis and all(k["halting"] == k["halting"] for k in kpis)  # numbers, never NaN: the true lanes
    assert max(k["halting"] for k in kpis) > 0
