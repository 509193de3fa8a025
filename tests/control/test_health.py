"""Detector plausibility checks, substitution, the fixed-time fallback, and the guard on unknown readings.

Synthetic readings drive the checks on cologne1's layout (one intersection, eight edges of two lanes);
real SUMO runs show that healthy detectors are not judged faulty, and that faulty ones never reach the
metrics nor make the guard show an illegal state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bundled import bundled_layout, bundled_scenario

from citysignal.bench.episode import run_episode
from citysignal.control.adaptive import MaxPressure
from citysignal.control.cycle import FixedTime
from citysignal.control.guard import HOLD, SafetyGuard
from citysignal.control.health import LATCH_S, STUCK_S, DetectorHealth, DetectorSupervisor
from citysignal.network.layout import Layout
from citysignal.twin.faults import FaultSpec
from citysignal.twin.observation import Observation, ProgramPosition


def _layout() -> Layout:
    return bundled_layout("cologne1")


def _position(layout: Layout) -> ProgramPosition:
    n = layout.n_intersections
    return ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(n))


def _obs(layout: Layout, t: float, vehicles: np.ndarray, passed: np.ndarray | None = None) -> Observation:
    n = layout.n_intersections
    return Observation(
        time=t,
        phase=np.zeros(n, dtype=np.int64),
        time_in_phase=np.full(n, t),
        vehicles=vehicles,
        halting=np.where(np.isnan(vehicles), np.nan, np.maximum(vehicles - 1.0, 0.0)),
        passed=np.zeros(len(layout.lanes)) if passed is None else passed,
    )


def _varying(layout: Layout, t: int) -> np.ndarray:
    return 1.0 + (np.arange(len(layout.lanes)) + t) % 3.0


def test_a_missing_lane_reads_its_sibling_then_the_queue_model() -> None:
    layout = _layout()
    sup = DetectorSupervisor(MaxPressure())
    sup.reset(layout, _position(layout))
    health = sup.checked
    lane = int(layout.incoming_lanes[0])
    sibling = int(next(i for i in np.flatnonzero(health.edge == health.edge[lane]) if i != lane))
    vehicles = _varying(layout, 0)
    vehicles[lane] = np.nan
    obs = _obs(layout, 0.0, vehicles)
    sup.decide(obs)
    assert health.clean(obs).lane("vehicles")[lane] == vehicles[sibling]  # the edge's healthy lane stands in
    sup.reset(layout, _position(layout))
    health = sup.checked
    for t in range(1, 400):  # healthy: the model is the reading
        obs = _obs(layout, float(t), _varying(layout, t), passed=np.full(len(layout.lanes), t // 10, dtype=float))
        sup.decide(obs)
        assert np.array_equal(health.queue, obs.lane("halting")) and not health.faulty.any()
    queues = []
    for t in range(400, 460):  # the lane and its sibling die, its queue model runs on from its last reading
        vehicles = _varying(layout, t)
        vehicles[[lane, sibling]] = np.nan
        obs = _obs(layout, float(t), vehicles, passed=np.full(len(layout.lanes), t // 10, dtype=float))
        sup.decide(obs)
        clean = health.clean(obs)
        assert clean.lane("halting")[lane] == clean.lane("vehicles")[lane] == health.queue[lane]
        assert not np.isnan(clean.lane("halting")).any() and not np.isnan(clean.lane("passed")).any()
        queues.append(health.queue[lane])
    assert sup.faulty_lanes() == {layout.lanes[lane]: "missing", layout.lanes[sibling]: "missing"}
    assert min(queues) >= 0 and max(queues) <= health.capacity[lane] and np.ptp(queues) > 0  # it moves
    assert not sup.fallback.any()
    assert f"{layout.lanes[lane]} (missing; read as the queue model)" in sup.explain(0)
    halting, passed = sup.guard_inputs(obs)
    assert np.isnan(halting[lane]) and np.isnan(passed[lane])
    assert np.isnan(halting).sum() == 2


def test_an_intersection_with_most_detectors_faulty_falls_back_to_fixed_time() -> None:
    layout = _layout()
    sup = DetectorSupervisor(MaxPressure())
    sup.reset(layout, _position(layout))
    fixed = FixedTime()
    fixed.reset(layout, _position(layout))
    incoming = layout.incoming_lanes
    half = incoming[: len(incoming) // 2]
    for t in range(1, 200):
        vehicles = _varying(layout, t)
        vehicles[half] = np.nan  # half faulty: still the controller, on the queue model
        obs = _obs(layout, float(t), vehicles)
        sup.decide(obs)
        assert not sup.fallback.any()
    for t in range(200, 400):
        vehicles = _varying(layout, t)
        vehicles[incoming[: len(incoming) // 2 + 1]] = np.nan
        obs = _obs(layout, float(t), vehicles)
        assert np.array_equal(sup.decide(obs), fixed.decide(sup.checked.clean(obs)))
    assert sup.fallback.all()
    assert sup.explain(0).startswith("fixed-time fallback") and layout.lanes[half[0]] in sup.explain(0)
    assert sup.stats()["fallback_share"] == round(200 / 399, 4)  # 200 of 399 steps


def test_stuck_jumping_and_overfull_readings_are_caught_and_a_changing_one_is_not() -> None:
    layout = _layout()
    health = DetectorHealth(layout)
    stuck, jumpy = int(layout.incoming_lanes[0]), int(layout.incoming_lanes[1])
    overfull, empty = int(layout.incoming_lanes[2]), int(layout.incoming_lanes[3])
    for t in range(int(STUCK_S) + 2):
        vehicles = _varying(layout, t)
        vehicles[stuck] = 3.0
        vehicles[jumpy] = 10.0 * (t % 2)
        vehicles[empty] = 0.0  # a frozen empty reading looks like an empty lane
        vehicles[overfull] = 2.0 * health.capacity[overfull] + 3.0 + t % 2 if t >= 5 else 1.0
        health.update(_obs(layout, float(t), vehicles))
        if t == int(STUCK_S) - 2:
            assert not health.faulty[stuck]
    reasons = {i: health.reason[i] for i in np.flatnonzero(health.faulty)}
    assert set(reasons) == {stuck, jumpy, overfull}
    assert [reasons[i] for i in (stuck, jumpy, overfull)] == [4, 3, 2]  # stuck, jumps, beyond capacity
    # a lane flagged for an implausible reading is trusted again LATCH_S after its last one
    for t in range(int(STUCK_S) + 2, int(STUCK_S + LATCH_S) + 10):
        health.update(_obs(layout, float(t), _varying(layout, t)))
    assert not health.faulty.any()


def test_the_guard_serves_a_lane_it_cannot_see_within_max_red() -> None:
    layout = _layout()
    guard = SafetyGuard(layout, max_red=30.0)
    guard.start(0.0, _position(layout))
    inter = layout.intersections[0]
    unserved = np.flatnonzero(inter.serve_signals.any(axis=0) & ~inter.serve_signals[guard.green[0]])[0]
    lanes = np.unique(layout.mov_in[(layout.mov_int == 0) & (layout.mov_signal == unserved)])
    hold = np.array([HOLD], dtype=np.int64)
    halting = np.zeros(len(layout.lanes))
    passed = np.zeros(len(layout.lanes))
    for t in range(1, 60):  # known empty: no preemption
        guard.apply(float(t), hold, halting, passed)
    assert guard.stats.max_red_preemptions == 0
    halting[lanes] = np.nan
    passed[lanes] = np.nan
    for t in range(60, 120):
        guard.apply(float(t), hold, halting, passed)
    assert guard.stats.max_red_preemptions >= 1
    assert inter.serve_signals[guard.green[0], unserved] or guard.green[0] == HOLD


@pytest.mark.parametrize("controller", ["maxpressure", "fixed"])
def test_healthy_detectors_in_sumo_are_not_judged_faulty(controller: str) -> None:
    sc = bundled_scenario("cologne1")
    sc = dataclasses.replace(sc, end=sc.begin + 1800)
    plain = run_episode(sc, controller, 23423)
    watched = run_episode(sc, controller, 23423, faults=FaultSpec(0.0))
    assert watched.controller_stats["fallback_share"] == 0.0
    assert watched.controller_stats["faulty_detectors"] == 0.0
    assert watched.metrics["safety_violations"] == plain.metrics["safety_violations"] == 0


def test_dead_detectors_reach_neither_the_metrics_nor_the_signals_in_sumo() -> None:
    sc = bundled_scenario("cologne1")
    sc = dataclasses.replace(sc, end=sc.begin + 1800)
    result = run_episode(sc, "maxpressure", 23423, faults=FaultSpec(1.0, "missing"))
    assert np.isfinite(result.queue).all() and max(result.queue) > 0  # the records read the true lanes
    assert result.controller_stats["faulty_detectors"] == len(bundled_layout("cologne1").lanes)
    assert result.controller_stats["fallback_share"] > 0.4  # fixed time once most died (onsets: 5 to 20 min)
    assert result.metrics["safety_violations"] == 0 and result.metrics["arrived"] > 0
