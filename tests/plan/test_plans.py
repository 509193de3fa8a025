"""Fixed-time fallback plans: Webster against the analytic formula, and the files load and run in SUMO."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scenario_files import CLOCK_FLOWS, write_sumocfg

from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.plan import timing
from citysignal.plan.export import write_plans
from citysignal.scenarios import load_sumocfg, resolve
from citysignal.sumo_home import binary

FLOWS_VEH_H = {("left0A0", "A0right0"): 600, ("right0A0", "A0left0"): 300,
               ("top0A0", "A0bottom0"): 400, ("bottom0A0", "A0top0"): 200}  # fmt: skip


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One signalized 4-arm junction, one lane per arm, straight-through demand only."""
    folder = tmp_path_factory.mktemp("iso")
    subprocess.run(
        [binary("netgenerate"), "--grid", "--grid.x-number", "1", "--grid.y-number", "1",
         "--grid.attach-length", "300", "--default-junction-type", "traffic_light", "--no-turnarounds",
         "-o", str(folder / "iso.net.xml")],
        check=True, capture_output=True,
    )  # fmt: skip
    rows = []
    for k, ((a, b), per_hour) in enumerate(FLOWS_VEH_H.items()):
        for t in np.arange(0, 3600, 3600 / per_hour):
            rows.append((float(t), f'<vehicle id="v{k}_{t:.0f}" depart="{t:.1f}"><route edges="{a} {b}"/></vehicle>'))
    (folder / "iso.rou.xml").write_text("<routes>" + "".join(r for _, r in sorted(rows)) + "</routes>")
    (folder / "iso.sumocfg").write_text(
        '<configuration><input><net-file value="iso.net.xml"/><route-files value="iso.rou.xml"/></input>'
        '<time><begin value="0"/><end value="3600"/></time></configuration>'
    )
    return folder / "iso.sumocfg"


def test_webster_cycle_on_an_isolated_intersection_matches_the_formula(isolated: Path, tmp_path: Path) -> None:
    sc = load_sumocfg(isolated)
    layout = Layout.from_network(load_network(sc.net_file))
    plans = timing.webster_plans(layout, timing.movement_flows(sc, layout, 0, 3600))
    (plan,) = plans
    s = 1800.0
    y_ns = max(400, 200) / s  # the green serving north-south through traffic
    y_ew = max(600, 300) / s
    lost = 2 * 3.0  # two yellows of 3 s in the net's program
    cycle = (1.5 * lost + 5) / (1 - (y_ns + y_ew))
    greens = {round(y, 4): d for y, d in zip(plan.ratios, plan.durations, strict=True)}
    assert sorted(greens) == [round(y_ns, 4), round(y_ew, 4)]
    assert plan.lost_time == lost
    assert abs(plan.cycle - cycle) <= 1.0  # greens are whole seconds
    assert abs(greens[round(y_ew, 4)] - (cycle - lost) * y_ew / (y_ns + y_ew)) <= 0.5
    assert abs(greens[round(y_ns, 4)] - (cycle - lost) * y_ns / (y_ns + y_ew)) <= 0.5

    out = write_plans([(0.0, plans)], tmp_path / "iso_plans.add.xml")
    logic = ET.parse(out).getroot().find("tlLogic")
    assert logic is not None
    assert abs(sum(float(p.get("duration", 0)) for p in logic.iter("phase")) - cycle) <= 1.0


def test_time_of_day_plans_load_and_run_in_sumo(tmp_path: Path) -> None:
    out = tmp_path / "cologne8_plans.add.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "citysignal", "plan", "export", "cologne8", "--out", str(out),
         "--period", "07:00-07:30", "--period", "07:30-08:00"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(out).getroot()
    assert len(root.findall("tlLogic")) == 2 * 8
    assert {w.get("to") for w in root.iter("wautSwitch")} == {"tod_0700", "tod_0730"}
    data = Path(__file__).resolve().parents[2] / "src" / "citysignal" / "scenarios" / "data" / "cologne8"
    tripinfo = tmp_path / "trips.xml"
    run = subprocess.run(
        [binary("sumo"), "-n", str(data / "cologne8.net.xml.gz"), "-r", str(data / "cologne8.rou.xml.gz"),
         "-a", str(out), "-b", "25200", "-e", "27000", "--tripinfo-output", str(tripinfo), "--no-step-log",
         "--time-to-teleport", "-1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Error" not in run.stderr
    assert len(ET.parse(tripinfo).getroot().findall("tripinfo")) > 500


def test_green_wave_offsets_follow_travel_times() -> None:
    sc = resolve("arterial4x4")
    network = load_network(sc.net_file)
    layout = Layout.from_network(network)
    flows = timing.movement_flows(sc, layout, 0, 3600)
    plans = timing.coordinate(network, layout, timing.webster_plans(layout, flows), flows)
    cycles = {p.cycle for p in plans}
    assert max(cycles) - min(cycles) <= len(plans[0].greens)  # a common cycle, up to rounding
    assert len({round(p.offset) for p in plans}) > 4  # offsets differ along the arterials
    assert all(0 <= p.offset < max(cycles) for p in plans)


def test_bad_period_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citysignal", "plan", "export", "cologne8", "--out", str(tmp_path / "x.xml"),
         "--period", "08:00-07:00"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_plans_for_clock_time_periods_of_a_flow_only_scenario(tmp_path: Path) -> None:
    cfg = write_sumocfg(tmp_path, CLOCK_FLOWS, "15:00:00", "16:00:00")
    out = tmp_path / "plans.add.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "citysignal", "plan", "export", str(cfg), "--out", str(out),
         "--period", "15:00-15:30", "--period", "15:30:00-57600"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(out).getroot()
    assert [(w.get("time"), w.get("to")) for w in root.iter("wautSwitch")] == [
        ("54000", "tod_1500"), ("55800", "tod_1530")
    ]
    assert len(root.findall("tlLogic")) == 2 * 4
