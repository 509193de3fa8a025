"""One benchmark episode: a scenario, a controller and a seed, driven through the safety guard.

The episode is the control loop (`citysignal.loop.ControlLoop`) over the SUMO twin, with a recorder for
the reports. Every episode profiles itself within the same run (the loop's clock around each part of each step):
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
from citysignal.control.priority import REACH_M as PRIORITY_REACH_M
from citysignal.control.priority import Priority
from citysignal.errors import UserError
from citysignal.loop import ControlLoop, Tick, deferrable
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.network.plans import write_actuated
from citysignal.scenarios import Scenario
from citysignal.scenarios.priority import PriorityDemand, write_priority_vehicles
from citysignal.twin import Twin
from citysignal.twin.faults import DetectorFaults, FaultSpec
from citysignal.twin.observation import Observation

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
        from citysignal.bench.metrics import METRIC_KEYS, PRIORITY_KEYS

        priority = {k: self.metrics[k] for k in PRIORITY_KEYS if k in self.metrics}
        return {"scenario": self.scenario, "controller": self.controller, "seed": self.seed,
                **{k: self.metrics[k] for k in METRIC_KEYS}, **priority, **self.controller_stats}  # fmt: skip


class _Recorder:
    """An episode's records, every `RECORD_EVERY_S` steps: the city's queue, each intersection's (summed),
    every observed lane's queue once at the snapshot time, and the progress callback."""

    def __init__(
        self,
        result: EpisodeResult,
        layout: Layout,
        scenario: Scenario,
        snapshot_at: float | None,
        on_step: Callable[[float], None] | None,
        first_lanes: bool,
    ) -> None:
        self.result = result
        self.layout = layout
        self.scenario = scenario
        self.snapshot_at = (scenario.begin + scenario.end) / 2 if snapshot_at is None else snapshot_at
        self.on_step = on_step
        self.first_lanes = first_lanes  # keep `lanes_digest` of the first step (runs from a fork)
        self.queue_sum = np.zeros(layout.n_intersections)

    def __call__(self, tick: Tick) -> None:
        result, now = self.result, tick.time
        if self.first_lanes and tick.step == 0:
            result.start_lanes = lanes_digest(tick.obs)
        if tick.step % RECORD_EVERY_S:
            return
        halting = tick.obs.lane("halting")
        result.queue_t.append(now)
        result.queue.append(float(halting.sum()))
        self.queue_sum += self.layout.queue_per_intersection(halting)
        if not result.snapshot and now >= self.snapshot_at:
            result.snapshot_time = now
            result.snapshot = dict(zip(self.layout.lanes, halting.tolist(), strict=True))
        if self.on_step is not None:
            sc = self.scenario
            self.on_step((now - sc.begin) / (sc.end - sc.begin))


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
    priority: PriorityDemand | None = None,
    priority_on: bool = True,
) -> EpisodeResult:
    """Run one episode; `on_step(fraction_done)` is called every recorded interval.

    Every `RECORD_EVERY_S` it records the city's queue and each intersection's; at `snapshot_at`
    (default: mid-window) it keeps every observed lane's queue, for congestion maps. With `faults`
    (fraction 0 included) the controller and the guard see the faulty detectors through a
    `DetectorSupervisor`; the records and metrics always come from the true readings. With `start`, the
    episode begins at that fork (the scenario's begin is replaced by the fork's time); with `keep_fork`,
    the result carries a `Fork` of the twin at the end. With `priority`, emergency vehicles and buses join
    the scenario's traffic (`scenarios.priority`) and get preemption and priority unless `priority_on` is
    False (the baseline: the same vehicles, no priority)."""
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
    vehicles = priority is not None and not priority.empty
    if monitor and vehicles and priority_on:
        raise UserError(f"'{controller_name}' is SUMO's own program: it cannot give priority (add --no-priority)")
    fields = decider.requires | GUARD_FIELDS | ({"vehicles"} if start is not None or keep_fork else set())
    defer = deferrable(decider)
    result = EpisodeResult(scenario.name, controller_name, seed, {})
    record = _Recorder(result, layout, scenario, snapshot_at, on_step, first_lanes=start is not None)
    with tempfile.TemporaryDirectory(prefix="citysignal-run-") as tmp_name:
        tmp = Path(tmp_name)
        tripinfo = tmp / "tripinfo.xml"
        extra: tuple[Path, ...] = (write_actuated(layout.intersections, tmp / "actuated.add.xml"),) if monitor else ()
        if priority is not None and vehicles:
            extra += (write_priority_vehicles(scenario, priority, tmp / "priority.add.xml"),)
        helper = Priority(layout, enabled=priority_on) if vehicles else None
        started = time.perf_counter()
        teleports = 0
        reach = PRIORITY_REACH_M if helper is not None else None
        with Twin(scenario, layout, seed=seed, fields=fields, tripinfo=tripinfo, extra_additional=extra,
                  priority_reach=reach, defer=defer) as twin:  # fmt: skip
            loop = ControlLoop(twin, guard, decider, monitor=monitor, faults=faulty, recorder=record, priority=helper)
            if start is not None:
                loop.resume(start.sumo_state, start.guard_state, seed)
                guard.stats = GuardStats()  # counters count from the fork
            else:
                loop.start(seed)
            decide_ms = array("d")  # decision steps only: at most one float per step
            while not loop.done:
                tick = loop.tick()
                if tick.requests is not None and (tick.requests != HOLD).any():
                    decide_ms.append(tick.decide_s * 1e3)
                teleports += twin.teleports_started()
            steps, clock = loop.steps, dict(loop.clock)
            result.timings = clock
            if keep_fork:
                obs = loop.observe()
                state, guard_state = loop.save()
                count = int(obs.lane("vehicles").sum())
                result.fork = Fork(twin.time, state, guard_state, lanes_digest(obs), count)
        wall = time.perf_counter() - started
        metrics: dict[str, float] = dict(trip_metrics(tripinfo))
        result.delay_t, result.delay = delay_by_depart(tripinfo, scenario.begin, scenario.end)
    samples = max(len(result.queue), 1)
    result.intersection_queue = dict(zip(layout.ids, (record.queue_sum / samples).tolist(), strict=True))
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
    if helper is not None:
        metrics.update(helper.counts)
    result.controller_stats = dict(decider.stats())
    metrics.update(result.controller_stats)
    result.metrics = metrics
    result.violation_log = guard.stats.violation_log
    return result
