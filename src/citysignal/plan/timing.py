"""Fixed-time fallback plans: Webster timing per time-of-day period, and green-wave offsets.

These are the plans a city deploys when the AI is off (or a controller cabinet loses contact).

Flows come from the scenario's routes, movement by movement (vehicles that pass an intersection in
the period, counted by departure time: assumes trips cross the city within a period); `flow` elements
count with the vehicles they insert in the period (`scenarios.demand`), a route distribution by its
routes' probabilities; trips and flows without routes are routed with duarouter first. Timing: Webster
per intersection on the program's own cycle of greens (`control.cycle.webster_cycle`).

Coordination (green waves): with `coordinate`, every intersection of the network runs the same cycle
(the longest Webster cycle, as a common cycle must serve the most loaded junction), and offsets are
set along a maximum-flow spanning forest of signal-to-signal links: a child's green for the movements
arriving from its parent starts when the parent's green for them started plus the free-flow travel
time between the two, modulo the cycle. Like SUMO's `tools/tlsCoordinator.py` it favours the
heaviest flows; unlike it, it assigns one offset per signal from flows rather than routes' order,
and it cannot give a two-way green wave on a link where travel time is not a multiple of half the
cycle.
"""

from __future__ import annotations

import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.control.cycle import critical_ratios, webster_cycle
from citysignal.errors import UserError
from citysignal.network.layout import Layout
from citysignal.network.model import Intersection, Network
from citysignal.scenarios import Scenario
from citysignal.scenarios.demand import DEMAND_TAGS, departures, route_elements
from citysignal.sumo_home import binary
from citysignal.xmlfile import open_xml


@dataclass
class Plan:
    intersection: Intersection
    greens: list[int]  # the program's cycle of greens
    durations: list[float]
    ratios: list[float]  # Webster critical flow ratio per green
    lost_time: float
    cycle: float
    offset: float = 0.0


def routed_files(scenario: Scenario, tmp: Path) -> list[Path]:
    """Route files with explicit routes; trips without routes go through duarouter once."""
    out = []
    for path in scenario.route_files:
        try:
            with open_xml(path) as fh:
                head = fh.read(1 << 20)
        except (OSError, EOFError) as exc:
            raise UserError(f"corrupt route file {path}: {exc}") from exc
        if b"<trip" not in head and b" from=" not in head:
            out.append(path)
            continue
        routed = tmp / f"{path.name}.routed.rou.xml"
        cmd = [binary("duarouter"), "-n", str(scenario.net_file), "-r", str(path), "-o", str(routed),
               "--ignore-errors", "--no-step-log", "--no-warnings", "--begin", f"{scenario.begin:.2f}",
               "--end", f"{scenario.end:.2f}"]  # fmt: skip
        if scenario.additional_files:
            cmd += ["-a", ",".join(str(a) for a in scenario.additional_files if "vtype" in a.name.lower())]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not routed.exists():
            raise UserError(f"duarouter could not route {path}: {proc.stderr.strip().splitlines()[-1:]}")
        out.append(routed)
    return out


def movement_flows(scenario: Scenario, layout: Layout, begin: float, end: float) -> NDArray[np.float64]:
    """Vehicles per second on each movement of `layout`, for vehicles departing in [begin, end)."""
    index: dict[tuple[str, str], list[int]] = defaultdict(list)
    edge_of = {lane: lane.rsplit("_", 1)[0] for lane in layout.lanes}
    for m in range(len(layout.mov_int)):
        index[(edge_of[layout.lanes[layout.mov_in[m]]], edge_of[layout.lanes[layout.mov_out[m]]])].append(m)
    counts = np.zeros(len(layout.mov_int))
    named: dict[str, list[tuple[list[str], float]]] = {}  # route or route distribution id -> (edges, weight)
    with tempfile.TemporaryDirectory(prefix="citysignal-plan-") as tmp:
        for path in routed_files(scenario, Path(tmp)):
            for elem in route_elements(path):
                if elem.tag in ("route", "routeDistribution") and elem.get("id"):
                    named[elem.attrib["id"]] = _routes(elem, named)
                if elem.tag not in DEMAND_TAGS or elem.tag.startswith("person"):
                    continue
                dep = departures(elem, str(path), scenario.end)
                vehicles = 0.0 if dep is None else dep.between(begin, end)
                if vehicles <= 0:
                    continue
                inline = elem.find("route")
                if inline is None:
                    inline = elem.find("routeDistribution")
                routes = _routes(inline, named) if inline is not None else named.get(elem.get("route", ""), [])
                for edges, weight in routes:
                    for pair in pairwise(edges):
                        for m in index.get(pair, ()):
                            counts[m] += vehicles * weight / len(index[pair])
    return counts / (end - begin)


def _routes(elem: ET.Element, named: dict[str, list[tuple[list[str], float]]]) -> list[tuple[list[str], float]]:
    """A route as [(edges, 1.0)], a route distribution as its routes weighted by their probabilities."""
    if elem.tag == "route":
        ref = elem.get("refId")
        return named.get(ref, []) if ref else [(elem.get("edges", "").split(), 1.0)]
    parts = []
    for route in elem.findall("route"):
        try:
            probability = float(route.get("probability", "1"))
        except ValueError:
            bad = route.get("probability")
            raise UserError(f"bad probability '{bad}' in route distribution '{elem.get('id')}'") from None
        parts += [(edges, probability * w) for edges, w in _routes(route, named)]
    total = sum(w for _, w in parts)
    return [(edges, w / total) for edges, w in parts] if total > 0 else []


def webster_plans(
    layout: Layout, flows: NDArray[np.float64], c_min: float = 30.0, c_max: float = 120.0
) -> list[Plan]:
    ratios = critical_ratios(layout, flows)
    plans = []
    for k, inter in enumerate(layout.intersections):
        cycle = inter.cycle
        greens = [run.green for run in cycle]
        nexts = greens[1:] + greens[:1]
        lost = sum(d for g, n in zip(greens, nexts, strict=True) for _, d in inter.transition(g, n))
        y = ratios[layout.green_start[k] + np.array(greens)]
        _, splits = webster_cycle(y, lost, inter.min_green[greens], c_min, c_max)
        durations = [float(round(s)) for s in splits]
        plans.append(Plan(inter, greens, durations, [float(v) for v in y], lost, lost + sum(durations)))
    return plans


def coordinate(network: Network, layout: Layout, plans: list[Plan], flows: NDArray[np.float64]) -> list[Plan]:
    """Common cycle and green-wave offsets along the heaviest signal-to-signal links (see module doc)."""
    common = max(p.cycle for p in plans)
    for p in plans:  # stretch every green proportionally to the common cycle
        scale = (common - p.lost_time) / max(sum(p.durations), 1.0)
        p.durations = [float(round(d * scale)) for d in p.durations]
        p.cycle = p.lost_time + sum(p.durations)
        p.offset = 0.0
    edge_of = [lane.rsplit("_", 1)[0] for lane in layout.lanes]
    leaving: dict[str, int] = {}
    for m in range(len(layout.mov_int)):
        leaving[edge_of[layout.mov_out[m]]] = int(layout.mov_int[m])
    # directed links parent -> child over one edge, weighted by the flow entering the child from it
    links: dict[tuple[int, int], list[float | str]] = {}
    for m in range(len(layout.mov_int)):
        edge, child = edge_of[layout.mov_in[m]], int(layout.mov_int[m])
        parent = leaving.get(edge)
        if parent is not None and parent != child:
            entry = links.setdefault((parent, child), [edge, 0.0])
            entry[1] = float(entry[1]) + float(flows[m])
    starts = [_green_starts(p) for p in plans]
    # maximum-flow spanning forest (Kruskal), then offsets outward from each tree's busiest node
    root = list(range(len(plans)))

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    tree: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # node -> (other, parent, child)
    for (parent, child), (_, weight) in sorted(links.items(), key=lambda kv: -float(kv[1][1])):
        a, b = find(parent), find(child)
        if a != b and float(weight) > 0:
            root[a] = b
            tree[parent].append((child, parent, child))
            tree[child].append((parent, parent, child))
    placed: set[int] = set()
    load = np.bincount(layout.mov_int, weights=flows, minlength=len(plans))
    for first in sorted(range(len(plans)), key=lambda k: -load[k]):
        if first in placed:
            continue
        placed.add(first)
        queue = [first]
        while queue:
            u = queue.pop(0)
            for v, parent, child in tree[u]:
                if v in placed:
                    continue
                edge = str(links[(parent, child)][0])
                lane = network.lanes.get(f"{edge}_0")
                travel = lane.length / max(lane.speed, 1.0) if lane else 0.0
                g_out = _green_serving(layout, plans[parent], parent, lambda m, e=edge: edge_of[layout.mov_out[m]] == e)
                g_in = _green_serving(layout, plans[child], child, lambda m, e=edge: edge_of[layout.mov_in[m]] == e)
                if g_out is not None and g_in is not None:
                    if v == child:  # the platoon leaves u's green and should meet v's green
                        t = plans[u].offset + starts[u][g_out] + travel - starts[v][g_in]
                    else:  # v is upstream: its green toward u leaves `travel` earlier
                        t = plans[u].offset + starts[u][g_in] - travel - starts[v][g_out]
                    plans[v].offset = t % common
                placed.add(v)
                queue.append(v)
    return plans


def _green_starts(plan: Plan) -> dict[int, float]:
    """When each green of the plan starts within its cycle."""
    t, at = 0.0, {}
    for g, d, nxt in zip(plan.greens, plan.durations, plan.greens[1:] + plan.greens[:1], strict=True):
        at[g] = t
        t += d + sum(dur for _, dur in plan.intersection.transition(g, nxt))
    return at


def _green_serving(layout: Layout, plan: Plan, k: int, wanted: Callable[[int], bool]) -> int | None:
    """The green of intersection k that serves most of the movements `wanted` selects."""
    movs = np.array([m for m in np.flatnonzero(layout.mov_int == k) if wanted(int(m))], dtype=np.int64)
    if movs.size == 0:
        return None
    served = [int(plan.intersection.serve_signals[g, layout.mov_signal[movs]].sum()) for g in plan.greens]
    return plan.greens[int(np.argmax(served))] if max(served) > 0 else None
