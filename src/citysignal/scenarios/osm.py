"""Import a city from OpenStreetMap: netconvert, synthesized demand under a profile, a ready .sumocfg.

netconvert options are the ones SUMO recommends for real cities: junction clusters joined, signals
guessed from `highway=traffic_signals` nodes near junctions and joined across a cluster, simple
signals on straight roads dropped, ramps and roundabouts guessed, only roads for passenger cars kept,
isolated bits removed. Demand is synthetic: `randomTrips.py` draws trips between edges (origins
weighted towards the fringe, as through traffic enters from outside) at `density` vehicles per hour
per km of road, routed by duarouter, then reshaped to the time-of-day profile
(`profiles`). Without counts there is no calibration: the result is a plausible load,
not the city's real demand (use routeSampler with counts for that).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from citysignal.errors import UserError
from citysignal.network.parse import load_network
from citysignal.scenarios.profiles import DemandProfile
from citysignal.scenarios.registry import Scenario
from citysignal.scenarios.synthetic import random_demand, run_tool
from citysignal.sumo_home import binary
from citysignal.xmlfile import open_xml

NETCONVERT_OPTIONS = (
    "--geometry.remove", "--ramps.guess", "--roundabouts.guess",
    "--junctions.join", "--tls.guess-signals", "--tls.join", "--tls.discard-simple",
    "--tls.default-type", "static", "--keep-edges.by-vclass", "passenger",
    "--remove-edges.isolated", "--no-turnarounds.except-deadend", "--output.street-names",
)  # fmt: skip


def _check_osm(osm: Path) -> None:
    if not osm.is_file():
        raise UserError(f"OSM file not found: {osm}")
    roads = 0
    try:
        with open_xml(osm) as fh:
            for _, elem in ET.iterparse(fh):
                if elem.tag == "tag" and elem.get("k") == "highway":
                    roads += 1
                if elem.tag == "osm":
                    break
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt OSM file {osm}: {exc}") from exc
    if roads == 0:
        raise UserError(f"no roads (highway=*) in OSM file {osm}")


def import_osm(
    osm: Path,
    out: Path,
    profile: DemandProfile,
    hours: float = 3.0,
    begin: float = 16 * 3600.0,
    density: float = 60.0,
    peak_factor: float = 1.0,
    seed: int = 0,
) -> Scenario:
    """Build `out/<name>.net.xml.gz`, routes and `out/<name>.sumocfg` from an OSM extract."""
    if peak_factor <= 0:
        raise UserError(f"peak factor must be > 0, got {peak_factor:g}")
    _check_osm(osm)
    out.mkdir(parents=True, exist_ok=True)
    name = osm.name.split(".")[0]
    net = out / f"{name}.net.xml.gz"
    run_tool([binary("netconvert"), "--osm-files", str(osm), "-o", str(net), *NETCONVERT_OPTIONS,
              "--no-warnings"], "netconvert")  # fmt: skip
    network = load_network(net)  # a net without signals is a one-line error here
    if not network.controllable:
        raise UserError(f"no traffic signals with a program in {osm}")
    return random_demand(net, out, name, profile, hours, begin, density, peak_factor, seed)
