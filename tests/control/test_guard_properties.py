"""Property tests of the safety guard, driven without SUMO on every bundled network.

The guard's own violation counter is asserted, and every state it writes is also checked here,
independently: no hard-conflicting greens, no green dropped without yellow, the exact transition of
the model between two greens with each step held at least its duration (and at least one 1 s step),
greens held for their min green, and the max-red bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from bundled import BUNDLED, bundled_layout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citysignal.control.guard import HOLD, SafetyGuard
from citysignal.network import Intersection, signals
from citysignal.network.layout import Layout
from citysignal.twin.observation import ProgramPosition

REQUESTS_PER_NETWORK = 10_000  # 11 bundled networks: > 100,000 random requests in all
EXAMPLES = 10
MIN_STEPS = 150
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _transition_s(inter: Intersection) -> int:
    """Longest transition between two greens, in whole 1 s steps (a step lasts at least 1 s)."""
    n = len(inter.greens)
    return max(
        (sum(math.ceil(max(1.0, d)) for _, d in inter.transition(a, b)) for a in range(n) for b in range(n)),
        default=0,
    )


def _min_green_s(inter: Intersection) -> int:
    return math.ceil(float(inter.min_green.max()))


def _served(inter: Intersection, state: str) -> np.ndarray:
    """Signals a shown state serves: the model's service of a green, else what it shows major."""
    if state in inter.greens:
        return inter.serve_signals[inter.greens.index(state)]
    return signals.major_mask(state)


def _phase0(layout: Layout) -> ProgramPosition:
    n = layout.n_intersections
    return ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(n))


class WriteChecker:
    """Checks every state the guard writes, from the writes alone (plus which green it says it is in)."""

    def __init__(self, layout: Layout, guard: SafetyGuard, now: float, writes: dict[int, str]) -> None:
        self.layout = layout
        self.guard = guard
        n = layout.n_intersections
        assert sorted(writes) == list(range(n)), "start() must write every intersection"
        self.shown = [writes[k] for k in range(n)]
        self.green = guard.green.copy()
        self.entered = np.full(n, now)  # when the current green (or first transition step) was written
        self.steps: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        self.left_green = np.full(n, HOLD, dtype=np.int64)
        self.transitions_checked = 0
        self.greens_left = 0
        for k, inter in enumerate(layout.intersections):
            if self.green[k] >= 0:
                assert self.shown[k] == inter.greens[self.green[k]]

    def step(self, now: float, writes: dict[int, str]) -> None:
        lay = self.layout
        for k, state in writes.items():
            inter = lay.intersections[k]
            before = self.shown[k]
            assert len(state) == inter.n_signals
            assert signals.conflicting_pairs(state, inter.hard_conflict) == [], (inter.id, state)
            assert signals.lost_green_without_yellow(before, state) == [], (inter.id, before, state)
            if self.green[k] >= 0:  # leaving a green: only after its min green
                g = int(self.green[k])
                assert now - self.entered[k] >= inter.min_green[g], (inter.id, g, now, self.entered[k])
                self.left_green[k] = g
                self.greens_left += 1
                self.green[k] = HOLD
            elif self.steps[k]:  # previous transition step held for its duration
                _, last_start = self.steps[k][-1]
                self.steps[k][-1] = (self.steps[k][-1][0], now - last_start)
            self.shown[k] = state
            self.entered[k] = now
            if self.guard.green[k] >= 0:  # the guard says it reached a green: the one it shows
                b = int(self.guard.green[k])
                assert state == inter.greens[b], (inter.id, b, state)
                a = int(self.left_green[k])
                if a >= 0:
                    expected = inter.transition(a, b)
                    assert [s for s, _ in self.steps[k]] == [s for s, _ in expected], (inter.id, a, b)
                    for (_, held), (_, duration) in zip(self.steps[k], expected, strict=True):
                        assert held >= max(1.0, duration) - 1e-9, (inter.id, a, b, held, duration)
                    self.transitions_checked += 1
                self.green[k] = b
                self.steps[k] = []
            else:
                self.steps[k].append((state, now))
        # intersections not written keep showing what they showed, in the green the guard reports
        for k in np.flatnonzero(self.guard.green >= 0):
            assert self.green[k] == self.guard.green[k]


@pytest.mark.parametrize("name", BUNDLED)
def test_random_requests_never_produce_a_violation(name: str) -> None:
    layout = bundled_layout(name)
    n = layout.n_intersections
    n_greens = np.array([len(i.greens) for i in layout.intersections], dtype=np.int64)
    n_lanes = len(layout.lanes)
    steps = max(MIN_STEPS, math.ceil(REQUESTS_PER_NETWORK / (EXAMPLES * n)))
    totals = {"requests": 0, "transitions": 0, "refused": 0}

    @SETTINGS
    @given(
        seed=st.integers(0, 2**32 - 1),
        hold_p=st.floats(0.0, 0.95),
        bad_p=st.sampled_from([0.0, 0.02, 0.2]),
        halting_p=st.floats(0.0, 1.0),
        max_red=st.sampled_from([20.0, 60.0, 120.0]),
    )
    def run(seed: int, hold_p: float, bad_p: float, halting_p: float, max_red: float) -> None:
        rng = np.random.default_rng(seed)
        guard = SafetyGuard(layout, max_red=max_red)
        checker = WriteChecker(layout, guard, 0.0, guard.start(0.0, _phase0(layout)))
        n_bad = 0
        for t in range(1, steps + 1):
            requests = rng.integers(0, n_greens)
            requests[rng.random(n) < hold_p] = HOLD
            bad = rng.random(n) < bad_p
            n_bad += int(bad.sum())
            # out of range on both sides: below HOLD, or one of the first indices past the last green
            too_low = rng.integers(-5, HOLD, size=n)
            too_high = n_greens + rng.integers(0, 3, size=n)
            requests[bad] = np.where(rng.random(n) < 0.5, too_low, too_high)[bad]
            halting = (rng.random(n_lanes) < halting_p).astype(float)
            writes = guard.apply(float(t), requests.astype(np.int64), halting)
            checker.step(float(t), writes)
        assert guard.stats.violations == 0, guard.stats.violation_log[:5]
        # a refused request is one out of range that max-red preemption did not override
        assert n_bad - guard.stats.max_red_preemptions <= guard.stats.refused <= n_bad
        totals["requests"] += steps * n
        totals["transitions"] += checker.transitions_checked
        totals["refused"] += guard.stats.refused

    run()
    assert totals["requests"] >= REQUESTS_PER_NETWORK
    assert totals["transitions"] > 0  # the checks above saw real green changes
    assert totals["refused"] > 0  # and real out-of-range requests


@pytest.mark.parametrize("name", BUNDLED)
def test_valid_requests_are_carried_out(name: str) -> None:
    """A request held long enough (min green + transition) ends in the requested green."""
    layout = bundled_layout(name)
    n_greens = np.array([len(i.greens) for i in layout.intersections], dtype=np.int64)
    horizon = max(_min_green_s(i) + _transition_s(i) for i in layout.intersections) + 1
    rng = np.random.default_rng(11)
    guard = SafetyGuard(layout)
    checker = WriteChecker(layout, guard, 0.0, guard.start(0.0, _phase0(layout)))
    halting = np.zeros(len(layout.lanes))
    t = 0
    for _ in range(5):
        target = rng.integers(0, n_greens)
        for _ in range(horizon):
            t += 1
            checker.step(float(t), guard.apply(float(t), target.astype(np.int64), halting))
        assert np.array_equal(guard.green, target)
        assert checker.shown == [i.greens[g] for i, g in zip(layout.intersections, target, strict=True)]
    assert guard.stats.refused == 0 and guard.stats.violations == 0


# max red ---------------------------------------------------------------------------------------


def _waiting_lanes(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per intersection one incoming lane whose servable signals one green serves together,
    preferring lanes the first green does not serve. Returns (halting per lane, watched signals)."""
    halting = np.zeros(len(layout.lanes))
    watched = np.zeros(layout.n_signals_total, dtype=bool)
    lane_index = {name: i for i, name in enumerate(layout.lanes)}
    for k, inter in enumerate(layout.intersections):
        servable = inter.serve_signals.any(axis=0)
        fed: dict[str, set[int]] = {}
        for m in inter.vehicle_movements:
            if servable[m.signal]:
                fed.setdefault(m.from_lane, set()).add(m.signal)
        common = [lane for lane, sig in sorted(fed.items()) if inter.serve_signals[:, sorted(sig)].all(axis=1).any()]
        unserved = [lane for lane in common if not inter.serve_signals[0, sorted(fed[lane])].all()]
        pool = unserved or common
        if not pool:
            continue
        lane = pool[int(rng.integers(len(pool)))]
        halting[lane_index[lane]] = 1.0
        start = int(layout.signal_start[k])
        watched[[start + s for s in fed[lane]]] = True
    return halting, watched


def _longest_unserved(
    layout: Layout,
    guard: SafetyGuard,
    halting: np.ndarray,
    watched: np.ndarray,
    steps: int,
    requests: Callable[[int], np.ndarray],
) -> np.ndarray:
    """Per signal, the longest time (s) it went unserved, tracked from the guard's writes."""
    writes = guard.start(0.0, _phase0(layout))
    checker = WriteChecker(layout, guard, 0.0, writes)
    starts = layout.signal_start
    served = np.zeros(layout.n_signals_total, dtype=bool)
    last_served = np.zeros(layout.n_signals_total)
    worst = np.zeros(layout.n_signals_total)

    def show(ws: dict[int, str]) -> None:
        for k, state in ws.items():
            inter = layout.intersections[k]
            served[starts[k] : starts[k] + inter.n_signals] = _served(inter, state)

    show(writes)
    for t in range(1, steps + 1):
        ws = guard.apply(float(t), requests(t), halting)
        checker.step(float(t), ws)
        show(ws)
        last_served[served] = t
        worst = np.maximum(worst, np.where(watched, t - last_served, 0.0))
    assert guard.stats.violations == 0
    return worst


def _per_signal(layout: Layout, per_intersection: list[float]) -> np.ndarray:
    counts = [i.n_signals for i in layout.intersections]
    return np.repeat(np.asarray(per_intersection, dtype=float), counts)


@pytest.mark.parametrize("name", BUNDLED)
def test_max_red_bound_with_a_waiting_lane(name: str) -> None:
    """Halting always positive on one lane per intersection, controller holding: no servable
    signal of that lane goes unserved longer than max_red + transition + min green."""
    layout = bundled_layout(name)
    n = layout.n_intersections
    preemptions = []

    @settings(max_examples=4, deadline=None, derandomize=True, database=None)
    @given(seed=st.integers(0, 2**32 - 1), max_red=st.sampled_from([30.0, 60.0, 120.0]))
    def run(seed: int, max_red: float) -> None:
        halting, watched = _waiting_lanes(layout, np.random.default_rng(seed))
        guard = SafetyGuard(layout, max_red=max_red)
        hold = np.full(n, HOLD, dtype=np.int64)
        steps = int(3 * max_red) + 60
        worst = _longest_unserved(layout, guard, halting, watched, steps, lambda t: hold)
        bound = _per_signal(layout, [max_red + _transition_s(i) + _min_green_s(i) for i in layout.intersections])
        over = np.flatnonzero(worst > bound)
        assert over.size == 0, f"signals {over[:5]} unserved {worst[over[:5]]} s > {bound[over[:5]]} s"
        preemptions.append(guard.stats.max_red_preemptions)

    run()
    assert sum(preemptions) > 0  # the bound was reached, and enforced, at least once


@pytest.mark.parametrize("name", BUNDLED)
def test_max_red_bound_against_an_adversarial_controller(name: str) -> None:
    """As above, with random switching: a transition the controller began just before the signal
    starved cannot be cut short, so the bound grows by one transition."""
    layout = bundled_layout(name)
    n = layout.n_intersections
    n_greens = np.array([len(i.greens) for i in layout.intersections], dtype=np.int64)

    @settings(max_examples=4, deadline=None, derandomize=True, database=None)
    @given(
        seed=st.integers(0, 2**32 - 1),
        max_red=st.sampled_from([30.0, 60.0, 120.0]),
        hold_p=st.floats(0.3, 0.95),
    )
    def run(seed: int, max_red: float, hold_p: float) -> None:
        rng = np.random.default_rng(seed)
        halting, watched = _waiting_lanes(layout, rng)
        guard = SafetyGuard(layout, max_red=max_red)

        def requests(t: int) -> np.ndarray:
            r = rng.integers(0, n_greens)
            r[rng.random(n) < hold_p] = HOLD
            return r.astype(np.int64)

        worst = _longest_unserved(layout, guard, halting, watched, int(4 * max_red) + 60, requests)
        bound = _per_signal(layout, [max_red + 2 * _transition_s(i) + _min_green_s(i) for i in layout.intersections])
        over = np.flatnonzero(worst > bound)
        assert over.size == 0, f"signals {over[:5]} unserved {worst[over[:5]]} s > {bound[over[:5]]} s"

    run()


def _all_waiting_worst(layout: Layout, max_red: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    servable = np.concatenate([i.serve_signals.any(axis=0) for i in layout.intersections])
    watched = np.zeros(layout.n_signals_total, dtype=bool)
    watched[(layout.signal_start[layout.mov_int] + layout.mov_signal)] = True
    watched &= servable
    halting = np.ones(len(layout.lanes))
    hold = np.full(layout.n_intersections, HOLD, dtype=np.int64)
    guard = SafetyGuard(layout, max_red=max_red)
    worst = _longest_unserved(layout, guard, halting, watched, steps, lambda t: hold)
    # greedy service: every green once, each after a transition and its min green
    bound = _per_signal(
        layout,
        [max_red + len(i.greens) * (_transition_s(i) + _min_green_s(i)) + 1 for i in layout.intersections],
    )
    return worst, bound


@pytest.mark.parametrize("max_red", [60.0, 120.0])
@pytest.mark.parametrize("name", BUNDLED)
def test_max_red_serves_every_waiting_signal(name: str, max_red: float) -> None:
    """Vehicles waiting everywhere, controller holding: every servable signal is served within
    max_red plus one round of the intersection's greens."""
    layout = bundled_layout(name)
    worst, bound = _all_waiting_worst(layout, max_red, int(4 * max_red))
    over = np.flatnonzero(worst > bound)
    assert over.size == 0, f"signals {over[:5]} unserved {worst[over[:5]]} s > {bound[over[:5]]} s"
    assert worst.max() > max_red  # signals did starve, and were served


def test_max_red_serves_every_waiting_signal_with_a_short_max_red() -> None:
    layout = bundled_layout("hangzhou_4x4")
    worst, bound = _all_waiting_worst(layout, 20.0, 1200)
    over = np.flatnonzero(worst > bound)
    assert over.size == 0, f"signals {over[:5]} unserved {worst[over[:5]]} s > {bound[over[:5]]} s"


# taking over from a running program ------------------------------------------------------------


def _takeover_params() -> list[object]:
    return [pytest.param(name) for name in BUNDLED]


@pytest.mark.parametrize("name", _takeover_params())
def test_takeover_from_any_program_phase_is_legal(name: str) -> None:
    """start() at every phase of every program (mid-transition included), then hold: no violation."""
    layout = bundled_layout(name)
    n = layout.n_intersections
    lengths = np.array([len(i.program) for i in layout.intersections])
    hold = np.full(n, HOLD, dtype=np.int64)
    halting = np.zeros(len(layout.lanes))
    horizon = int(max(sum(p.duration for p in i.program) for i in layout.intersections)) + 2
    horizon = min(horizon, 60)
    for p in range(int(lengths.max())):
        phase = np.minimum(p, lengths - 1).astype(np.int64)
        for fraction in (0.0, 0.5):
            elapsed = np.array(
                [fraction * i.program[q].duration for i, q in zip(layout.intersections, phase, strict=True)]
            )
            guard = SafetyGuard(layout)
            writes = guard.start(0.0, ProgramPosition(phase, elapsed))
            assert writes == {
                k: i.program[q].state for k, (i, q) in enumerate(zip(layout.intersections, phase, strict=True))
            }
            shown = dict(writes)
            for t in range(1, horizon):
                for k, state in guard.apply(float(t), hold, halting).items():
                    inter = layout.intersections[k]
                    assert not signals.lost_green_without_yellow(shown[k], state), (inter.id, p, shown[k], state)
                    assert not signals.conflicting_pairs(state, inter.hard_conflict), (inter.id, p, state)
                    shown[k] = state
            assert guard.stats.violations == 0, guard.stats.violation_log[:3]
            assert (guard.green >= 0).all()  # every intersection reached a green
