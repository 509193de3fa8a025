"""Priority calls from the twin: an emergency vehicle calls every signal along its route within reach (not
only the next one), each with its own signal and distance, nearest first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bundled import bundled_layout, bundled_scenario

from citysignal.scenarios.priority import PriorityDemand, write_priority_vehicles
from citysignal.twin import Twin

REACH_M = 400.0


def test_an_emergency_vehicle_calls_every_signal_along_its_route_within_reach(tmp_path: Path) -> None:
    scenario = bundled_scenario("grid4x4").with_window(0.0, 1200.0)
    layout = bundled_layout("grid4x4")
    extra = (write_priority_vehicles(scenario, PriorityDemand(emergency_per_hour=60), tmp_path / "p.add.xml"),)
    n = layout.n_intersections
    seen_two = False
    with Twin(scenario, layout, extra_additional=extra, priority_reach=REACH_M) as twin:
        while not twin.done and not seen_two:
            calls = twin.observe(np.zeros(n, dtype=np.int64), np.zeros(n)).calls
            for vehicle in {c.vehicle for c in calls}:
                mine = sorted((c for c in calls if c.vehicle == vehicle), key=lambda c: c.distance)
                assert all(c.kind == "emergency" and 0 <= c.distance <= REACH_M for c in mine)
                assert len({c.intersection for c in mine}) == len(mine)
                ahead = twin._api.vehicle.getNextTLS(vehicle)
                assert layout.ids[mine[0].intersection] == ahead[0][0] and mine[0].signal == ahead[0][1]
                seen_two |= len(mine) >= 2
            twin.step()
    assert seen_two
