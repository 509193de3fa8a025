"""Emergency preemption and transit priority, through the guard, driven without SUMO: the held green is
reached by the legal way (min green, transition, never a conflict), kept while the vehicle calls, and
released after; a second emergency vehicle waits its turn; bus priority is capped and rate-limited."""

from __future__ import annotations

import numpy as np
from bundled import bundled_layout

from citysignal.control.guard import HOLD, SafetyGuard
from citysignal.control.priority import BUS_EVERY_S, BUS_HOLD_S, BUS_LATE_S, PREEMPT_MAX_S, Priority
from citysignal.network import signals
from citysignal.network.layout import Layout
from citysignal.twin.observation import PriorityCall, ProgramPosition


def _start(layout: Layout, green: int) -> SafetyGuard:
    guard = SafetyGuard(layout)
    phase = np.array([inter.program_green_index.index(green) for inter in layout.intersections], dtype=np.int64)
    guard.start(0.0, ProgramPosition(phase, np.zeros(layout.n_intersections)))
    return guard


def _signal_only(layout: Layout, k: int, g: int) -> int:
    """A vehicle signal that green `g` serves and green 0 does not."""
    serves = layout.intersections[k].serve_signals
    moving = {m.signal for m in layout.intersections[k].vehicle_movements}
    return next(s for s in range(serves.shape[1]) if serves[g, s] and not serves[0, s] and s in moving)


def _run(layout: Layout, guard: SafetyGuard, priority: Priority, calls_at: dict[int, tuple[PriorityCall, ...]],
         until: int) -> list[int]:  # fmt: skip
    """Greens shown at intersection 0 per second; the controller keeps asking for green 0 throughout."""
    inter = layout.intersections[0]
    requests = np.zeros(layout.n_intersections, dtype=np.int64)
    halting = np.zeros(len(layout.lanes))
    shown = []
    for t in range(1, until):
        hold = priority.hold(float(t), calls_at.get(t, ()), guard.green)
        for k, state in guard.apply(float(t), requests, halting, hold=hold).items():
            assert not signals.conflicting_pairs(state, layout.intersections[k].hard_conflict)
        shown.append(int(guard.green[0]))
        assert guard.stats.violations == 0
    assert inter.greens
    return shown


def test_an_emergency_vehicle_gets_its_green_legally_and_keeps_it_until_it_passes() -> None:
    layout = bundled_layout("cologne1")
    guard = _start(layout, 0)
    s = _signal_only(layout, 0, 1)
    call = PriorityCall(0, s, "emergency", "ev", 100.0, 0.0)
    calls = {t: (call,) for t in range(20, 80)}
    shown = _run(layout, guard, Priority(layout), calls, 120)
    served = [t + 1 for t, g in enumerate(shown) if g >= 0 and layout.intersections[0].serve_signals[g, s]]
    assert served and 20 < served[0] <= 20 + layout.intersections[0].min_green[0] + 10  # min green, then transition
    assert all(t in served for t in range(served[0], 80))  # held while it calls
    assert shown[-1] == 0  # control returns to the controller's request


def test_without_priority_the_same_call_changes_nothing() -> None:
    layout = bundled_layout("cologne1")
    s = _signal_only(layout, 0, 1)
    call = PriorityCall(0, s, "emergency", "ev", 100.0, 0.0)
    shown = _run(layout, _start(layout, 0), Priority(layout, enabled=False), {t: (call,) for t in range(20, 80)}, 120)
    assert set(shown) == {0}


def test_a_second_emergency_vehicle_waits_its_turn() -> None:
    layout = bundled_layout("cologne1")
    priority = Priority(layout)
    green = np.zeros(layout.n_intersections, dtype=np.int64)
    s1 = _signal_only(layout, 0, 1)
    first = PriorityCall(0, s1, "emergency", "first", 120.0, 0.0)
    s0 = next(s for s in range(layout.intersections[0].n_signals) if layout.intersections[0].serve_signals[0, s])
    second = PriorityCall(0, s0, "emergency", "second", 30.0, 0.0)  # nearer, but called later
    assert priority.hold(1.0, (first,), green)[0] == 1
    assert priority.hold(2.0, (first, second), green)[0] == 1
    assert priority.hold(3.0, (second,), green)[0] == 0  # the first has passed
    assert priority.counts["preemptions"] == 2


def test_bus_priority_is_capped_and_rate_limited() -> None:
    layout = bundled_layout("cologne1")
    priority = Priority(layout)
    green = np.zeros(layout.n_intersections, dtype=np.int64)
    s0 = next(s for s in range(layout.intersections[0].n_signals) if layout.intersections[0].serve_signals[0, s])
    on_time = PriorityCall(0, s0, "bus", "bus0", 50.0, BUS_LATE_S)
    late = PriorityCall(0, s0, "bus", "bus0", 50.0, BUS_LATE_S + 1)
    assert priority.hold(1.0, (on_time,), green)[0] == HOLD
    held = [priority.hold(float(t), (late,), green)[0] for t in range(2, 40)]
    assert held[: int(BUS_HOLD_S) + 1] == [0] * (int(BUS_HOLD_S) + 1)  # an extension of the running green
    assert held[-1] == HOLD  # capped
    again = PriorityCall(0, s0, "bus", "bus1", 50.0, BUS_LATE_S + 5)
    assert priority.hold(45.0, (again,), green)[0] == HOLD  # one grant per BUS_EVERY_S
    assert priority.hold(2.0 + BUS_EVERY_S, (again,), green)[0] == 0
    assert priority.counts["bus_grants"] == 2


def test_a_stuck_emergency_vehicle_holds_its_green_for_a_bounded_time() -> None:
    layout = bundled_layout("cologne1")
    priority = Priority(layout)
    green = np.zeros(layout.n_intersections, dtype=np.int64)
    stuck = PriorityCall(0, _signal_only(layout, 0, 1), "emergency", "stuck", 40.0, 0.0)
    held = [priority.hold(float(t), (stuck,), green)[0] for t in range(1, int(PREEMPT_MAX_S) + 30)]
    assert held[0] == 1 and held[-1] == HOLD
    assert sum(h == 1 for h in held) <= PREEMPT_MAX_S + 1
