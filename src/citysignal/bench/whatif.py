"""What-if: fork the city at time T and race candidate controllers from that fork over a horizon.

The scenario runs from its begin to T under one controller, through the guard, as in a benchmark; there
the twin is forked (`bench.episode.Fork`: SUMO's saved state with every vehicle, and the guard's state).
Every candidate then runs from that fork for the horizon, in parallel on Ray (one SUMO per worker; all
candidates at once, sharing the CPUs, so none waits for another to finish: `run_jobs(together=True)`), and
gets the benchmark metrics of its run, computed the same way for every candidate: RESCO delay and waits
over the vehicles in the twin from T on (those already driving at T included, with the delay they had
gathered before T, which is the same for every candidate). Rows come best first (lowest RESCO delay).

Timing: `wall_s` is a candidate's own run (SUMO start, state load, horizon); `race_wall_s` runs from the
fork to the last result. Ray starts before the scenario runs to T, so both exclude Ray's start-up, as in
the service, where the live twin and Ray are already running.

Candidates are guard-driven controllers, or `plan:FILE`, a plan file from `citysignal plan export` run
as fixed-time through the guard: the period of the plan that runs at T holds for the whole horizon (a
horizon is minutes; a plan's periods are usually an hour), and the plan must keep the net's greens, so
that the guard's state still fits (the active period is written to a temporary file on this machine, so on
a cluster plan candidates need that folder shared with the nodes). SUMO's own programs (`actuated`)
cannot take over a fork, since SUMO does not keep its program's place once the guard has written states.

Mesoscopic fast path (`meso=True`): the whole race, the run to T included, runs on SUMO's mesoscopic
model (`--mesosim`, with `--meso-junction-control` so that traffic lights hold vehicles; without it meso
ignores signals and every candidate would score alike). A meso state cannot be loaded into a microscopic
run or the other way round, hence the run to T in meso too. What libsumo reads under meso (SUMO 1.28,
measured): every lane getter (vehicles, halting, occupancy) reads 0, since meso queues vehicles per edge
segment, not per lane; edge getters and induction loops (`passed`) still count. So only controllers that
decide without lane readings can race there: `fixed` (reads nothing), `webster` (stop-line detector
counts) and plan files; any other is refused before anything runs. The guard runs blind to queues there
(its max-red preemption never fires, its junction-box check sees no vehicle): fixed-time plans serve
every green each cycle, so nothing starves, but the safety counters only check the sequences it writes.
The meso config is written next to the plan files, so on a cluster that folder must be shared too.
"""

from __future__ import annotations

import gzip
import io
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from citysignal.bench.cluster import init_ray
from citysignal.bench.episode import EpisodeResult, Fork, run_episode
from citysignal.bench.parallel import Job, run_jobs
from citysignal.control import make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.parse import read_xml
from citysignal.scenarios import Scenario
from citysignal.twin.faults import FaultSpec
from citysignal.twin.session import DEFAULT_SEED


@dataclass
class WhatIf:
    fork: Fork
    fork_controller: str
    horizon: float
    results: list[EpisodeResult]  # best first
    race_wall_s: float
    meso: bool = False

    def rows(self) -> list[dict[str, object]]:
        """One row per candidate, best first: the bench row plus candidate, at, horizon, model (micro or meso)
        and race_wall_s."""
        head = {"at": self.fork.time, "horizon": self.horizon, "model": "meso" if self.meso else "micro"}
        race = {"race_wall_s": round(self.race_wall_s, 3)}
        return [{"candidate": r.controller, **head, **r.row(), **race} for r in self.results]


PLAN_PREFIX = "plan:"
MESO_CONTROLLERS = frozenset({"fixed", "webster"})  # decide without lane readings (see the module doc)


def check_candidates(names: Sequence[str], policy: Path | None = None, meso: bool = False) -> None:
    """Unknown controllers, SUMO's own programs, missing plans, bad policies and controllers that cannot
    run under meso fail here, before anything runs."""
    if not names:
        raise UserError("no candidates: give --candidates, e.g. ai,maxpressure,fixed")
    if len(set(names)) != len(names):
        raise UserError(f"a candidate is named twice in {','.join(names)}")
    for name in names:
        if name.startswith(PLAN_PREFIX):
            read_xml(Path(name.removeprefix(PLAN_PREFIX)), "plan file")
            continue
        if make_controller(name, policy if name == "ai" else None).sumo_program is not None:
            raise UserError(f"'{name}' is SUMO's own program and cannot take over a fork; choose guard-driven ones")
        if meso and name not in MESO_CONTROLLERS:
            raise UserError(
                f"'{name}' cannot run under --meso: it decides from lane readings, which SUMO's mesoscopic model "
                f"leaves at 0; there choose {', '.join(sorted(MESO_CONTROLLERS))} or plan:FILE"
            )


def race(
    scenario: Scenario,
    at: float,
    horizon: float,
    candidates: Sequence[str],
    controller: str = "ai",
    seed: int = DEFAULT_SEED,
    workers: int = 2,
    address: str | None = None,
    policy: Path | None = None,
    max_red: float = DEFAULT_MAX_RED_S,
    on_done: Callable[[Job, float], None] | None = None,
    meso: bool = False,
) -> WhatIf:
    """Run `scenario` to `at` under `controller`, fork, and run every candidate from the fork for `horizon` s
    (all of it on SUMO's mesoscopic model with `meso`)."""
    if not scenario.begin <= at < scenario.end:
        raise UserError(f"--at {at:g} is outside the window {scenario.begin:g}-{scenario.end:g} s of {scenario.name}")
    if horizon <= 0 or at + horizon > scenario.end:
        room = scenario.end - at
        raise UserError(f"--horizon {horizon:g} must be > 0 and end by the window's end ({room:g} s after --at)")
    check_candidates(candidates, policy, meso)
    if controller.startswith(PLAN_PREFIX):
        raise UserError("--controller runs the city up to the fork: a controller, not a plan")
    check_candidates([controller], policy, meso)
    if address is not None or (workers > 1 and len(candidates) > 1):
        init_ray(workers, address)
    with tempfile.TemporaryDirectory(prefix="citysignal-whatif-") as tmp_name:
        tmp = Path(tmp_name)
        sim = meso_scenario(scenario, tmp) if meso else scenario
        jobs = candidate_jobs(sim.with_window(sim.begin, at + horizon), candidates, at, seed, max_red, policy, tmp)
        lead = run_episode(sim.with_window(sim.begin, at), controller, seed, max_red,
                           policy=policy if controller == "ai" else None, keep_fork=True)  # fmt: skip
        assert lead.fork is not None
        forked = time.perf_counter()
        jobs = [replace(j, start=lead.fork) for j in jobs]
        results = run_jobs(jobs, workers=workers, address=address, on_done=on_done, together=True)
        race_wall = time.perf_counter() - forked
    return WhatIf(lead.fork, controller, horizon, rank(candidates, results), race_wall, meso)


def fork_of_state(at: float, sumo_state: bytes, guard_state: dict[str, Any], lanes: Collection[str]) -> Fork:
    """A fork from state saved elsewhere (the service's snapshot of its live twin). The vehicles on `lanes`
    (the observed ones) are counted from SUMO's state; the lanes digest, which needs halting numbers, is left
    empty: every candidate reads it at its start (`EpisodeResult.start_lanes`)."""
    wanted = set(lanes)
    vehicles = 0
    for _, elem in ET.iterparse(io.BytesIO(gzip.decompress(sumo_state))):
        if elem.tag == "lane":
            if elem.get("id") in wanted:
                listed = elem.find("vehicles")
                vehicles += len((listed.get("value") or "").split()) if listed is not None else 0
            elem.clear()
    return Fork(at, sumo_state, guard_state, "", vehicles)


def candidate_jobs(
    window: Scenario, candidates: Sequence[str], at: float, seed: int, max_red: float, policy: Path | None,
    folder: Path, faults: FaultSpec | None = None,
) -> list[Job]:  # fmt: skip
    """One job per candidate over `window` (its end is the horizon's), in order; a plan's active period is
    written to `folder`. The caller sets each job's `start` to the fork."""
    jobs = [_job(window, c, at, seed, max_red, policy, folder / f"plan{i}.xml") for i, c in enumerate(candidates)]
    return [replace(j, faults=faults) for j in jobs]


def rank(candidates: Sequence[str], results: Sequence[EpisodeResult]) -> list[EpisodeResult]:
    """The candidates' results (in candidate order) best first: lowest RESCO delay."""
    for name, r in zip(candidates, results, strict=True):
        r.controller = name  # a plan runs as fixed-time: its row names the plan
    return sorted(results, key=lambda r: r.metrics["resco_delay"])


def meso_scenario(scenario: Scenario, folder: Path) -> Scenario:
    """`scenario` on SUMO's mesoscopic model: a copy of its config in `folder` with absolute file names
    and meso with junction control switched on (the rest of the config is kept)."""
    root = read_xml(scenario.sumocfg, "SUMO config")
    files = {"net-file": (scenario.net_file,), "route-files": scenario.route_files,
             "additional-files": scenario.additional_files}  # fmt: skip
    for key, paths in files.items():
        for elem in root.iter(key):
            elem.set("value", ",".join(str(p.resolve()) for p in paths))
    for key in ("mesosim", "meso-junction-control"):
        for elem in list(root.iter(key)):
            elem.set("value", "true")
        if next(root.iter(key), None) is None:
            section = root.find("mesoscopic")
            section = ET.SubElement(root, "mesoscopic") if section is None else section
            ET.SubElement(section, key, value="true")
    out = folder / f"{scenario.sumocfg.stem}.meso.sumocfg"
    ET.ElementTree(root).write(out, encoding="unicode")
    return replace(scenario, sumocfg=out)


def _job(window: Scenario, name: str, at: float, seed: int, max_red: float, policy: Path | None, tmp: Path) -> Job:
    if not name.startswith(PLAN_PREFIX):
        return Job(window, name, seed, max_red, policy if name == "ai" else None)
    programs = _plan_at(Path(name.removeprefix(PLAN_PREFIX)), at, tmp)
    planned = replace(window, additional_files=(*window.additional_files, programs))
    greens = [{i.id: i.greens for i in load_network(sc.net_file, sc.additional_files).intersections}
              for sc in (window, planned)]  # fmt: skip
    differ = sorted(k for k in greens[0].keys() | greens[1].keys() if greens[0].get(k) != greens[1].get(k))
    if differ:  # the guard's state from the fork is in the net's greens
        raise UserError(f"{name} does not fit {window.name}: signal {differ[0]} has other greens than the net's")
    return Job(planned, "fixed", seed, max_red)


def _plan_at(plan: Path, at: float, out: Path) -> Path:
    """The programs of `plan` (from `citysignal plan export`) that run at `at`, as an additional file."""
    root = read_xml(plan, "plan file")
    waut = root.find("WAUT")
    active = None
    if waut is not None:
        active = waut.get("startProg")
        for switch in waut.iter("wautSwitch"):
            if float(switch.get("time", "inf")) <= at:
                active = switch.get("to")
    logics = [tl for tl in root.iter("tlLogic") if active is None or tl.get("programID") == active]
    if not logics:
        raise UserError(f"plan file {plan} has no signal program for {at:g} s")
    out.write_text("<additional>\n" + "".join(ET.tostring(tl, encoding="unicode") for tl in logics) + "</additional>\n")
    return out
