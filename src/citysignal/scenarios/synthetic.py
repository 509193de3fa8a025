"""Synthetic cities and synthetic demand: netgenerate grids and spider nets up to thousands of signals.

`random_demand` draws trips with SUMO's `randomTrips.py` (origins weighted towards the fringe, at
`density` trips per hour per km of road), routes them with duarouter and reshapes them to a
time-of-day profile. `grid_city` builds an n x n grid (or a spider net) with a signal at every
junction: the scale benchmark's 196- and 2,500-signal cities. They test scale, not realism.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from citysignal.errors import UserError
from citysignal.scenarios.profiles import DemandProfile, get_profile, reshape
from citysignal.scenarios.registry import Scenario, load_sumocfg
from citysignal.sumo_home import binary, sumo_home, tool


def run_tool(cmd: list[str], what: str) -> None:
    """Run a SUMO program; a failure is one UserError line with its first error message."""
    env = dict(os.environ, SUMO_HOME=str(sumo_home()))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["no output"]
        first_error = next((ln for ln in lines if "rror" in ln), lines[-1])
        raise UserError(f"{what} failed: {first_error}")


def random_demand(
    net: Path,
    out: Path,
    name: str,
    profile: DemandProfile,
    hours: float,
    begin: float,
    density: float,
    peak_factor: float,
    seed: int,
) -> Scenario:
    """Random routed trips on `net`, reshaped to `profile` over [begin, begin + hours)."""
    if hours <= 0:
        raise UserError(f"hours must be > 0, got {hours:g}")
    base_len = 3600.0
    base = out / f"{name}.base.rou.xml"
    trips = out / f"{name}.trips.xml"
    run_tool([sys.executable, str(tool("randomTrips.py")), "-n", str(net), "-o", str(trips), "-r", str(base),
              "-b", "0", "-e", f"{base_len:g}", "--insertion-density", f"{density:g}", "--fringe-factor", "5",
              "--seed", str(seed), "--remove-loops"], "randomTrips")  # fmt: skip
    flat = out / f"{name}.base.sumocfg"
    flat.write_text(
        f'<configuration><input><net-file value="{net.name}"/><route-files value="{base.name}"/></input>'
        f'<time><begin value="0"/><end value="{base_len:g}"/></time></configuration>'
    )
    try:
        return reshape(load_sumocfg(flat, name), profile, out, begin, begin + hours * 3600.0,
                       peak_factor=peak_factor, seed=seed, name=name)  # fmt: skip
    finally:
        for leftover in (flat, base, trips, out / f"{name}.base.rou.alt.xml"):
            leftover.unlink(missing_ok=True)


def grid_city(
    size: int,
    out: Path,
    spider: bool = False,
    hours: float = 1.0,
    density: float = 40.0,
    profile: str = "flat",
    seed: int = 0,
) -> Scenario:
    """An n x n signalized grid (or a spider net with n arms and n circles) with random demand."""
    if not 2 <= size <= 60:
        raise UserError(f"city size must be between 2 and 60, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    name = f"{'spider' if spider else 'grid'}{size}"
    net = out / f"{name}.net.xml.gz"
    shape = (["--spider", "--spider.arm-number", str(size), "--spider.circle-number", str(size),
              "--spider.space-radius", "150"] if spider else
             ["--grid", "--grid.number", str(size), "--grid.length", "200", "--grid.attach-length", "200"])  # fmt: skip
    run_tool([binary("netgenerate"), *shape, "--default-junction-type", "traffic_light", "--default.lanenumber", "2",
              "--tls.guess", "false", "--no-turnarounds", "-o", str(net), "--no-warnings"], "netgenerate")  # fmt: skip
    return random_demand(net, out, name, get_profile(profile), hours, 0.0, density, 1.0, seed)
