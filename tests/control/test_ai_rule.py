"""The AI's deployed rule, without SUMO: the out-of-range fallback and the trust region hand the decision
to the anchor (Advanced-MP) exactly when they should, are counted, and are explained in traffic terms."""

from __future__ import annotations

import numpy as np
from bundled import bundled_layout

from citysignal.control.adaptive import AdvancedMaxPressure
from citysignal.control.ai import AiController, deployed_choice, movement_features
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition


def _observation(layout: Layout, halting: np.ndarray, time: float = 100.0) -> Observation:
    n = layout.n_intersections
    return Observation(
        time=time,
        phase=np.zeros(n, dtype=np.int64),
        time_in_phase=np.full(n, 30.0),
        vehicles=halting.copy(),
        halting=halting,
        occupancy=np.minimum(halting * 7.5 / np.maximum(layout.lane_length, 1.0), 1.0),
        pending=np.zeros(len(layout.lanes)),
    )


def _loaded_green(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Queues only on the lanes of each intersection's last green: the anchor wants that green."""
    halting = np.zeros(len(layout.lanes))
    last = layout.green_start + np.array([len(i.greens) - 1 for i in layout.intersections])
    for g in last:
        halting[layout.mov_in[layout.serve_mov[layout.serve_green == g]]] = 8.0
    return halting, last - layout.green_start


def _anchor(layout: Layout) -> AdvancedMaxPressure:
    anchor = AdvancedMaxPressure()
    anchor.reset(layout, ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1)))
    return anchor


def test_trust_region_replaces_a_starving_choice_with_the_anchors() -> None:
    layout = bundled_layout("grid4x4")
    halting, wanted = _loaded_green(layout)
    obs = _observation(layout, halting)
    mov = movement_features(layout, obs)
    feature_max = mov.max(axis=0) + 1.0
    starving = np.zeros(layout.n_intersections, dtype=np.int64)  # keep green 0, whose lanes are empty
    rule = deployed_choice(layout, starving, mov, feature_max, _anchor(layout), obs, 1.5, 0.5)
    assert rule.overruled.all() and not rule.fallback.any()
    np.testing.assert_array_equal(rule.choice, wanted)
    free = deployed_choice(layout, starving, mov, feature_max, _anchor(layout), obs, 1.5, 0.0)
    assert not free.overruled.any()
    np.testing.assert_array_equal(free.choice, starving)
    inside = deployed_choice(layout, wanted, mov, feature_max, _anchor(layout), obs, 1.5, 0.5)
    assert not inside.overruled.any()


def test_inputs_beyond_the_training_range_fall_back_to_the_anchor() -> None:
    layout = bundled_layout("grid4x4")
    halting, wanted = _loaded_green(layout)
    obs = _observation(layout, halting)
    mov = movement_features(layout, obs)
    small = np.full(mov.shape[1], 0.1)  # a policy trained on far lighter traffic
    policy = np.zeros(layout.n_intersections, dtype=np.int64)
    rule = deployed_choice(layout, policy, mov, small, _anchor(layout), obs, 1.5, 0.0)
    assert rule.fallback.all()
    np.testing.assert_array_equal(rule.choice, wanted)
    mov[0, 0] = np.nan
    k = int(layout.mov_int[0])
    broken = deployed_choice(layout, policy, mov, mov[1:].max(axis=0) + 1.0, _anchor(layout), obs, 1.5, 0.0)
    assert broken.fallback[k] and broken.fallback.sum() == 1


def test_controller_counts_and_explains_takeovers() -> None:
    layout = bundled_layout("grid4x4")
    ai = AiController()
    ai.feature_max = np.full(4, 0.1)
    ai.reset(layout, ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1)))
    halting, wanted = _loaded_green(layout)
    np.testing.assert_array_equal(ai.decide(_observation(layout, halting)), wanted)
    assert ai.stats() == {"ai_fallback_rate": 1.0, "ai_trust_takeover_rate": 0.0}
    text = ai.explain(0)
    edge = layout.lanes[layout.mov_in[layout.mov_int == 0][0]].rsplit("_", 1)[0]
    assert "outside the range seen in training" in text and "queued" in text
    assert any(layout.lanes[i].rsplit("_", 1)[0] in text for i in layout.mov_in[layout.mov_int == 0]), edge
