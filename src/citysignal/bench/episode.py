"""One benchmark episode: a scenario, a controller and a seed, driven through the safety guard."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from citysignal.bench.metrics import delay_by_depart, trip_metrics
from citysignal.control import SafetyGuard, make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S, GUARD_FIELDS
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.network.plans import write_actuated
from citysignal.scenarios import Scenario
from citysignal.twin import Twin

RECORD_EVERY_S = 10


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
    timings: dict[str, list[float]] = field(default_factory=dict)  # per step, with `timed=True`

    def row(self) -> dict[str, object]:
        from citysignal.bench.metrics import METRIC_KEYS

        return {"scenario": self.scenario, "controller": self.controller, "seed": self.seed,
                **{k: self.metrics[k] for k in METRIC_KEYS}}  # fmt: skip


def run_episode(
    scenario: Scenario,
    controller_name: str,
    seed: int,
    max_red: float = DEFAULT_MAX_RED_S,
    on_step: Callable[[float], None] | None = None,
    policy: Path | None = None,
    snapshot_at: float | None = None,
    timed: bool = False,
) -> EpisodeResult:
    """Run one episode; `on_step(fraction_done)` is called every recorded interval.

    Every `RECORD_EVERY_S` it records the city's queue and each intersection's; at `snapshot_at`
    (default: mid-window) it keeps every observed lane's queue, for congestion maps. With `timed`,
    it keeps each step's seconds in observe / decide / guard (incl. writes) / step."""
    controller = make_controller(controller_name, policy)
    network = load_network(scenario.net_file, scenario.additional_files)
    layout = Layout.from_network(network)
    guard = SafetyGuard(layout, max_red=max_red)
    monitor = controller.sumo_program is not None
    result = EpisodeResult(scenario.name, controller_name, seed, {})
    with tempfile.TemporaryDirectory(prefix="citysignal-run-") as tmp_name:
        tmp = Path(tmp_name)
        tripinfo = tmp / "tripinfo.xml"
        extra = (write_actuated(layout.intersections, tmp / "actuated.add.xml"),) if monitor else ()
        started = time.perf_counter()
        steps = teleports = 0
        snap_t = (scenario.begin + scenario.end) / 2 if snapshot_at is None else snapshot_at
        queue_sum = np.zeros(layout.n_intersections)
        with Twin(scenario, layout, seed=seed, fields=controller.requires | GUARD_FIELDS,
                  tripinfo=tripinfo, extra_additional=extra) as twin:  # fmt: skip
            now = twin.time
            position = twin.program_position()
            controller.reset(layout, position, seed)
            if monitor:
                guard.adopt(now, twin.states())
            else:
                twin.write(guard.start(now, position))
            clock = {"observe": [], "decide": [], "guard": [], "step": []} if timed else None
            while not twin.done:
                now = twin.time
                t0 = time.perf_counter()
                obs = twin.observe(guard.green.copy(), guard.time_in_phase(now))
                t1 = time.perf_counter()
                if monitor:
                    guard.monitor(now, twin.states())
                    t2 = t1
                else:
                    requests = controller.decide(obs)
                    t2 = time.perf_counter()
                    twin.write(guard.apply(now, requests, obs.lane("halting"), obs.lane("passed"), obs.lane("box")))
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
                if clock is not None:
                    t5 = time.perf_counter()
                    for key, dt in (("observe", t1 - t0), ("decide", t2 - t1), ("guard", t3 - t2), ("step", t5 - t4)):
                        clock[key].append(dt)
                teleports += twin.teleports_started()
                steps += 1
            result.timings = clock or {}
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
        wall_s=round(wall, 3),
        steps_per_s=round(steps / wall, 1) if wall > 0 else 0.0,
    )
    result.metrics = metrics
    result.violation_log = guard.stats.violation_log
    return result
