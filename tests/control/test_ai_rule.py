"""The AI's deployed rule, without SUMO: the anchor score is Advanced-MP's choice, the trust region and
the out-of-range fallback hand the decision to the anchor exactly when they should, greens the anchor
cannot tell apart go in the anchor's order, the policy leaves young greens alone, and takeovers are
counted and explained in traffic terms."""

from __future__ import annotations

import numpy as np
import pytest
from bundled import bundled_layout

from citysignal.control.adaptive import AdvancedMaxPressure
from citysignal.control.ai import (
    AiController,
    Anchor,
    CityIndex,
    anchor_scores,
    deployed_choice,
    green_features,
    masked_logits,
    movement_features,
)
from citysignal.control.guard import HOLD
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition


def _observation(layout: Layout, halting: np.ndarray, time_in_phase: float = 30.0) -> Observation:
    n = layout.n_intersections
    return Observation(
        time=100.0,
        phase=np.zeros(n, dtype=np.int64),
        time_in_phase=np.full(n, time_in_phase),
        vehicles=halting.copy(),
        halting=halting,
        occupancy=np.minimum(halting * 7.5 / np.maximum(layout.lane_length, 1.0), 1.0),
        backlog=np.zeros(len(layout.lanes)),
    )


def _loaded_green(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Queues only on the lanes of each intersection's last green: the anchor wants that green."""
    halting = np.zeros(len(layout.lanes))
    last = layout.green_start + np.array([len(i.greens) - 1 for i in layout.intersections])
    for g in last:
        halting[layout.mov_in[layout.serve_mov[layout.serve_green == g]]] = 8.0
    return halting, last - layout.green_start


def _favouring(index: CityIndex, greens: np.ndarray) -> np.ndarray:
    """Policy logits that put everything on one green per intersection."""
    logits = masked_logits(index, np.zeros(index.n_greens))
    logits[np.isfinite(logits)] = 0.0
    logits[np.arange(len(greens)), greens] = 10.0
    return logits


@pytest.mark.parametrize("name", ["cologne8", "hangzhou_4x4"])
def test_anchor_scores_pick_what_advanced_mp_picks(name: str) -> None:
    layout = bundled_layout(name)
    index = CityIndex.from_layout(layout)
    rng = np.random.default_rng(4)
    amp = AdvancedMaxPressure()
    amp.reset(layout, ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1)))
    for _ in range(20):
        halting = rng.integers(0, 12, len(layout.lanes)).astype(float)
        obs = Observation(
            time=100.0,
            phase=rng.integers(0, 2, layout.n_intersections),
            time_in_phase=np.full(layout.n_intersections, 30.0),
            vehicles=halting + rng.integers(0, 8, len(layout.lanes)),
            halting=halting,
            occupancy=rng.uniform(0, 1, len(layout.lanes)),
            backlog=rng.integers(0, 3, len(layout.lanes)).astype(float),
        )
        anchor = anchor_scores(index, movement_features(layout, obs), green_features(layout, obs))
        chosen = np.argmax(masked_logits(index, anchor), axis=1)
        request = amp.decide(obs)
        np.testing.assert_array_equal(chosen, np.where(request == HOLD, obs.phase, request))
        amp.last_decision[:] = -np.inf


def _loaded_grid() -> tuple[Layout, CityIndex, np.ndarray, np.ndarray, np.ndarray]:
    """grid4x4 with every intersection's last green loaded: layout, index, the anchor's wanted greens,
    movement and green features."""
    layout = bundled_layout("grid4x4")
    halting, wanted = _loaded_green(layout)
    obs = _observation(layout, halting)
    return layout, CityIndex.from_layout(layout), wanted, movement_features(layout, obs), green_features(layout, obs)


def test_a_movement_every_green_serves_is_no_reason_to_keep_a_green() -> None:
    """hangzhou_4x4's right turns flow under every green: vehicles approaching there keep no green, for
    Advanced-MP and for the anchor alike, while the same vehicles on a through movement do."""
    layout = bundled_layout("hangzhou_4x4")
    index = CityIndex.from_layout(layout)
    always = layout.always_served
    assert always.any() and not always.all()
    np.testing.assert_array_equal(index.always_served, always)
    waiting = _loaded_green(layout)[0] / 4  # short queues: the platoon of 40 on through lanes outweighs them
    n = layout.n_intersections
    amp = AdvancedMaxPressure()
    amp.reset(layout, ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(1)))
    for lanes, kept in ((layout.mov_in[always], False), (layout.mov_in[~always], True)):
        obs = _observation(layout, waiting)
        obs.vehicles[np.setdiff1d(lanes, np.flatnonzero(waiting))] = 40.0
        request = amp.decide(obs)
        amp.last_decision[:] = -np.inf
        anchor = Anchor.of(index, movement_features(layout, obs), green_features(layout, obs))
        assert bool(anchor.keep.any()) is kept
        np.testing.assert_array_equal(request == HOLD, amp.kept)
        assert bool(amp.kept.any()) is kept
        if not kept:
            np.testing.assert_array_equal(request, layout.argmax_green(amp.pressure))


def test_trust_region_replaces_a_starving_choice() -> None:
    layout, index, wanted, mov, green = _loaded_grid()
    in_range = mov.max(axis=0) + 1.0
    starving = np.zeros(layout.n_intersections, dtype=np.int64)  # keep green 0, whose lanes are empty
    rule = deployed_choice(index, _favouring(index, starving), mov, green, in_range, 1.5, 0.5)
    assert rule.overruled.all() and not rule.fallback.any()
    anchor = masked_logits(index, anchor_scores(index, mov, green))
    picked = anchor[np.arange(len(rule.choice)), rule.choice]
    assert (picked >= 0.5 * anchor.max(axis=1)).all() and (rule.choice != starving).all()  # inside the region
    free = deployed_choice(index, _favouring(index, starving), mov, green, in_range, 1.5, 0.0)
    assert not free.overruled.any()
    np.testing.assert_array_equal(free.choice, starving)
    inside = deployed_choice(index, _favouring(index, wanted), mov, green, in_range, 1.5, 0.5)
    assert not inside.overruled.any()


def test_inputs_beyond_the_training_range_fall_back_to_the_anchor() -> None:
    layout, index, wanted, mov, green = _loaded_grid()
    policy = _favouring(index, np.zeros(layout.n_intersections, dtype=np.int64))
    rule = deployed_choice(index, policy, mov, green, np.full(mov.shape[1], 0.1), 1.5, 0.0)
    assert rule.fallback.all()
    np.testing.assert_array_equal(rule.choice, wanted)
    mov[0, 0] = np.nan
    k = int(layout.mov_int[0])
    broken = deployed_choice(index, policy, mov, green, np.nanmax(mov, axis=0) + 1.0, 1.5, 0.0)
    assert broken.fallback[k] and broken.fallback.sum() == 1


def test_controller_counts_and_explains_takeovers_and_holds_young_greens() -> None:
    layout = bundled_layout("grid4x4")
    ai = AiController()
    ai.feature_max = np.full(ai.feature_max.shape, 0.01)
    position = ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1))
    ai.reset(layout, position)
    halting, wanted = _loaded_green(layout)
    assert (ai.decide(_observation(layout, halting, time_in_phase=4.0)) == HOLD).all()  # too young to leave
    ai.reset(layout, position)
    np.testing.assert_array_equal(ai.decide(_observation(layout, halting)), wanted)
    assert ai.stats() == {"ai_fallback_rate": 1.0, "ai_trust_takeover_rate": 0.0}
    text = ai.explain(0)
    assert "outside the range seen in training" in text and "queued" in text
    assert any(layout.lanes[i].rsplit("_", 1)[0] in text for i in layout.mov_in[layout.mov_int == 0])


def test_equally_pressed_greens_go_in_the_anchors_order() -> None:
    """The policy picks a pressure, not one of several greens of that pressure: favouring the last of
    equally pressed greens gets the first (Advanced-MP's order); favouring a green of another pressure
    inside the trust region gets that green; the running green that keeps going stays."""
    layout = bundled_layout("grid4x4")
    index = CityIndex.from_layout(layout)
    n, last = layout.n_intersections, index.local[layout.green_start[1] - 1]
    mov = np.zeros((len(layout.mov_in), 6))  # nothing anywhere: every green presses alike (0)
    green = np.zeros((layout.n_greens, 2))
    in_range = np.ones(6)
    for favoured in (0, 1, last):
        rule = deployed_choice(index, _favouring(index, np.full(n, favoured)), mov, green, in_range, 1.5, 0.5)
        assert not rule.overruled.any() and not rule.fallback.any()
        np.testing.assert_array_equal(rule.choice, np.zeros(n))
    own = np.setdiff1d(layout.serve_mov[layout.serve_green == last], layout.serve_mov[layout.serve_green == 0])
    mov[own[:1], 0] = 0.1  # one vehicle queued for the last green of intersection 0, not for its first
    pressure = Anchor.of(index, mov, green).pressure
    alike = np.flatnonzero(pressure[: last + 1] == pressure[last])  # the greens that serve that vehicle
    assert pressure[last] > pressure[0] and alike[0] > 0
    rule = deployed_choice(index, _favouring(index, np.full(n, last)), mov, green, in_range, 1.5, 0.5)
    assert rule.choice[0] == alike[0] and (rule.choice[1:] == 0).all()
    running = layout.green_start + 2
    green[running, 0] = 1.0
    mov[layout.serve_mov[np.isin(layout.serve_green, running)], 1] = 1.0  # approaching: it keeps going
    assert Anchor.of(index, mov, green).keep[running].all()
    rule = deployed_choice(index, _favouring(index, np.full(n, 2)), mov, green, in_range, 1.5, 0.5)
    np.testing.assert_array_equal(rule.choice, np.full(n, 2))
