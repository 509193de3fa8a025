"""Emergency preemption and transit priority, through the guard, driven without SUMO: the held green is
reached by the legal way (min green, transition, never a conflict), kept while the vehicle calls, and
released after; a second emergency vehicle waits its turn; a queue ahead on a shared lane gets a green
that empties the lane, and one that stalls gets the green its head waits for; a signal further along the
route is readied only while the vehicle can reach it; bus priority is capped and rate-limited."""

from __future__ import annotations

import numpy as np
from bundled import bundled_layout

from citysignal.control.guard import HOLD, SafetyGuard
from citysignal.control.priority import (
    BUS_EVERY_S,
    BUS_HOLD_S,
    BUS_LATE_S,
    PREEMPT_MAX_S,
    PREEMPT_STUCK_S,
    STALL_S,
    Priority,
)
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
    calls = {t: (PriorityCall(0, s, "emergency", "ev", 100.0 - (t - 20), 0.0),) for t in range(20, 80)}
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
    s = _signal_only(layout, 0, 1)
    stuck = PriorityCall(0, s, "emergency", "stuck", 40.0, 0.0)
    held = [priority.hold(float(t), (stuck,), green)[0] for t in range(1, int(PREEMPT_STUCK_S) + 30)]
    assert held[0] == 1 and held[-1] == HOLD
    assert sum(h == 1 for h in held) <= PREEMPT_STUCK_S + 1
    crawling = [PriorityCall(0, s, "emergency", "crawling", 300.0 - t, 0.0) for t in range(int(PREEMPT_MAX_S) + 30)]
    held = [priority.hold(float(t), (c,), green)[0] for t, c in enumerate(crawling)]
    assert held[int(PREEMPT_STUCK_S) + 10] == 1 and held[-1] == HOLD  # it advances, but not for ever
    assert sum(h == 1 for h in held) <= PREEMPT_MAX_S + 1


def _shared_lane(layout: Layout) -> tuple[int, int, int, int]:
    """(intersection, signal, its incoming lane, the green serving it) where the serving green leaves another
    signal of the lane red, and another green shows them all."""
    for k, inter in enumerate(layout.intersections):
        for m in np.flatnonzero(layout.mov_int == k):
            s, lane = int(layout.mov_signal[m]), int(layout.mov_in[m])
            signals_of_lane = layout.mov_signal[(layout.mov_int == k) & (layout.mov_in == lane)]
            shows_all = inter.green_signals[:, signals_of_lane].all(axis=1)
            serving = np.flatnonzero(inter.serve_signals[:, s] & ~shows_all)
            if serving.size and shows_all.any():
                return k, s, lane, int(serving[0])
    raise AssertionError("no shared lane whose serving green leaves one of its signals red")


def test_a_queue_ahead_on_a_shared_lane_gets_the_green_that_empties_the_lane() -> None:
    layout = bundled_layout("cologne8")
    k, s, lane, serving = _shared_lane(layout)
    green = np.full(layout.n_intersections, serving, dtype=np.int64)
    halting = np.zeros(len(layout.lanes))
    far = PriorityCall(k, s, "emergency", "ev", 120.0, 0.0)
    assert Priority(layout).hold(1.0, (far,), green, halting)[k] == serving  # no queue: its own green
    halting[lane] = 5.0
    priority = Priority(layout)
    held = priority.hold(1.0, (far,), green, halting)[k]
    assert layout.intersections[k].green_signals[held, layout.mov_signal[layout.mov_in == lane]].all()
    # the lane-wide green shows, but the vehicle stands: the queue's head waits for a signal it does not serve
    green[k] = held
    stalled = [priority.hold(float(t), (far,), green, halting)[k] for t in range(2, int(STALL_S) + 4)]
    assert stalled[0] == held and stalled[-1] != held
    unserved = ~layout.intersections[k].serve_signals[held, layout.mov_signal[layout.mov_in == lane]]
    assert layout.intersections[k].serve_signals[stalled[-1], layout.mov_signal[layout.mov_in == lane]][unserved].any()


def test_a_signal_further_along_the_route_is_readied_only_while_the_vehicle_can_reach_it() -> None:
    layout = bundled_layout("grid4x4")
    priority = Priority(layout)
    k0, k1 = 0, 1
    s0, s1 = _signal_only(layout, k0, 1), _signal_only(layout, k1, 1)
    calls = (PriorityCall(k0, s0, "emergency", "ev", 50.0, 0.0), PriorityCall(k1, s1, "emergency", "ev", 250.0, 0.0))
    red = np.zeros(layout.n_intersections, dtype=np.int64)  # green 0 shows neither signal
    assert list(priority.hold(1.0, calls, red)[[k0, k1]]) == [1, HOLD]  # it waits at the first
    ahead = red.copy()
    ahead[k0] = 1
    assert list(priority.hold(2.0, calls, ahead)[[k0, k1]]) == [1, 1]  # it can go: the next one gets ready


def test_a_late_bus_behind_a_queue_on_a_shared_lane_gets_the_green_that_empties_the_lane() -> None:
    layout = bundled_layout("cologne8")
    k, s, lane, serving = _shared_lane(layout)
    green = np.full(layout.n_intersections, serving, dtype=np.int64)
    halting = np.zeros(len(layout.lanes))
    bus = PriorityCall(k, s, "bus", "bus", 60.0, BUS_LATE_S + 10)
    assert Priority(layout).hold(1.0, (bus,), green, halting)[k] == serving  # no queue: its own green, kept
    halting[lane] = 3.0
    held = Priority(layout).hold(1.0, (bus,), green, halting)[k]
    assert layout.intersections[k].green_signals[held, layout.mov_signal[layout.mov_in == lane]].all()
