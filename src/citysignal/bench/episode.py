"""One benchmark episode: a scenario, a controller and a seed, driven through the safety guard.

Every episode profiles itself within the same run (perf_counter around each part of each step):
`control_s` is observe + decide + guard (incl. the signal writes), `sumo_step_s` is libsumo's
`simulationStep`, and the decision latencies `decide_p50_ms` / `decide_p99_ms` are over decision steps
only (steps where the controller requested some green; a step where every intersection holds is not a
decision). Bookkeeping for reports (queues every `RECORD_EVERY_S`) belongs to neither. `peak_rss_mb` is
the process's peak resident memory from the start of the episode (on Linux the high-water mark is reset
at the start, so a Ray worker that ran a bigger episode before does not report that one's peak; elsewhere
it is the process's peak so far). libsumo runs SUMO in this process, so SUMO's memory is included.

Forks (for what-if runs): an episode run with `keep_fork` ends with a `Fork` of the twin at its end: SUMO's
saved state and the guard's, taken at one step boundary. An episode run with `start=fork` begins there:
SUMO loads the state, the guard continues its sequences and writes the states it was showing again (SUMO
does not keep states set from outside), and the controller starts fresh from the greens shown. Its guard
counters count from the fork. SUMO's random numbers restart from the seed (the state does not carry them),
the same for every run from one fork.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from citysignal.bench.metrics import delay_by_depart, trip_metrics
from citysignal.control import SafetyGuard, make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S, GUARD_FIELDS, HOLD, GuardStats
from citysignal.control.health import DetectorSupervisor
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.network.plans import write_actuated
from citysignal.scenarios import Scenario
from citysignal.twin import Twin
from citysignal.twin.faults import DetectorFaults, FaultSpec
from citysignal.twin.observation import Observation, ProgramPosition

RECORD_EVERY_S = 10


@dataclass(frozen=True)
class Fork:
    """A twin at one step boundary: SUMO's state (gzip XML), the guard's state, and what was on the lanes."""

    time: float
    sumo_state: bytes
    guard_state: dict[str, Any]
    lanes: str  # digest of the vehicles and halting vehicles on every lane (`lanes_digest`)
    vehicles: int  # on the observed lanes


def lanes_digest(obs: Observation) -> str:
    """Equal for two twins with the same vehicles on the same lanes, halting alike."""
    return hashlib.sha256(obs.lane("vehicles").tobytes() + obs.lane("halting").tobytes()).hexdigest()[:16]


def guard_position(layout: Layout, guard: SafetyGuard, now: float) -> ProgramPosition:
    """Where each intersection stands, as a program position a controller's `reset` understands: the first
    program phase of the green showing (or of the green a transition leads to), and for how long it shows."""
    phase = np.zeros(layout.n_intersections, dtype=np.int64)
    elapsed = np.zeros(layout.n_intersections)
    for k, inter in enumerate(layout.intersections):
        g = int(guard.green[k]) if guard.green[k] >= 0 else int(guard.target[k])
        if g >= 0:
            phase[k] = inter.program_green_index.index(g)
            elapsed[k] = float(now - guard.since[k]) if guard.green[k] >= 0 else 0.0
    return ProgramPosition(phase, elapsed)


@dataclass
class EpisodeResult:
    scenario: str
    controller: str
    seed: int
    metrics: dict[str, float]
    queue_t: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    delay_t: list[float] = field(default_factory=list)
    delay: list[float] = field(default_factory=list)
    violation_log: list[str] = field(default_factory=list)
    intersection_queue: dict[str, float] = field(default_factory=dict)  # mean over the episode
    snapshot_time: float = 0.0
    snapshot: dict[str, float] = field(default_factory=dict)  # lane -> halting at snapshot_time
    timings: dict[str, float] = field(default_factory=dict)  # seconds in observe / decide / guard / step
    controller_stats: dict[str, float] = field(default_factory=dict)  # `Controller.stats()`, also in metrics
    start_lanes: str = ""  # `lanes_digest` at the start, for runs from a fork
    fork: Fork | None = None  # with `keep_fork`: the twin at the end

    def row(self) -> dict[str, object]:
        from citysignal.bench.metrics import METRIC_KEYS

        return {"scenario": self.scenario, "controller": self.controller, "seed": self.seed,
                **{k: self.metrics[k] for k in METRIC_KEYS}, **self.controller_stats}  # fmt: skip


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets the high-water mark (VmHWM) to the current size
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, the fallback elsewhere


def run_episode(
    scenario: Scenario,
    controller_name: str,
    seed: int,
    max_red: float = DEFAULT_MAX_RED_S,
    on_step: Callable[[float], None] | None = None,
    policy: Path | None = None,
    snapshot_at: float | None = None,
    faults: FaultSpec | None = None,
    start: Fork | None = None,
    keep_fork: bool = False,
) -> EpisodeResult:
    """Run one episode; `on_step(fraction_done)` is called every recorded interval.

    Every `RECORD_EVERY_S` it records the city's queue and each intersection's; at `snapshot_at`
    (default: mid-window) it keeps every observed lane's queue, for congestion maps. With `faults`
    (fraction 0 included) the controller and the guard see the faulty detectors through a
    `DetectorSupervisor`; the records and metrics always come from the true readings. With `start`, the
    episode begins at that fork (the scenario's begin is replaced by the fork's time); with `keep_fork`,
    the result carries a `Fork` of the twin at the end."""
    _reset_peak_rss()
    if start is not None:
        scenario = scenario.with_window(start.time, scenario.end)
    controller = make_controller(controller_name, policy)
    network = load_network(scenario.net_file, scenario.additional_files)
    layout = Layout.from_network(network)
    guard = SafetyGuard(layout, max_red=max_red)
    monitor = controller.sumo_program is not None
    supervisor = DetectorSupervisor(controller) if faults is not None and not monitor else None
    faulty = DetectorFaults(faults, layout, scenario.begin) if supervisor is not None and faults else None
    decider = supervisor or controller
    if monitor and (start is not None or keep_fork):
        raise UserError(f"'{controller_name}' is SUMO's own program: it cannot run from or leave a fork")
    fields = decider.requires | GUARD_FIELDS | ({"vehicles"} if start is not None or keep_fork else set())
    result = EpisodeResult(scenario.name, controller_name, seed, {})
    with tempfile.TemporaryDirectory(prefix="citysignal-run-") as tmp_name:
        tmp = Path(tmp_name)
        tripinfo = tmp / "tripinfo.xml"
        extra = (write_actuated(layout.intersections, tmp / "actuated.add.xml"),) if monitor else ()
        started = time.perf_counter()
        steps = teleports = 0
        snap_t = (scenario.begin + scenario.end) / 2 if snapshot_at is None else snapshot_at
        queue_sum = np.zeros(layout.n_intersections)
        with Twin(scenario, layout, seed=seed, fields=fields, tripinfo=tripinfo, extra_additional=extra) as twin:
            now = twin.time
            if start is not None:
                twin.load_state(start.sumo_state)
                guard.restore(start.guard_state)
                guard.stats = GuardStats()
                twin.write(dict(enumerate(guard.shown)))
                position = guard_position(layout, guard, now)
            else:
                position = twin.program_position()
            decider.reset(layout, position, seed)
            if monitor:
                guard.adopt(now, twin.states())
            elif start is None:
                twin.write(guard.start(now, position))
            clock = dict.fromkeys(("observe", "decide", "guard", "step"), 0.0)
            decide_ms = array("d")  # decision steps only: at most one float per step
            while not twin.done:
                now = twin.time
                t0 = time.perf_counter()
                obs = twin.observe(guard.green.copy(), guard.time_in_phase(now))
                t1 = time.perf_counter()
                if start is not None and steps == 0:
                    result.start_lanes = lanes_digest(obs)
                if monitor:
                    guard.monitor(now, twin.states())
                    t2 = t1
                else:
                    seen = faulty.apply(obs) if faulty is not None else obs
                    requests = decider.decide(seen)
                    t2 = time.perf_counter()
                    halting, passed = (
                        supervisor.guard_inputs(seen) if supervisor else (obs.lane("halting"), obs.lane("passed"))
                    )
                    twin.write(guard.apply(now, requests, halting, passed, obs.lane("box")))
                    if (requests != HOLD).any():
                        decide_ms.append((t2 - t1) * 1e3)
                t3 = time.perf_counter()
                if steps % RECORD_EVERY_S == 0:
                    halting = obs.lane("halting")
                    result.queue_t.append(now)
                    result.queue.append(float(halting.sum()))
                    queue_sum += layout.queue_per_intersection(halting)
                    if not result.snapshot and now >= snap_t:
                        result.snapshot_time = now
                        result.snapshot = dict(zip(layout.lanes, halting.tolist(), strict=True))
                    if on_step is not None:
                        on_step((now - scenario.begin) / (scenario.end - scenario.begin))
                t4 = time.perf_counter()
                twin.step()
                t5 = time.perf_counter()
                clock["observe"] += t1 - t0
                clock["decide"] += t2 - t1
                clock["guard"] += t3 - t2
                clock["step"] += t5 - t4
                teleports += twin.teleports_started()
                steps += 1
            result.timings = clock
            if keep_fork:
                obs = twin.observe(guard.green.copy(), guard.time_in_phase(twin.time))
                count = int(obs.lane("vehicles").sum())
                result.fork = Fork(twin.time, twin.save_state(), guard.state(), lanes_digest(obs), count)
        wall = time.perf_counter() - started
        metrics: dict[str, float] = dict(trip_metrics(tripinfo))
        result.delay_t, result.delay = delay_by_depart(tripinfo, scenario.begin, scenario.end)
    samples = max(len(result.queue), 1)
    result.intersection_queue = dict(zip(layout.ids, (queue_sum / samples).tolist(), strict=True))
    metrics.update(
        max_queue=max(result.queue, default=0.0),
        teleports=teleports,
        safety_violations=guard.stats.violations,
        refused=guard.stats.refused,
        deferred=guard.stats.deferred,
        max_red_preemptions=guard.stats.max_red_preemptions,
        clearance_extensions=guard.stats.clearance_extensions,
        prevented=guard.stats.prevented,
        wall_s=round(wall, 3),
        steps_per_s=round(steps / wall, 1) if wall > 0 else 0.0,
        control_s=round(clock["observe"] + clock["decide"] + clock["guard"], 4),
        sumo_step_s=round(clock["step"], 4),
        decide_p50_ms=round(float(np.percentile(decide_ms, 50)), 4) if decide_ms else 0.0,
        decide_p99_ms=round(float(np.percentile(decide_ms, 99)), 4) if decide_ms else 0.0,
        decisions=len(decide_ms),
        peak_rss_mb=round(_peak_rss_mb(), 1),
    )
    result.controller_stats = dict(decider.stats())
    metrics.update(result.controller_stats)
    result.metrics = metrics
    result.violation_log = guard.stats.violation_log
    return result
