"""Priority vehicles added to any scenario: emergency vehicles and buses on random routes, seeded.

`--emergency-per-hour N` and `--buses-per-hour N` add such vehicles to a scenario's own demand, in an
additional file SUMO loads beside the scenario's routes; the same seed gives the same vehicles, so a
run with priority and its `--no-priority` baseline meet the same traffic.

Assumes: a route is the shortest path (sumolib, by travel time) between two random edges that allow
the vehicle's class, at least `MIN_ROUTE_M` long; departures are spread evenly over the window up to
`LAST_DEPART_BEFORE_END_S` before its end, so the vehicles can finish. An emergency vehicle gets no
blue light (SUMO's `bluelight` device lets it run red lights): it waits at red like any car, which
is what preemption has to fix. Buses carry no timetable: a bus is behind schedule when it has lost
more than `control.priority.BUS_LATE_S` to traffic so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import sumolib

from citysignal.errors import UserError
from citysignal.scenarios.registry import Scenario

EMERGENCY_TYPE = "cs_emergency"
BUS_TYPE = "cs_bus"
MIN_ROUTE_M = 300.0
LAST_DEPART_BEFORE_END_S = 600.0
ROUTE_TRIES = 200

EMERGENCY_HELP = "Emergency vehicles per hour added on random routes (seeded by the run's seed), preempted for."
BUSES_HELP = "Buses per hour added on random routes; one that has lost time gets an early or extended green."
NO_PRIORITY_HELP = "The same added vehicles with no preemption or priority: the baseline."

V_TYPES = (
    f'    <vType id="{EMERGENCY_TYPE}" vClass="emergency" guiShape="emergency" color="1,0,0"/>\n'
    f'    <vType id="{BUS_TYPE}" vClass="bus" guiShape="bus" length="12" minGap="3" color="0,0.6,1"/>\n'
)


@dataclass(frozen=True)
class PriorityDemand:
    emergency_per_hour: float = 0.0
    buses_per_hour: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.emergency_per_hour < 0 or self.buses_per_hour < 0:
            raise UserError("--emergency-per-hour and --buses-per-hour must be 0 or more")

    @property
    def empty(self) -> bool:
        return self.emergency_per_hour == 0 and self.buses_per_hour == 0


def _count(per_hour: float, seconds: float) -> int:
    return round(per_hour * seconds / 3600.0) if per_hour > 0 else 0


def write_priority_vehicles(scenario: Scenario, demand: PriorityDemand, path: Path) -> Path:
    """Write the priority vehicles of `demand` for `scenario`'s window as a SUMO additional file."""
    span = max(0.0, scenario.end - scenario.begin - LAST_DEPART_BEFORE_END_S)
    if span <= 0:
        raise UserError(
            f"the window is too short for priority vehicles: they depart up to {LAST_DEPART_BEFORE_END_S:g} s "
            "before its end"
        )
    net = sumolib.net.readNet(str(scenario.net_file))
    rng = np.random.default_rng(demand.seed)
    vehicles: list[tuple[float, str]] = []
    for kind, v_type, v_class, per_hour in (
        ("emergency", EMERGENCY_TYPE, "emergency", demand.emergency_per_hour),
        ("bus", BUS_TYPE, "bus", demand.buses_per_hour),
    ):
        n = _count(per_hour, scenario.end - scenario.begin)
        if n == 0:
            continue
        edges = [e for e in net.getEdges() if e.getFunction() == "" and e.allows(v_class)]
        departs = scenario.begin + (np.arange(n) + rng.uniform(0.0, 1.0, n)) * span / n
        for i, depart in enumerate(departs):
            route = _random_route(net, edges, v_class, rng)
            if route is None:
                raise UserError(
                    f"{scenario.net_file}: found no route of {MIN_ROUTE_M:g} m or more for a {kind} vehicle"
                )
            vehicles.append(
                (
                    float(depart),
                    f'    <vehicle id="{v_type}_{i}" type="{v_type}" depart="{depart:.1f}" departLane="best">\n'
                    f"        <route edges={quoteattr(' '.join(route))}/>\n    </vehicle>\n",
                )
            )
    vehicles.sort(key=lambda v: v[0])
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<additional>\n' + V_TYPES + "".join(v for _, v in vehicles)
        + "</additional>\n"
    )  # fmt: skip
    return path


def _random_route(
    net: sumolib.net.Net, edges: list[sumolib.net.edge.Edge], v_class: str, rng: np.random.Generator
) -> list[str] | None:
    for _ in range(ROUTE_TRIES):
        a, b = (edges[i] for i in rng.choice(len(edges), size=2, replace=False))
        path, _ = net.getShortestPath(a, b, vClass=v_class)
        if path and sum(e.getLength() for e in path) >= MIN_ROUTE_M:
            return [e.getID() for e in path]
    return None
