"""Scenarios written the way others write them (clock times, flows only, no end), built in a test's folder.

Nothing here is bundled: a small netgenerate grid (2x2 signals A0, A1, B0, B1 with 200 m approaches) and
route files in the styles found in published SUMO scenarios.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from citysignal.sumo_home import binary

WEST_EAST = "left0A0 A0B0 B0right0"
SOUTH_NORTH = "bottom1B0 B0B1 B1top1"

# Every way SUMO lets a flow say how many vehicles it inserts, with clock times, from 15:00.
CLOCK_FLOWS = f"""<routes>
    <route id="we" edges="{WEST_EAST}"/>
    <flow id="vph" route="we" begin="15:00:00" end="16:00:00" vehsPerHour="300"/>
    <flow id="ph" route="we" begin="15:00:00" end="16:00:00" perHour="100"/>
    <flow id="per" begin="15:00:00" end="15:30:00" period="45" from="top0A1" to="A0bottom0"/>
    <flow id="num" begin="54000" end="57600" number="40"><route edges="{SOUTH_NORTH}"/></flow>
    <flow id="prob" route="we" begin="15:00:00" end="16:00:00" probability="0.05"/>
    <flow id="exp" route="we" begin="15:00:00" end="16:00:00" period="exp(0.04)"/>
</routes>
"""


def grid_net(folder: Path) -> Path:
    net = folder / "grid.net.xml"
    if not net.exists():
        subprocess.run(
            [binary("netgenerate"), "--grid", "--grid.number", "2", "--grid.attach-length", "200",
             "--tls.set", "A0,A1,B0,B1", "--no-turnarounds", "-o", str(net)],
            check=True, capture_output=True,
        )  # fmt: skip
    return net


def write_sumocfg(folder: Path, routes: str, begin: str | None, end: str | None, name: str = "city") -> Path:
    """`name`.sumocfg over the grid with `routes` as its route file, in `<time>` as given (None: left out)."""
    grid_net(folder)
    (folder / f"{name}.rou.xml").write_text(routes)
    times = "".join(f'<{key} value="{value}"/>' for key, value in (("begin", begin), ("end", end)) if value)
    cfg = folder / f"{name}.sumocfg"
    cfg.write_text(
        f'<configuration>\n  <input>\n    <net-file value="grid.net.xml"/>\n    <route-files value="{name}.rou.xml"/>\n'
        f"  </input>\n  <time>{times}</time>\n</configuration>\n"
    )
    return cfg


def published_style(folder: Path) -> Path:
    """The shape of a real published scenario: flows from 15:00:00, `<begin value="53990"/>`, no end."""
    return write_sumocfg(folder, CLOCK_FLOWS, "53990", None)
