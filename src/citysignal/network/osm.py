"""Import a city from OpenStreetMap: netconvert, synthesized demand under a profile, a ready .sumocfg.

netconvert options are the ones SUMO recommends for real cities: junction clusters joined, signals
guessed from `highway=traffic_signals` nodes near junctions and joined across a cluster, simple
signals on straight roads dropped, ramps and roundabouts guessed, only roads for passenger cars kept,
isolated bits removed. Demand is synthetic: `randomTrips.py` draws trips between edges (origins
weighted towards the fringe, as through traffic enters from outside) at `density` vehicles per hour
per km of road, routed by duarouter, then reshaped to the time-of-day profile
(`scenarios.profiles`). Without counts there is no calibration: the result is a plausible load,
not the city's real demand (use routeSampler with counts for that).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from citysignal.errors import UserError
from citysignal.network.parse import load_network
from citysignal.scenarios.profiles import DemandProfile, reshape
from citysignal.scenarios.registry import Scenario, load_sumocfg
from citysignal.sumo_home import binary, sumo_home, tool

NETCONVERT_OPTIONS = (
    "--geometry.remove", "--ramps.guess", "--roundabouts.guess",
    "--junctions.join", "--tls.guess-signals", "--tls.join", "--tls.discard-simple",
    "--tls.default-type", "static", "--keep-edges.by-vclass", "passenger",
    "--remove-edges.isolated", "--no-turnarounds.except-deadend", "--output.street-names",
)  # fmt: skip


def _check_osm(osm: Path) -> None:
    if not osm.is_file():
        raise UserError(f"OSM file not found: {osm}")
    opener = gzip.open if osm.suffix == ".gz" else open
    roads = 0
    try:
        with opener(osm, "rb") as fh:
            for _, elem in ET.iterparse(fh):
                if elem.tag == "tag" and elem.get("k") == "highway":
                    roads += 1
                if elem.tag == "osm":
                    break
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt OSM file {osm}: {exc}") from exc
    if roads == 0:
        raise UserError(f"no roads (highway=*) in OSM file {osm}")


def _run(cmd: list[str], what: str) -> None:
    env = dict(os.environ, SUMO_HOME=str(sumo_home()))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["no output"]
        first_error = next((ln for ln in lines if "rror" in ln), lines[-1])
        raise UserError(f"{what} failed: {first_error}")


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
    if hours <= 0:
        raise UserError(f"hours must be > 0, got {hours:g}")
    if peak_factor <= 0:
        raise UserError(f"peak factor must be > 0, got {peak_factor:g}")
    _check_osm(osm)
    out.mkdir(parents=True, exist_ok=True)
    name = osm.name.split(".")[0]
    net = out / f"{name}.net.xml.gz"
    _run([binary("netconvert"), "--osm-files", str(osm), "-o", str(net), *NETCONVERT_OPTIONS,
          "--no-warnings"], "netconvert")  # fmt: skip
    network = load_network(net)  # a net without signals is a one-line error here
    if not network.controllable:
        raise UserError(f"no traffic signals with a program in {osm}")
    base_len = 3600.0
    base = out / f"{name}.base.rou.xml"
    _run([sys.executable, str(tool("randomTrips.py")), "-n", str(net), "-o", str(out / f"{name}.trips.xml"),
          "-r", str(base), "-b", "0", "-e", f"{base_len:g}", "--insertion-density", f"{density:g}",
          "--fringe-factor", "5", "--seed", str(seed), "--validate", "--remove-loops"], "randomTrips")  # fmt: skip
    (out / f"{name}.trips.xml").unlink(missing_ok=True)
    for leftover in out.glob(f"{name}.base.rou.alt.xml"):
        leftover.unlink()
    flat = out / f"{name}.base.sumocfg"
    flat.write_text(
        f'<configuration><input><net-file value="{net.name}"/><route-files value="{base.name}"/></input>'
        f'<time><begin value="0"/><end value="{base_len:g}"/></time></configuration>'
    )
    scenario = reshape(load_sumocfg(flat, name), profile, out, begin, begin + hours * 3600.0,
                       peak_factor=peak_factor, seed=seed, name=name)  # fmt: skip
    flat.unlink()
    base.unlink()
    return scenario
