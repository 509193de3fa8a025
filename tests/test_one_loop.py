"""One control loop: a benchmark episode, the learning core and the service engine, given the same controller,
seed and window, drive the city identically, step for step.

Each path runs the real thing (SUMO through libsumo): `run_episode`, `CityCore` with the controller as background
on every intersection, and a `ControlEngine` thread at full speed, each in a fresh process: libsumo 1.28 does not
repeat a simulation exactly when an earlier one ran in the same process (measured: the same cologne1 run diverged
at step 531 in 2 of 5 repeats in one process, never across 6 fresh processes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundled import bundled_layout, bundled_network

from citysignal.bench.episode import RECORD_EVERY_S, EpisodeResult, run_episode
from citysignal.bench.metrics import trip_metrics
from citysignal.bench.parallel import map_fresh
from citysignal.control import HOLD, make_controller
from citysignal.learn.core import CityCore
from citysignal.scenarios import Scenario, resolve
from citysignal.service.engine import ControlEngine, EngineConfig, Live
from citysignal.service.store import AuditStore

SCENARIO, BEGIN, END, SEED = "cologne8", 25200.0, 25500.0, 7
Trace = dict[float, tuple[tuple[str, ...], float]]  # time -> (states shown after the writes, vehicles halting)


def learn_path(sc: Scenario, controller: str, tripinfo: Path) -> tuple[Trace, dict[str, int]]:
    core = CityCore(sc, interval=1, tripinfo=tripinfo)
    core.background = make_controller(controller)
    core.background_mask[:] = True
    hold = np.full(core.layout.n_intersections, HOLD, dtype=np.int64)
    trace: Trace = {}
    obs = core.reset(SEED)
    try:
        while True:
            now, halting = obs.time, float(obs.lane("halting").sum())
            step = core.step(hold)
            trace[now] = (tuple(core.guard.shown), halting)
            obs = step.obs
            if step.done:
                break
        stats = core.guard.stats
        return trace, {"deferred": stats.deferred, "preemptions": stats.max_red_preemptions}
    finally:
        core.close()


def service_path(sc: Scenario, controller: str, tmp_path: Path) -> tuple[Trace, dict[str, int]]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", "one-loop")
    lives: list[Live] = []
    config = EngineConfig(sc, controller, speed=1e6, seed=SEED)
    engine = ControlEngine(config, bundled_network(SCENARIO), bundled_layout(SCENARIO), store,
                           on_publish=lambda live: lives.append(live) if live.episode == 0 else None)  # fmt: skip
    engine.start()
    try:
        deadline = time.monotonic() + 120
        while not (lives and lives[-1].time >= END - 1) and engine.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        engine.stop()
        store.close()
    assert engine.error is None
    trace = {live.time: (live.shown, float(live.obs.lane("halting").sum())) for live in lives}
    last = lives[-1].kpi
    return trace, {"deferred": int(last["deferred"]), "preemptions": int(last["preemptions"])}


def bench_path(sc: Scenario, controller: str) -> EpisodeResult:
    return run_episode(sc, controller, SEED)


def fresh(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a process of its own (spawned: no simulation ran there before)."""
    return map_fresh(fn, [args], workers=1)[0]


@pytest.mark.parametrize("controller", ["maxpressure", "ai"])
def test_bench_learn_and_service_drive_the_city_alike(controller: str, tmp_path: Path) -> None:
    sc = resolve(SCENARIO, BEGIN, END)
    bench: EpisodeResult = fresh(bench_path, sc, controller)
    learned, learn_stats = fresh(learn_path, sc, controller, tmp_path / "learn-tripinfo.xml")
    served, service_stats = fresh(service_path, sc, controller, tmp_path)

    assert sorted(learned) == [BEGIN + t for t in range(int(END - BEGIN))]
    assert served == learned  # every second: the same states shown and the same queues
    assert len({states for states, _ in learned.values()}) > 10  # the controller did switch greens
    assert bench.queue_t == [BEGIN + t for t in range(0, int(END - BEGIN), RECORD_EVERY_S)]
    assert bench.queue == [learned[t][1] for t in bench.queue_t]
    learn_trips = trip_metrics(tmp_path / "learn-tripinfo.xml")
    for key in ("resco_delay", "arrived", "vehicles", "mean_waiting"):
        assert bench.metrics[key] == learn_trips[key], key
    bench_stats = {"deferred": bench.metrics["deferred"], "preemptions": bench.metrics["max_red_preemptions"]}
    assert bench_stats == learn_stats == service_stats
    assert bench.metrics["safety_violations"] == 0
