"""The guard prevents illegal states instead of counting them: a corrupted network model drives a real SUMO run
(cologne1 through libsumo), and every state SUMO shows is read back each step and checked here against the
uncorrupted model: no hard-conflicting greens, no green dropped without yellow, every yellow held at least the
program's own yellow.

The corruptions are those the issue names: a transition that drops a green without yellow, a transition step
with a conflicting pair of greens, a zero-length yellow, and a green that conflicts in itself.
"""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import numpy as np
from bundled import bundled_scenario

from citysignal.control.guard import HOLD, SafetyGuard
from citysignal.network import Intersection, load_network, signals
from citysignal.network.layout import Layout
from citysignal.twin import Twin
from citysignal.twin.observation import ProgramPosition

WINDOW_S = 900.0


def _conflicting(state: str, inter: Intersection) -> str:
    """`state` with one more major green that hard-conflicts with one it shows."""
    major = signals.major_mask(state)
    j = next(j for i, j in zip(*np.nonzero(inter.hard_conflict), strict=True) if major[i] and not major[j])
    return state[:j] + "G" + state[j + 1 :]


def _corrupt(inter: Intersection) -> None:
    """Break the model of `inter` (4 greens) in place, after its derived properties are cached."""
    for name in ("program_green_index", "min_green", "max_green", "serve_signals", "green_signals", "cycle"):
        getattr(inter, name)
    greens = inter.greens
    yellow = inter.transition(2, 0)[0][0]
    inter._transitions[(0, 2)] = ()  # green to green: drops the greens of 0 without yellow
    inter._transitions[(2, 0)] = ((yellow, 0.0),)  # a zero-length yellow
    inter._transitions[(1, 2)] = ((_conflicting(greens[1], inter), 3.0),)  # a step with conflicting greens
    inter.__dict__["greens"] = (*greens[:3], _conflicting(greens[3], inter))  # a green conflicting in itself


def test_a_corrupted_model_never_shows_an_illegal_state_in_sumo() -> None:
    sc = bundled_scenario("cologne1")
    sc = dataclasses.replace(sc, end=sc.begin + WINDOW_S)
    truth = load_network(sc.net_file, sc.additional_files).controllable[0]
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    inter = layout.intersections[0]
    _corrupt(inter)
    floor = min(p.duration for p in truth.program if "y" in p.state)
    guard = SafetyGuard(layout)
    rng = np.random.default_rng(5)
    shown: list[str] = []
    with Twin(sc, layout, fields=frozenset({"halting"})) as twin:
        twin.write(guard.start(twin.time, twin.program_position()))
        while not twin.done:
            now = twin.time
            obs = twin.observe(guard.green.copy(), guard.time_in_phase(now))
            requests = np.array([rng.integers(0, 4) if rng.random() < 0.2 else HOLD], dtype=np.int64)
            twin.write(guard.apply(now, requests, obs.lane("halting")))
            twin.step()
            shown.append(twin.states()[0])
    yellow_run = np.zeros(truth.n_signals)
    for before, after in pairwise(shown):
        assert signals.conflicting_pairs(after, truth.hard_conflict) == [], after
        assert signals.lost_green_without_yellow(before, after, truth.pedestrian_signals) == [], (before, after)
        yellow_before = np.array([c in "yY" for c in before])
        yellow_run = np.where(yellow_before, yellow_run + 1, 0)
        left = yellow_before & ~np.array([c in "yY" for c in after])
        assert (yellow_run[left] >= floor).all(), (before, after, yellow_run[left])
    assert guard.stats.violations == 0
    assert guard.stats.prevented > 0  # the dropped green and the conflicting step were met and not shown
    assert guard.stats.floor_holds > 0  # the zero-length yellow was held
    assert guard.stats.refused > 0  # requests for the green that conflicts in itself
    assert len(guard.stats.prevention_log) == guard.stats.prevented
    assert inter.greens[3] not in shown
    assert {inter.greens[g] for g in range(3)} <= set(shown)  # and the run went on through the legal greens


def test_prevention_state_survives_a_restore() -> None:
    """Mid-way through the safe route to all-red, a restored guard continues with the same writes."""
    sc = bundled_scenario("cologne1")
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    _corrupt(layout.intersections[0])
    n = layout.n_intersections
    guard = SafetyGuard(layout)
    guard.start(0.0, ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(n)))
    halting = np.zeros(len(layout.lanes))
    t = 0.0
    while guard.stats.prevented == 0:
        t += 1.0
        guard.apply(t, np.array([2], dtype=np.int64), halting)
    twin_guard = SafetyGuard(layout)
    twin_guard.restore(guard.state())
    for _ in range(60):
        t += 1.0
        request = np.array([int(t) % 3], dtype=np.int64)
        assert guard.apply(t, request, halting) == twin_guard.apply(t, request, halting)
    assert guard.state() == twin_guard.state()
