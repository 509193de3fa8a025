"""The entry queue off the map, as the twin counts it: vehicles SUMO could not insert yet, per edge they
wait on. Asked per pending vehicle (its route's first edge) while few are pending, the count is the one
SUMO's own per-edge query gives, on arterial4x4, whose entries back up within minutes."""

from __future__ import annotations

from collections import Counter

import numpy as np
from bundled import bundled_layout

from citysignal.scenarios import resolve
from citysignal.twin import Twin


def test_pending_vehicles_per_edge_match_sumos_count() -> None:
    scenario = resolve("arterial4x4")
    scenario = resolve("arterial4x4", scenario.begin, scenario.begin + 600.0)
    layout = bundled_layout("arterial4x4")
    clock = np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(layout.n_intersections)
    checked = 0
    with Twin(scenario, layout, fields=frozenset({"halting", "backlog"})) as twin:
        api = twin._api
        while not twin.done:
            twin.step()
            pending = api.simulation.getPendingVehicles()
            if not pending:
                continue
            by_edge = Counter({e: n for e in api.edge.getIDList() if (n := len(api.edge.getPendingVehicles(e)))})
            assert twin._pending_by_edge() == by_edge, twin.time
            assert twin.observe(*clock).lane("backlog").sum() > 0
            checked += 1
    assert checked > 100
