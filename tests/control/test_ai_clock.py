"""The AI's decision clock is Advanced-MP's: with the learned part switched off (the anchor alone),
Advanced-MP's 10 s interval and no initial green, the AI requests exactly what Advanced-MP requests, step
by step, in the closed loop; at its own 2 s interval it decides on the same per-intersection clock, five
times as often, once a saturated junction's green has run the initial green its queue asked for, or
sooner where that queue has left or cannot leave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bundled import bundled_layout

from citysignal.control.adaptive import AdvancedMaxPressure
from citysignal.control.ai import (
    INITIAL_CAP_S,
    MIN_GREEN_S,
    SATURATED,
    AiController,
    DecisionClock,
    InitialGreen,
    default_policy_path,
    load_policy,
    save_policy,
)
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.loop import ControlLoop
from citysignal.network.layout import Layout
from citysignal.scenarios import resolve
from citysignal.twin import Twin
from citysignal.twin.faults import lane_capacity
from citysignal.twin.observation import Observation, ProgramPosition


def _anchor_only(path: Path) -> Path:
    params, feature_max = load_policy(default_policy_path())
    params["w4"][:] = 0.0
    params["b4"][:] = 0.0
    params["alpha"][:] = 1.0
    return save_policy(path, params, np.full_like(feature_max, np.inf), "the anchor alone")


class _Both:
    """Advanced-MP drives; the AI decides on every same observation beside it and is compared."""

    def __init__(self, ai: AiController) -> None:
        self.amp = AdvancedMaxPressure()
        self.ai = ai
        self.decisions = 0

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.amp.reset(layout, position, seed)
        self.ai.reset(layout, position, seed)

    def decide(self, obs: Observation) -> np.ndarray:
        mine = self.amp.decide(obs)
        theirs = self.ai.decide(obs)
        due = theirs != HOLD  # a deciding AI requests a green, the running one to keep it
        np.testing.assert_array_equal(due, self.amp.last_decision == obs.time, err_msg=f"t={obs.time}")
        np.testing.assert_array_equal(theirs[due], np.where(mine == HOLD, obs.phase, mine)[due])
        self.decisions += int(due.sum())
        return mine


def test_the_anchor_alone_on_advanced_mp_s_clock_is_advanced_mp(tmp_path: Path) -> None:
    scenario = resolve("cologne8", 25200.0, 25800.0)
    layout = bundled_layout("cologne8")
    both = _Both(AiController(_anchor_only(tmp_path / "anchor.npz"), interval=10.0, initial_per_vehicle=0.0))
    guard = SafetyGuard(layout)
    with Twin(scenario, layout, fields=both.ai.requires | GUARD_FIELDS) as twin:
        loop = ControlLoop(twin, guard, both)
        loop.start(23423)
        while not loop.done:
            loop.tick()
    assert both.decisions > 100


def test_each_intersection_decides_on_its_own_clock() -> None:
    n = 3
    clock = DecisionClock(n, interval=2.0)
    phase = np.array([0, 1, -1])

    def at(t: float, age: float) -> Observation:
        return Observation(time=t, phase=phase, time_in_phase=np.array([age, age - 5.0, age]))

    assert not clock.due(at(100.0, 9.0)).any()  # no green has run 10 s
    due = clock.due(at(101.0, 10.0))
    np.testing.assert_array_equal(due, [True, False, False])  # the second is younger, the third changing
    clock.mark(due, 101.0)
    np.testing.assert_array_equal(clock.due(at(102.0, 11.0)), [False, False, False])
    np.testing.assert_array_equal(clock.due(at(103.0, 12.0)), [True, False, False])  # 2 s after its last
    np.testing.assert_array_equal(clock.due(at(103.0, 15.0)), [True, True, False])


def test_at_a_saturated_junction_a_green_runs_while_the_queue_it_found_can_leave() -> None:
    layout = bundled_layout("cologne1")
    clock = DecisionClock(layout.n_intersections, interval=2.0, initial=InitialGreen(layout))
    served = layout.serve_mov[layout.serve_green == layout.green_start[0]]
    lanes, exits = layout.mov_in[served], layout.mov_out[served]
    capacity = lane_capacity(layout)[np.unique(layout.mov_in)].sum()
    phase = np.zeros(layout.n_intersections, dtype=np.int64)

    red = np.setdiff1d(layout.mov_in[layout.mov_int == 0], lanes)[0]  # an approach green 0 leaves waiting

    def at(t: float, began: float, queue: float, full: bool = False, red_full: bool = False) -> Observation:
        halting = np.zeros(len(layout.lanes))
        halting[lanes[0]] = queue
        halting[lanes[-1]] = queue / 2
        if full:
            halting[exits] = lane_capacity(layout)[exits]
        if red_full:
            halting[red] = lane_capacity(layout)[red]
        return Observation(time=t, phase=phase, time_in_phase=np.full(len(phase), t - began), halting=halting)

    long_queue = float(np.ceil(SATURATED * capacity))
    assert long_queue >= 10  # so the hold exceeds the 10 s min green
    assert lane_capacity(layout)[exits[0]] >= long_queue  # and its exit has room for the whole queue
    assert not clock.due(at(100.0, 100.0, long_queue)).any()  # green 0 begins with the queue standing
    hold = min(2 * long_queue, INITIAL_CAP_S)
    assert not clock.due(at(100.0 + hold - 1, 100.0, 3.0)).any()  # not before 2 s per vehicle while some remain
    assert clock.due(at(100.0 + hold, 100.0, 3.0)).all()
    assert clock.hold[0] == hold

    assert not clock.due(at(300.0, 300.0, 5.0)).any()  # a new green, a short queue: the min green alone
    assert clock.due(at(310.0, 300.0, 5.0)).all()
    assert clock.hold[0] == MIN_GREEN_S

    assert not clock.due(at(400.0, 400.0, long_queue)).any()
    assert clock.due(at(410.0, 400.0, 0.0)).all()  # the queue has left early: no reason to hold on

    assert not clock.due(at(500.0, 500.0, long_queue)).any()
    assert not clock.due(at(510.0, 500.0, long_queue)).any()
    assert clock.due(at(512.0, 500.0, long_queue, full=True)).all()  # its exits are full: nothing can leave

    assert lane_capacity(layout)[red] > 3.0
    assert not clock.due(at(600.0, 600.0, long_queue)).any()
    assert not clock.due(at(610.0, 600.0, 3.0)).any()  # three vehicles still to leave, the red lane not full
    assert clock.due(at(612.0, 600.0, 3.0, red_full=True)).all()  # a red lane filled with more than that


def test_a_green_earns_no_more_time_than_its_exits_have_room_for() -> None:
    layout = bundled_layout("cologne1")
    initial = InitialGreen(layout)
    served = layout.serve_mov[layout.serve_green == layout.green_start[0]]
    halting = np.zeros(len(layout.lanes))
    halting[layout.mov_in[served]] = 40.0
    room = lane_capacity(layout)[layout.mov_out[served]]
    halting[layout.mov_out[served]] = np.maximum(room - 12.0, 0.0)  # 12 places left at most on each exit
    phase = np.zeros(layout.n_intersections, dtype=np.int64)
    obs = Observation(time=0.0, phase=phase, time_in_phase=np.zeros(len(phase)), halting=halting)
    starting = np.ones(layout.n_intersections, dtype=bool)
    assert initial.seconds(obs, starting)[0] == 2 * 12.0
