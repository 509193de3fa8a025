"""Time-of-day demand profiles: reshape any scenario's demand over a window of the day.

A profile is a piecewise-linear relative rate over the time of day (1.0 = the peak). Reshaping keeps
the scenario's *trips* (origins, destinations, routes, vehicle types: the real demand's structure)
and redraws *when* they leave: the target rate is `peak_factor` x the scenario's average base rate
x the profile's relative rate, departures are drawn from that rate (inverse CDF on a 1 s grid), and
each departure copies a base vehicle drawn uniformly. Assumes the base demand's spatial pattern holds
all day (no separate AM/PM origin-destination matrices). A flow (or personFlow) stands for the
vehicles it inserts in the scenario's window (`demand.departures`, expected ones rounded for random
flows): each is one base vehicle (a trip where the flow gives only origin and destination).

evening-peak: 0.35 until 16:00, ramping to 1.0 at 17:00, flat to 18:30, back to 0.35 at 19:30 —
the shape of an urban PM peak, labelled as synthetic wherever it is used.
"""

from __future__ import annotations

import copy
import gzip
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from citysignal.errors import UserError
from citysignal.scenarios.demand import FLOW_TAGS, VEHICLE_TAGS, departures
from citysignal.scenarios.registry import Scenario, load_sumocfg
from citysignal.xmlfile import open_xml

HOUR = 3600.0
FLOW_ONLY = ("begin", "end", "number", "period", "vehsPerHour", "perHour", "probability")


@dataclass(frozen=True)
class DemandProfile:
    name: str
    description: str
    knots: tuple[tuple[float, float], ...]  # (seconds since midnight, relative rate)

    def rate(self, t: np.ndarray) -> np.ndarray:
        xs, ys = zip(*self.knots, strict=True)
        return np.asarray(np.interp(t, xs, ys), dtype=np.float64)


PROFILES = {
    "evening-peak": DemandProfile(
        "evening-peak",
        "ramp from 16:00, peak 17:00-18:30, decay to 19:30 (0.35 of peak outside)",
        ((16 * HOUR, 0.35), (17 * HOUR, 1.0), (18.5 * HOUR, 1.0), (19.5 * HOUR, 0.35)),
    ),
    "flat": DemandProfile("flat", "constant rate all day", ((0.0, 1.0), (24 * HOUR, 1.0))),
}


def get_profile(name: str) -> DemandProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f"unknown demand profile '{name}' (choose from: {', '.join(PROFILES)})") from None


def _read_routes(path: Path) -> ET.Element:
    try:
        with open_xml(path) as fh:
            return ET.parse(fh).getroot()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt route file {path}: {exc}") from exc


def _one_of(flow: ET.Element) -> ET.Element:
    """One vehicle (trip, person) of a flow: its attributes and children without the flow's timing."""
    if flow.tag == "personFlow":
        tag = "person"
    elif flow.get("route") is None and flow.find("route") is None and flow.find("routeDistribution") is None:
        tag = "trip"
    else:
        tag = "vehicle"
    one = ET.Element(tag, {k: v for k, v in flow.attrib.items() if k not in FLOW_ONLY})
    one.extend(copy.deepcopy(list(flow)))
    return one


def reshape(
    scenario: Scenario,
    profile: DemandProfile,
    out_dir: Path,
    begin: float,
    end: float,
    peak_factor: float = 1.0,
    seed: int = 0,
    name: str | None = None,
) -> Scenario:
    """Write `out_dir/<name>.rou.xml.gz` and `<name>.sumocfg` with the demand reshaped to `profile`."""
    if not 0 < peak_factor < math.inf:
        raise UserError(f"peak factor must be a finite number > 0, got {peak_factor:g}")
    if not (0 <= begin < math.inf and 0 <= end < math.inf):
        raise UserError(f"profile window [{begin:g}, {end:g}) must be finite times >= 0")
    if end <= begin:
        raise UserError(f"profile window [{begin:g}, {end:g}) is empty")
    keep: list[ET.Element] = []  # vTypes, named routes and the like, copied as they are
    base: list[ET.Element] = []
    for path in scenario.route_files:
        root = _read_routes(path)
        for elem in root:
            if elem.tag not in (*VEHICLE_TAGS, *FLOW_TAGS):
                keep.append(elem)
                continue
            dep = departures(elem, str(path), scenario.end)
            inside = 0 if dep is None else round(dep.between(scenario.begin, scenario.end))
            base += [elem if elem.tag in VEHICLE_TAGS else _one_of(elem)] * inside
    if not base:
        raise UserError(f"no vehicles in the window [{scenario.begin:g}, {scenario.end:g}) of {scenario.sumocfg}")
    base_rate = len(base) / (scenario.end - scenario.begin)
    grid = np.arange(begin, end, 1.0)
    rate = base_rate * peak_factor * profile.rate(grid)
    rng = np.random.default_rng(seed)
    count = int(rng.poisson(rate.sum()))
    cdf = np.cumsum(rate) / rate.sum()
    departs = np.sort(grid[np.searchsorted(cdf, rng.uniform(0, 1, count))] + rng.uniform(0, 1, count).round(1))
    picks = rng.integers(0, len(base), count)

    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"{scenario.name}_{profile.name}"
    routes = ET.Element("routes")
    routes.extend(keep)
    for k, (depart, pick) in enumerate(zip(departs, picks, strict=True)):
        elem = copy.deepcopy(base[pick])
        elem.set("id", f"{elem.get('id')}~{k}")
        elem.set("depart", f"{depart:.1f}")
        routes.append(elem)
    route_file = out_dir / f"{name}.rou.xml.gz"
    with gzip.open(route_file, "wb") as fh:
        ET.ElementTree(routes).write(fh, encoding="utf-8", xml_declaration=True)
    cfg = out_dir / f"{name}.sumocfg"
    def rel(path: Path) -> str:  # relative, so the folder can move together with its inputs
        return os.path.relpath(path, out_dir)

    adds = ",".join(rel(a) for a in scenario.additional_files)
    cfg.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<!-- {profile.name} profile (synthetic: {profile.description}) over the real trips of "
        f"{scenario.name}; peak factor {peak_factor:g} x its mean rate {base_rate * HOUR:.0f} veh/h; seed {seed} -->\n"
        "<configuration>\n    <input>\n"
        f'        <net-file value="{rel(scenario.net_file)}"/>\n'
        f'        <route-files value="{rel(route_file)}"/>\n'
        + (f'        <additional-files value="{adds}"/>\n' if adds else "")
        + "    </input>\n    <time>\n"
        f'        <begin value="{begin:g}"/>\n        <end value="{end:g}"/>\n'
        "    </time>\n</configuration>\n"
    )
    return load_sumocfg(cfg, name)
