"""What-if: fork the city at time T and race candidate controllers from that fork over a horizon.

The scenario runs from its begin to T under one controller, through the guard, as in a benchmark; there
the twin is forked (`bench.episode.Fork`: SUMO's saved state with every vehicle, and the guard's state).
Every candidate then runs from that fork for the horizon, in parallel on Ray (one SUMO per worker), and
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
"""

from __future__ import annotations

import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from citysignal.bench.cluster import init_ray
from citysignal.bench.episode import EpisodeResult, Fork, run_episode
from citysignal.bench.parallel import Job, run_jobs
from citysignal.control import make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.parse import read_xml
from citysignal.scenarios import Scenario
from citysignal.twin.session import DEFAULT_SEED


@dataclass
class WhatIf:
    fork: Fork
    fork_controller: str
    horizon: float
    results: list[EpisodeResult]  # best first
    race_wall_s: float

    def rows(self) -> list[dict[str, object]]:
        """One row per candidate, best first: the bench row plus candidate, at, horizon and race_wall_s."""
        head = {"at": self.fork.time, "horizon": self.horizon}
        race = {"race_wall_s": round(self.race_wall_s, 3)}
        return [{"candidate": r.controller, **head, **r.row(), **race} for r in self.results]


PLAN_PREFIX = "plan:"


def check_candidates(names: Sequence[str], policy: Path | None = None) -> None:
    """Unknown controllers, SUMO's own programs, missing plans and bad policies fail here, before anything runs."""
    if not names:
        raise UserError("no candidates: give --candidates, e.g. ai,maxpressure,fixed")
    if len(set(names)) != len(names):
        raise UserError(f"a candidate is named twice in {','.join(names)}")
    for name in names:
        if name.startswith(PLAN_PREFIX):
            read_xml(Path(name.removeprefix(PLAN_PREFIX)), "plan file")
        elif make_controller(name, policy if name == "ai" else None).sumo_program is not None:
            raise UserError(f"'{name}' is SUMO's own program and cannot take over a fork; choose guard-driven ones")


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
) -> WhatIf:
    """Run `scenario` to `at` under `controller`, fork, and run every candidate from the fork for `horizon` s."""
    if not scenario.begin <= at < scenario.end:
        raise UserError(f"--at {at:g} is outside the window {scenario.begin:g}-{scenario.end:g} s of {scenario.name}")
    if horizon <= 0 or at + horizon > scenario.end:
        room = scenario.end - at
        raise UserError(f"--horizon {horizon:g} must be > 0 and end by the window's end ({room:g} s after --at)")
    check_candidates(candidates, policy)
    if controller.startswith(PLAN_PREFIX):
        raise UserError("--controller runs the city up to the fork: a controller, not a plan")
    check_candidates([controller], policy)
    if address is not None or (workers > 1 and len(candidates) > 1):
        init_ray(workers, address)
    window = scenario.with_window(scenario.begin, at + horizon)
    with tempfile.TemporaryDirectory(prefix="citysignal-whatif-") as tmp:
        jobs = [_job(window, c, at, seed, max_red, policy, Path(tmp) / f"{i}.xml") for i, c in enumerate(candidates)]
        lead = run_episode(scenario.with_window(scenario.begin, at), controller, seed, max_red,
                           policy=policy if controller == "ai" else None, keep_fork=True)  # fmt: skip
        assert lead.fork is not None
        forked = time.perf_counter()
        jobs = [replace(j, start=lead.fork) for j in jobs]
        results = run_jobs(jobs, workers=workers, address=address, on_done=on_done)
        race_wall = time.perf_counter() - forked
    for name, r in zip(candidates, results, strict=True):
        r.controller = name  # a plan runs as fixed-time: its row names the plan
    ranked = sorted(results, key=lambda r: r.metrics["resco_delay"])
    return WhatIf(lead.fork, controller, horizon, ranked, race_wall)


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
