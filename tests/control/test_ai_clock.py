"""The AI's decision clock is Advanced-MP's: with the learned part switched off (the anchor alone),
Advanced-MP's 10 s interval and no initial green, the AI requests exactly what Advanced-MP requests, step
by step, in the closed loop; at its own 2 s interval it decides on the same per-intersection clock, five
times as often, once a saturated junction's green has run the initial green its queue asked for (none on a
green that feeds a short link); an isolated junction, between its 10 s reviews, only at a gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bundled import bundled_layout

from citysignal.control.adaptive import AdvancedMaxPressure
from citysignal.control.ai import (
    INITIAL_CAP_S,
    MIN_GREEN_S,
    REVIEW_S,
    SATURATED,
    AiController,
    DecisionClock,
    GapOut,
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


def test_at_a_saturated_junction_a_green_runs_until_the_queue_it_found_could_have_left() -> None:
    layout = bundled_layout("cologne1")
    clock = DecisionClock(layout.n_intersections, interval=2.0, initial=InitialGreen(layout))
    lanes = layout.mov_in[layout.serve_mov[layout.serve_green == layout.green_start[0]]]
    capacity = lane_capacity(layout)[np.unique(layout.mov_in)].sum()
    phase = np.zeros(layout.n_intersections, dtype=np.int64)

    def at(t: float, began: float, queue: float) -> Observation:
        halting = np.zeros(len(layout.lanes))
        halting[lanes[0]] = queue
        halting[lanes[-1]] = queue / 2
        return Observation(time=t, phase=phase, time_in_phase=np.full(len(phase), t - began), halting=halting)

    long_queue = float(np.ceil(SATURATED * capacity))
    assert long_queue >= 10  # so the hold exceeds the 10 s min green
    assert not clock.due(at(100.0, 100.0, long_queue)).any()  # green 0 begins with the queue standing
    hold = min(2 * long_queue, INITIAL_CAP_S)
    assert not clock.due(at(100.0 + hold - 1, 100.0, 0.0)).any()  # not before 2 s per vehicle (the queue left)
    assert clock.due(at(100.0 + hold, 100.0, 0.0)).all()
    assert clock.hold[0] == hold

    assert not clock.due(at(300.0, 300.0, 5.0)).any()  # a new green, a short queue: the min green alone
    assert clock.due(at(310.0, 300.0, 5.0)).all()
    assert clock.hold[0] == MIN_GREEN_S


def _hold(layout: Layout, k: int, green: int, initial: InitialGreen) -> float:
    """The initial green of intersection `k`'s `green` when it begins on a junction saturated on every approach."""
    phase = np.full(layout.n_intersections, -1, dtype=np.int64)
    phase[k] = green
    halting = np.zeros(len(layout.lanes))
    halting[np.unique(layout.mov_in[layout.mov_int == k])] = 40.0
    clock = DecisionClock(layout.n_intersections, interval=2.0, initial=initial)
    clock.due(Observation(time=100.0, phase=phase, time_in_phase=np.zeros(len(phase)), halting=halting))
    return float(clock.hold[k])


def test_a_green_that_feeds_a_short_link_runs_no_initial_green() -> None:
    layout = bundled_layout("ingolstadt21")
    k = layout.ids.index("gneJ257")  # joined to 243641585 by the 12.1 m links 174800513 and -174800513
    green = int(np.flatnonzero(np.array(layout.intersections[k].greens) == "GGrrrrGg")[0])
    assert _hold(layout, k, green, InitialGreen(layout)) == MIN_GREEN_S
    assert _hold(layout, k, green, InitialGreen(layout, short_link=0.0)) == INITIAL_CAP_S  # without the exception


def test_a_short_edge_of_a_road_that_runs_on_is_no_short_link() -> None:
    """bologna_joined's 233 sends vehicles into the 11 m edge b35[1][1][0], which goes on as one road through
    a pass-through junction: its greens run their initial green (without it: 219.9 s, fixed-time 218.7)."""
    layout = bundled_layout("bologna_joined")
    k = layout.ids.index("233")
    feeding = layout.serve_green[np.isin(layout.serve_mov, np.flatnonzero(
        np.array(layout.lanes)[layout.mov_out] == "b35[1][1][0]_0"))]  # fmt: skip
    assert len(feeding) and all(_hold(layout, k, g - layout.green_start[k], InitialGreen(layout)) == INITIAL_CAP_S
                                for g in feeding)  # fmt: skip


def test_only_a_junction_without_a_signal_nearby_is_isolated() -> None:
    assert GapOut(bundled_layout("cologne1")).isolated.all()  # the map's one signal
    assert not GapOut(bundled_layout("ingolstadt21")).isolated.any()  # 21 signals, each with neighbours


def test_an_isolated_junction_decides_between_its_reviews_only_at_a_gap() -> None:
    layout = bundled_layout("cologne1")
    clock = DecisionClock(layout.n_intersections, interval=2.0, gap_out=GapOut(layout))
    phase = np.zeros(layout.n_intersections, dtype=np.int64)
    served = layout.serve_mov[layout.serve_green == layout.green_start[0]]
    lane = layout.mov_in[served[~layout.always_served[served]][0]]  # a lane only some greens serve
    other = layout.mov_in[layout.serve_mov[layout.serve_green == layout.green_start[0] + 2]]
    other = other[~np.isin(other, layout.mov_in[served])][0]  # a lane green 0 does not serve

    def at(t: float, moving_on: int | None) -> Observation:
        vehicles = np.zeros(len(layout.lanes))
        if moving_on is not None:
            vehicles[moving_on] = 3.0  # none of them halting: on their way to the stop line
        return Observation(time=t, phase=phase, time_in_phase=np.full(len(phase), t - 90.0),
                           halting=np.zeros(len(layout.lanes)), vehicles=vehicles)  # fmt: skip

    assert clock.due(at(100.0, lane)).all()  # the first decision of a green is a review
    clock.mark(clock.due(at(100.0, lane)), 100.0)
    for t in np.arange(102.0, 100.0 + REVIEW_S):
        assert not clock.due(at(t, lane)).any()  # vehicles approach on the running green: no decision
    assert clock.due(at(100.0 + REVIEW_S, lane)).all()  # the next review, whatever approaches
    assert clock.due(at(102.0, None)).all()  # a gap: the decision comes on the 2 s clock
    assert clock.due(at(102.0, other)).all()  # vehicles only on a red approach are no reason to wait
    assert not clock.due(at(101.0, None)).any()  # but not sooner than that clock
