"""What-if: fork the twin, race candidates from the same vehicles, and agree with `bench` from the begin."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from citysignal.bench.episode import run_episode
from citysignal.bench.metrics import METRIC_KEYS
from citysignal.bench.whatif import _plan_at, fork_of_state, race
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import resolve

CLI = [sys.executable, "-m", "citysignal"]
TIMING = {"wall_s", "steps_per_s", "control_s", "sumo_step_s", "decide_p50_ms", "decide_p99_ms", "peak_rss_mb"}


def test_candidates_start_from_the_forks_vehicles() -> None:
    sc = resolve("cologne3", 25200, 26400)
    w = race(sc, 25800, 300, ["fixed", "maxpressure"], controller="maxpressure", workers=1)
    assert w.fork.time == 25800 and w.fork.vehicles > 20  # the city is busy at the fork
    assert [r.start_lanes for r in w.results] == [w.fork.lanes, w.fork.lanes]
    assert {r.controller for r in w.results} == {"fixed", "maxpressure"}
    delays = [r.metrics["resco_delay"] for r in w.results]
    assert delays == sorted(delays) and delays[0] < delays[1]  # best first, and the candidates did differ
    for r in w.results:
        assert r.queue_t[0] == 25800 and r.queue_t[-1] < 26100  # the horizon, not the window
        assert r.metrics["vehicles"] >= w.fork.vehicles  # every vehicle driving at T is counted
        assert r.metrics["safety_violations"] == 0
    rows = w.rows()
    assert [row["candidate"] for row in rows] == [r.controller for r in w.results]
    for row in rows:
        assert {"candidate", "at", "horizon", "race_wall_s", *METRIC_KEYS} <= set(row)
        assert row["at"] == 25800 and row["horizon"] == 300
    assert rows[0]["race_wall_s"] >= sum(float(row["wall_s"]) for row in rows)  # one after the other here


def test_a_fork_of_saved_state_counts_the_vehicles_the_twin_observed() -> None:
    sc = resolve("cologne3", 25200, 25800)
    lead = run_episode(sc, "maxpressure", 23423, keep_fork=True)
    assert lead.fork is not None and lead.fork.vehicles > 20
    lanes = Layout.from_network(load_network(sc.net_file, sc.additional_files)).lanes
    fork = fork_of_state(lead.fork.time, lead.fork.sumo_state, lead.fork.guard_state, lanes)
    assert (fork.time, fork.vehicles) == (lead.fork.time, lead.fork.vehicles)  # the service's forks (its snapshots)


def test_a_fork_at_the_begin_run_to_the_end_is_the_bench_row() -> None:
    sc = resolve("cologne1", 25200, 25500)
    w = race(sc, 25200, 300, ["fixed", "maxpressure"], controller="ai", workers=1)
    for r in w.results:
        bench = run_episode(sc, r.controller, r.seed).row()
        row = r.row()
        keys = [k for k in METRIC_KEYS if k not in TIMING]
        assert {k: row[k] for k in keys} == {k: bench[k] for k in keys}


@pytest.mark.parametrize(
    ("at", "horizon", "candidates", "message"),
    [
        (25000, 60, ["fixed"], "outside the window"),
        (25400, 200, ["fixed"], "end by the window's end"),
        (25200, 60, ["fixed", "actuated"], "SUMO's own program"),
        (25200, 60, ["fixed", "genius"], "unknown controller 'genius'"),
        (25200, 60, ["fixed", "fixed"], "named twice"),
        (25200, 60, ["fixed", "plan:/nowhere/plans.add.xml"], "plan file not found"),
    ],
)
def test_bad_requests_fail_before_anything_runs(at: float, horizon: float, candidates: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        race(resolve("cologne1", 25200, 25500), at, horizon, candidates, workers=1)


def _export_plan(scenario: str, out: Path, *periods: str) -> Path:
    args = [a for period in periods for a in ("--period", period)]
    proc = subprocess.run([*CLI, "plan", "export", scenario, "--out", str(out), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_plan_candidate_runs_the_plans_period_at_the_fork(tmp_path: Path) -> None:
    plan = _export_plan("cologne3", tmp_path / "plans.add.xml", "07:00-07:30", "07:30-08:00")
    for at, program in ((26900, "tod_0700"), (27100, "tod_0730")):
        active = _plan_at(plan, at, tmp_path / "active.add.xml")
        assert {tl.get("programID") for tl in ET.parse(active).getroot().iter("tlLogic")} == {program}
    name = f"plan:{plan}"
    w = race(resolve("cologne3", 25200, 28800), 27100, 300, ["fixed", name], controller="fixed", workers=1)
    by_name = {r.controller: r for r in w.results}
    assert set(by_name) == {"fixed", name}
    assert by_name[name].start_lanes == by_name["fixed"].start_lanes == w.fork.lanes
    assert by_name[name].metrics["safety_violations"] == 0
    assert by_name[name].metrics["resco_delay"] != by_name["fixed"].metrics["resco_delay"]  # Webster's, not the net's
    assert [row["candidate"] for row in w.rows()] == [r.controller for r in w.results]


def test_a_plan_of_another_net_is_refused(tmp_path: Path) -> None:
    plan = _export_plan("cologne1", tmp_path / "other.add.xml", "07:00-07:30")
    with pytest.raises(UserError, match="does not fit cologne3"):
        race(resolve("cologne3", 25200, 25500), 25200, 60, ["fixed", f"plan:{plan}"], workers=1)


def test_cli_races_on_ray_and_prints_one_row_per_candidate_best_first() -> None:
    args = ["whatif", "cologne1", "--at", "7:00:30", "--horizon", "120", "--candidates", "fixed,maxpressure",
            "--controller", "fixed", "--json", "--workers", "2"]  # fmt: skip
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(row["candidate"] for row in rows) == ["fixed", "maxpressure"]
    assert rows[0]["resco_delay"] <= rows[1]["resco_delay"]
    for row in rows:
        assert row["at"] == 25230 and row["horizon"] == 120 and row["safety_violations"] == 0
        assert 0 < row["wall_s"] <= row["race_wall_s"]


def test_cli_bad_time_is_one_line() -> None:
    proc = subprocess.run([*CLI, "whatif", "cologne1", "--at", "soon", "--horizon", "60"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--at" in proc.stderr


def test_meso_races_from_a_meso_fork() -> None:
    w = race(resolve("cologne3", 25200, 26400), 25800, 300, ["fixed", "webster"], controller="fixed", workers=1,
             meso=True)  # fmt: skip
    assert b'<snapshot type="meso"' in gzip.decompress(w.fork.sumo_state)  # the run to T was mesoscopic too
    rows = w.rows()
    assert {row["candidate"] for row in rows} == {"fixed", "webster"} and {row["model"] for row in rows} == {"meso"}
    for r in w.results:
        assert r.queue_t[0] == 25800 and r.metrics["arrived"] > 0 and r.metrics["safety_violations"] == 0
    micro = race(resolve("cologne3", 25200, 26400), 25800, 300, ["fixed"], controller="fixed", workers=1)
    assert micro.rows()[0]["model"] == "micro"
    meso_fixed = next(r for r in w.results if r.controller == "fixed")
    assert micro.results[0].metrics["resco_delay"] != meso_fixed.metrics["resco_delay"]  # another traffic model


@pytest.mark.parametrize(("candidates", "controller"), [(["fixed", "maxpressure"], "fixed"), (["fixed"], "ai")])
def test_meso_refuses_controllers_that_read_lanes(candidates: list[str], controller: str) -> None:
    with pytest.raises(UserError, match="cannot run under --meso"):
        race(resolve("cologne1", 25200, 25500), 25200, 60, candidates, controller=controller, workers=1, meso=True)


def test_cli_meso_with_the_default_controller_is_one_line() -> None:
    proc = subprocess.run([*CLI, "whatif", "cologne1", "--at", "7:00:30", "--horizon", "60", "--candidates",
                           "fixed,webster", "--meso"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--controller: 'ai' cannot run under --meso" in proc.stderr
