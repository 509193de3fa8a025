"""Scenarios written elsewhere: clock times, flow-only demand, a window that cuts a flow, and no end.

Flow counts are checked against what SUMO itself inserts (tripinfo with undeparted vehicles), so the
window checks, `demand_summary` and the plans' movement flows see the demand SUMO will run.
"""

from __future__ import annotations

import math
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from scenario_files import CLOCK_FLOWS, SOUTH_NORTH, WEST_EAST, grid_net, published_style, write_sumocfg

from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.plan import timing
from citysignal.scenarios import demand_summary, load_sumocfg, resolve
from citysignal.scenarios.demand import departures, parse_time, route_elements
from citysignal.scenarios.profiles import get_profile, reshape
from citysignal.sumo_home import binary
from citysignal.xmlfile import open_xml

RANDOM_FLOWS = ("prob", "exp")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("53990", 53990.0), ("15:00:00", 54000.0), ("1:02:00:00", 93600.0), ("07:30:15.5", 27015.5), ("-1", -1.0)],
)
def test_times_are_read_as_sumo_reads_them(text: str, seconds: float) -> None:
    assert parse_time(text, "x") == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "15h", "", "7:xx:00"])
def test_unreadable_times_are_user_errors(text: str) -> None:
    with pytest.raises(UserError, match="bad time"):
        parse_time(text, "the begin")


def test_clock_time_sumocfg_and_routes(tmp_path: Path) -> None:
    routes = "<routes>" + "".join(
        f'<vehicle id="v{k}" depart="07:{k:02d}:30"><route edges="{WEST_EAST}"/></vehicle>' for k in range(20)
    ) + f'<vehicle id="late" depart="1:07:00:00"><route edges="{WEST_EAST}"/></vehicle></routes>'
    cfg = write_sumocfg(tmp_path, routes, "07:00:00", "07:10:00")
    sc = resolve(str(cfg))
    assert (sc.begin, sc.end, sc.end_assumed, sc.note) == (25200.0, 25800.0, False, None)
    assert demand_summary(sc) == (25230.0, 86400.0 + 25200.0, 10)  # 07:00:30 ... 07:09:30 inside
    assert demand_summary(resolve(str(cfg), parse_time("07:05:00", "b"), None))[2] == 5


def test_a_published_style_scenario_runs_its_flows_for_an_hour(tmp_path: Path) -> None:
    """Flows from 15:00:00, `<begin value="53990"/>` and no end: was refused as 'no timed demand'."""
    sc = resolve(str(published_style(tmp_path)))
    assert (sc.begin, sc.end, sc.end_assumed) == (53990.0, 57590.0, True)
    assert sc.note is not None and "gives no end" in sc.note and "53990-57590" in sc.note
    first, last, inside = demand_summary(sc)
    assert first == 54000.0
    assert last is not None and 57590 < last <= 57600
    assert abs(inside - (300 + 100 + 40 + 40 + 180 + 144)) < 5  # the last vehicles of each hour fall after 57590
    explicit = resolve(str(published_style(tmp_path)), None, 55000)
    assert (explicit.end, explicit.end_assumed, explicit.note) == (55000.0, False, None)
    shifted = resolve(str(published_style(tmp_path)), 55000, None)
    assert (shifted.begin, shifted.end, shifted.end_assumed) == (55000.0, 58600.0, True)


def test_a_negative_end_is_sumos_no_end(tmp_path: Path) -> None:
    sc = load_sumocfg(write_sumocfg(tmp_path, CLOCK_FLOWS, "15:00:00", "-1"))
    assert (sc.begin, sc.end, sc.end_assumed) == (54000.0, 57600.0, True)


def test_options_are_found_outside_their_usual_sections(tmp_path: Path) -> None:
    grid_net(tmp_path)
    (tmp_path / "r.rou.xml").write_text(CLOCK_FLOWS)
    cfg = tmp_path / "flat.sumocfg"
    cfg.write_text('<configuration><net-file value="grid.net.xml"/><route-files value="r.rou.xml"/>'
                   '<begin value="15:00:00"/><end value="15:20:00"/></configuration>')  # fmt: skip
    sc = resolve(str(cfg))
    assert (sc.begin, sc.end) == (54000.0, 55200.0) and sc.route_files == (tmp_path / "r.rou.xml",)


def sumo_inserted(cfg: Path, begin: float, end: float, out: Path) -> Counter[str]:
    """Vehicles per flow that SUMO loads for the window (departed or not), from its tripinfo."""
    subprocess.run(
        [binary("sumo"), "-c", str(cfg), "--begin", f"{begin:g}", "--end", f"{end:g}", "--no-step-log",
         "--no-warnings", "--tripinfo-output", str(out), "--tripinfo-output.write-unfinished",
         "--tripinfo-output.write-undeparted"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return Counter(t.get("id", "").rsplit(".", 1)[0] for t in ET.parse(out).getroot().iter("tripinfo"))


@pytest.mark.parametrize(("begin", "end"), [(54000, 57600), (55800, 57600), (54000, 54600), (53990, 54010)])
def test_flow_counts_match_what_sumo_inserts(tmp_path: Path, begin: float, end: float) -> None:
    cfg = write_sumocfg(tmp_path, CLOCK_FLOWS, None, None)
    seen = sumo_inserted(cfg, begin, end, tmp_path / "trips.xml")
    ours = {
        elem.attrib["id"]: dep.between(begin, end)
        for elem in route_elements(tmp_path / "city.rou.xml")
        if elem.tag == "flow" and (dep := departures(elem, "city.rou.xml", end)) is not None
    }
    assert set(ours) == {"vph", "ph", "per", "num", *RANDOM_FLOWS}
    for flow, count in ours.items():
        if flow in RANDOM_FLOWS:  # SUMO draws these: our count is the expectation
            assert abs(seen[flow] - count) <= 5 * math.sqrt(count) + 1, (flow, seen[flow], count)
        else:
            assert seen[flow] == count, (flow, seen[flow], count)


def test_a_window_that_cuts_a_flow(tmp_path: Path) -> None:
    """A 0-3600 flow with the window [1800, 3600): was refused as 'departures between 0 and 0'."""
    routes = f'<routes><flow id="f" begin="0" end="3600" vehsPerHour="600"><route edges="{WEST_EAST}"/></flow></routes>'
    cfg = write_sumocfg(tmp_path, routes, "0", "3600")
    cut = resolve(str(cfg), 1800, 3600)
    assert demand_summary(cut) == (0.0, 3594.0, 300)  # 600 veh/h is one vehicle every 6 s, not one vehicle
    assert demand_summary(resolve(str(cfg)))[2] == 600
    with pytest.raises(UserError, match=r"outside the demand \(departures between 0 and 3594\)"):
        resolve(str(cfg), 3600, 4000)


def test_flow_errors_are_one_line_naming_the_flow(tmp_path: Path) -> None:
    for flow, fragment in [
        ('<flow id="f" route="we" begin="0" end="60"/>', "gives none of number"),
        ('<flow id="f" route="we" begin="0" end="60" vehsPerHour="lots"/>', "bad vehsPerHour 'lots'"),
        ('<flow id="f" route="we" begin="0" end="60" period="0"/>', "bad period '0'"),
        ('<flow id="f" route="we" begin="0" end="60" period="exp(x)"/>', "bad period 'exp(x)'"),
        ('<flow id="f" route="we" begin="soon" end="60" number="3"/>', "bad time 'soon' for the begin of flow 'f'"),
    ]:
        cfg = write_sumocfg(tmp_path, f'<routes><route id="we" edges="{WEST_EAST}"/>{flow}</routes>', "0", "60")
        with pytest.raises(UserError) as info:
            resolve(str(cfg))
        assert fragment in str(info.value) and "\n" not in str(info.value)


def movement_per_hour(cfg: Path, begin: float, end: float) -> dict[tuple[str, str], float]:
    """Vehicles per hour on each movement (in edge, out edge) of the plan's flows, over [begin, end)."""
    sc = load_sumocfg(cfg)
    layout = Layout.from_network(load_network(sc.net_file))
    edge = [lane.rsplit("_", 1)[0] for lane in layout.lanes]
    flows = Counter[tuple[str, str]]()
    for m, rate in enumerate(timing.movement_flows(sc, layout, begin, end)):
        flows[(edge[layout.mov_in[m]], edge[layout.mov_out[m]])] += float(rate) * 3600
    return dict(flows)


def test_plans_see_flows(tmp_path: Path) -> None:
    """Movement flows from flow-only demand: flows by route, by inline route, and by expectation when random."""
    routed = "\n".join(line for line in CLOCK_FLOWS.splitlines() if 'id="per"' not in line)
    per_hour = movement_per_hour(write_sumocfg(tmp_path, routed, "15:00:00", "16:00:00"), 54000, 57600)
    we = 300 + 100 + 180 + 144  # vph, ph, and the expected vehicles of prob and exp
    assert per_hour[("left0A0", "A0B0")] == pytest.approx(we)
    assert per_hour[("A0B0", "B0right0")] == pytest.approx(we)
    assert per_hour[tuple(SOUTH_NORTH.split()[:2])] == pytest.approx(40)
    half = movement_per_hour(tmp_path / "city.sumocfg", 55800, 57600)  # per hour, over the second half hour
    assert half == pytest.approx(per_hour)
    assert sum(movement_per_hour(tmp_path / "city.sumocfg", 57600, 61200).values()) == 0


def test_plans_see_flows_that_duarouter_routes(tmp_path: Path) -> None:
    """A from/to flow makes the file go through duarouter, which expands flows (drawing the random ones)."""
    per_hour = movement_per_hour(write_sumocfg(tmp_path, CLOCK_FLOWS, "15:00:00", "16:00:00"), 54000, 57600)
    assert per_hour[("top0A1", "A1A0")] == per_hour[("A1A0", "A0bottom0")] == pytest.approx(40)
    assert abs(per_hour[("left0A0", "A0B0")] - (400 + 324)) <= 5 * math.sqrt(324)
    later = movement_per_hour(tmp_path / "city.sumocfg", 55800, 57600)
    assert later[("top0A1", "A1A0")] == 0  # that flow ended at 15:30


def test_profiles_reshape_flow_only_demand(tmp_path: Path) -> None:
    base = resolve(str(write_sumocfg(tmp_path, CLOCK_FLOWS, "15:00:00", "16:00:00")))
    sc = reshape(base, get_profile("flat"), tmp_path / "out", 57600, 59400, peak_factor=1.0, seed=1)
    with open_xml(sc.route_files[0]) as fh:
        root = ET.parse(fh).getroot()
    moved = [e for e in root if e.tag in ("vehicle", "trip")]
    assert not root.findall("flow")
    expected = (300 + 100 + 40 + 40 + 180 + 144) / 2  # the base rate over half an hour
    assert abs(len(moved) - expected) < 5 * math.sqrt(expected)
    assert {e.tag for e in moved} == {"vehicle", "trip"}  # the from/to flow gives trips
    assert all(57600 <= parse_time(e.attrib["depart"], "d") < 59400 for e in moved)
    assert demand_summary(sc)[2] == len(moved)
