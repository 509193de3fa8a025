"""Webster's cycle formula, analytically, and the Webster controller's re-timing, without SUMO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bundled import bundled_layout
from hypothesis import given, settings
from hypothesis import strategies as st

from citysignal.control.cycle import Webster, webster_cycle
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition


def test_textbook_example() -> None:
    # C = (1.5 L + 5) / (1 - Y) = (15 + 5) / 0.5 = 40; greens (C - L) y / Y = 30 * (0.6, 0.4)
    cycle, greens = webster_cycle(np.array([0.3, 0.2]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert cycle == pytest.approx(40.0)
    assert greens == pytest.approx([18.0, 12.0])


def test_three_phases() -> None:
    # Y = 0.6, L = 12: C = 23 / 0.4 = 57.5; effective green 45.5 split 0.25 : 0.25 : 0.1
    cycle, greens = webster_cycle(np.array([0.25, 0.25, 0.1]), 12.0, np.full(3, 5.0), 30.0, 120.0)
    assert cycle == pytest.approx(57.5)
    assert greens == pytest.approx([45.5 * 0.25 / 0.6, 45.5 * 0.25 / 0.6, 45.5 * 0.1 / 0.6])


@pytest.mark.parametrize("y", [[0.5, 0.45], [0.6, 0.6], [1.0, 2.0]])
def test_saturated_demand_runs_at_c_max(y: list[float]) -> None:
    cycle, greens = webster_cycle(np.array(y), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert cycle == 120.0
    assert greens == pytest.approx([110.0 * v / sum(y) for v in y])


def test_near_saturation_is_clamped_at_c_max() -> None:
    # Y = 0.9 < 0.95: the formula gives 20 / 0.1 = 200 s, clamped to c_max
    cycle, greens = webster_cycle(np.array([0.5, 0.4]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert cycle == 120.0
    assert greens == pytest.approx([110.0 * 5 / 9, 110.0 * 4 / 9])


def test_light_demand_is_clamped_at_c_min() -> None:
    # Y = 0.1: 20 / 0.9 = 22.2 s, below c_min = 30
    cycle, greens = webster_cycle(np.array([0.05, 0.05]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert cycle == 30.0
    assert greens == pytest.approx([10.0, 10.0])


def test_min_green_floor() -> None:
    # C = 20 / 0.54 = 37.04; the light green's share (0.6 s) is raised to its 5 s minimum
    cycle, greens = webster_cycle(np.array([0.45, 0.01]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert cycle == pytest.approx(20.0 / 0.54)
    assert greens[0] == pytest.approx((20.0 / 0.54 - 10.0) * 0.45 / 0.46)
    assert greens[1] == 5.0


def test_lost_time_and_min_greens_above_c_max_win() -> None:
    cycle, greens = webster_cycle(np.array([0.3, 0.3]), 100.0, np.array([30.0, 30.0]), 30.0, 120.0)
    assert cycle == 160.0  # L + sum(min green): the only feasible cycle
    assert greens == pytest.approx([30.0, 30.0])


def test_no_flow_splits_evenly() -> None:
    # 1.5 L + 5 = 23 s, below c_min = 30 and below L + 4 min greens = 32
    cycle, greens = webster_cycle(np.zeros(4), 12.0, np.full(4, 5.0), 30.0, 120.0)
    assert cycle == 32.0
    assert greens == pytest.approx(np.full(4, 5.0))
    cycle, greens = webster_cycle(np.zeros(2), 20.0, np.full(2, 5.0), 30.0, 120.0)
    assert cycle == 35.0  # 1.5 * 20 + 5
    assert greens == pytest.approx([7.5, 7.5])


def test_negative_flow_counts_as_zero() -> None:
    a = webster_cycle(np.array([0.3, -0.2]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    b = webster_cycle(np.array([0.3, 0.0]), 10.0, np.array([5.0, 5.0]), 30.0, 120.0)
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    y=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=6),
    lost=st.floats(0.0, 30.0),
    mg=st.floats(1.0, 15.0),
    c_min=st.floats(10.0, 60.0),
    span=st.floats(0.0, 120.0),
)
def test_webster_properties(y: list[float], lost: float, mg: float, c_min: float, span: float) -> None:
    c_max = c_min + span
    flows = np.array(y)
    min_green = np.full(len(y), mg)
    cycle, greens = webster_cycle(flows, lost, min_green, c_min, c_max)
    floor = max(c_min, lost + mg * len(y))
    total = flows.sum()
    assert floor - 1e-9 <= cycle <= max(c_max, floor) + 1e-9
    if total < 0.95:
        raw = (1.5 * lost + 5.0) / (1.0 - total)
        assert cycle == pytest.approx(min(max(raw, floor), max(c_max, floor)))
    else:
        assert cycle == pytest.approx(max(c_max, floor))
    assert greens.shape == flows.shape
    assert np.all(greens >= min_green - 1e-9)
    share = flows / total if total > 0 else np.full(len(y), 1.0 / len(y))
    unfloored = (cycle - lost) * share
    assert greens == pytest.approx(np.maximum(unfloored, min_green))
    if np.all(unfloored >= min_green):  # no floor binds: the greens fill the cycle exactly
        assert greens.sum() + lost == pytest.approx(cycle)


# the controller ------------------------------------------------------------------------------


def _cycle_lost_time(layout: Layout, k: int) -> float:
    inter = layout.intersections[k]
    runs = inter.cycle
    return sum(d for r, run in enumerate(runs) for _, d in inter.transition(run.green, runs[(r + 1) % len(runs)].green))


def _retimed(name: str, lane_flow: float, period: float = 300.0) -> tuple[Layout, Webster]:
    layout = bundled_layout(name)
    n = layout.n_intersections
    ctl = Webster(period=period)
    ctl.reset(layout, ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(n)), seed=0)
    phase = np.full(n, -1, dtype=np.int64)  # in transition: the cycle does not advance

    def obs(t: float) -> Observation:
        passed = np.full(len(layout.lanes), lane_flow * t)
        return Observation(
            time=t, phase=phase, time_in_phase=np.zeros(n), halting=np.zeros(len(layout.lanes)), passed=passed
        )

    ctl.decide(obs(0.0))
    before = ctl.run_duration.copy()
    ctl.decide(obs(period - 1))
    assert np.array_equal(ctl.run_duration, before)  # nothing re-timed before a full period
    ctl.decide(obs(period))
    return layout, ctl


@pytest.mark.parametrize("name", ["cologne1", "cologne8", "ingolstadt21", "grid4x4"])
def test_webster_controller_without_flow_uses_the_shortest_cycle(name: str) -> None:
    layout, ctl = _retimed(name, lane_flow=0.0)
    for k, inter in enumerate(layout.intersections):
        runs = inter.cycle
        lost = _cycle_lost_time(layout, k)
        assert ctl.lost_time[k] == pytest.approx(lost)
        min_green = np.array([inter.min_green[r.green] for r in runs])
        floor = max(30.0, lost + min_green.sum())
        cycle = min(max(1.5 * lost + 5.0, floor), max(120.0, floor))
        assert ctl.cycle_length[k] == pytest.approx(cycle)
        durations = ctl.run_duration[ctl.run_first[k] : ctl.run_first[k] + len(runs)]
        assert durations == pytest.approx(np.round(np.maximum((cycle - lost) / len(runs), min_green)))


@pytest.mark.parametrize("name", ["cologne1", "cologne8", "ingolstadt21", "grid4x4"])
def test_webster_controller_under_saturation_uses_c_max(name: str) -> None:
    layout, ctl = _retimed(name, lane_flow=5.0)  # 10 x the saturation flow on every lane
    for k, inter in enumerate(layout.intersections):
        runs = inter.cycle
        lost = _cycle_lost_time(layout, k)
        min_green = np.array([inter.min_green[r.green] for r in runs])
        floor = max(30.0, lost + min_green.sum())
        assert ctl.cycle_length[k] == pytest.approx(max(120.0, floor))
        durations = ctl.run_duration[ctl.run_first[k] : ctl.run_first[k] + len(runs)]
        assert np.all(durations >= np.round(min_green))
        # rounded greens fill the cycle, unless min greens push it up
        assert durations.sum() + lost >= ctl.cycle_length[k] - math.ceil(len(runs) / 2)
