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

Candidates are guard-driven controllers; SUMO's own programs (`actuated`) cannot take over a fork, since
SUMO does not keep its program's place once the guard has written states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from citysignal.bench.cluster import init_ray
from citysignal.bench.episode import EpisodeResult, Fork, run_episode
from citysignal.bench.parallel import Job, run_jobs
from citysignal.control import make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
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


def check_candidates(names: Sequence[str], policy: Path | None = None) -> None:
    """Unknown controllers, SUMO's own programs and bad policies fail here, before anything runs."""
    if not names:
        raise UserError("no candidates: give --candidates, e.g. ai,maxpressure,fixed")
    if len(set(names)) != len(names):
        raise UserError(f"a candidate is named twice in {','.join(names)}")
    for name in names:
        if make_controller(name, policy if name == "ai" else None).sumo_program is not None:
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
    check_candidates([controller], policy)
    if address is not None or (workers > 1 and len(candidates) > 1):
        init_ray(workers, address)
    lead = run_episode(scenario.with_window(scenario.begin, at), controller, seed, max_red,
                       policy=policy if controller == "ai" else None, keep_fork=True)  # fmt: skip
    assert lead.fork is not None
    forked = time.perf_counter()
    window = scenario.with_window(scenario.begin, at + horizon)
    jobs = [Job(window, c, seed, max_red, policy if c == "ai" else None, start=lead.fork) for c in candidates]
    results = run_jobs(jobs, workers=workers, address=address, on_done=on_done)
    race_wall = time.perf_counter() - forked
    ranked = sorted(results, key=lambda r: r.metrics["resco_delay"])
    return WhatIf(lead.fork, controller, horizon, ranked, race_wall)
