"""The AI's run-time path (float32, only the intersections that decide, their inputs read by rows and
nothing between decisions) decides exactly as the float64 full-city reference (`forward` + `deployed_choice`): on every
bundled network through the real loop, at constructed near-ties where float32 cannot tell two greens
apart, and with a float32 error that stays inside its proven bound."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from bundled import BUNDLED, bundled_layout, bundled_scenario

from citysignal.control.ai import (
    F32_UNIT,
    F64_UNIT,
    MOVEMENT_FEATURES,
    AiController,
    CityIndex,
    Deployed,
    Float32Head,
    _head,
    default_policy_path,
    deployed_choice,
    forward,
    green_features,
    head_error_bound,
    load_policy,
    masked_logits,
    movement_features,
    ready,
)
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.loop import ControlLoop, deferrable
from citysignal.network.layout import Layout
from citysignal.scenarios import resolve
from citysignal.twin import Twin
from citysignal.twin.observation import Observation, ProgramPosition

WINDOW_S = 300.0


def reference(ai: AiController, obs: Observation, deciding: np.ndarray) -> tuple[np.ndarray, Deployed]:
    """What the AI requests at a decision step (`deciding`: the intersections due) by the float64 full-city
    rule, and that rule's result."""
    lay = ai.lay
    mov, green = movement_features(lay, obs), green_features(lay, obs)
    scores, _ = forward(ai.params, ai.index, np.nan_to_num(mov), green)
    rule = deployed_choice(
        ai.index, masked_logits(ai.index, scores), mov, green, ai.feature_max, ai.ood_factor, ai.trust
    )
    return np.where(deciding, rule.choice, HOLD), rule


class Compared:
    """The AI as the loop's decider, each of its decisions checked against the reference; it reads its
    inputs first (by rows: only at the intersections deciding; between decisions none, but an isolated
    junction's running green, watched for a gap), then the reference reads whole arrays."""

    def __init__(self) -> None:
        self.ai = AiController()
        self.decisions = 0
        self.skipped = 0

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.ai.reset(layout, position, seed)

    def decide(self, obs: Observation) -> np.ndarray:
        deciding = self.ai.clock.due(obs)
        requests = self.ai.decide(obs)
        assert obs.deferred is not None and not obs.deferred.full_names  # nothing read in full
        if not deciding.any():
            self.skipped += 1
            read = obs.deferred.read_so_far()
            assert "occupancy" not in read
            if "vehicles" in read:  # only where an isolated junction looks for a gap on its green (`GapOut`)
                gap_out = self.ai.clock.gap_out
                assert gap_out is not None
                lay = self.ai.lay
                watched = lay.mov_in[gap_out.isolated[lay.mov_int]]
                assert np.isin(np.flatnonzero(~np.isnan(read["vehicles"])), watched).all()
            assert (requests[~self.ai.pairs.coupled] == HOLD).all()  # a pair of signals runs in turns every step
            return requests
        expected, rule = reference(self.ai, obs, deciding)
        np.testing.assert_array_equal(self.ai.request, expected, err_msg=f"t={obs.time}")  # the policy's choice
        np.testing.assert_array_equal(self.ai.fallback, rule.fallback & deciding)
        np.testing.assert_array_equal(self.ai.overruled, rule.overruled & deciding)
        self.decisions += int(deciding.sum())
        return requests


@pytest.mark.parametrize("name", BUNDLED)
def test_decisions_match_the_reference_through_the_loop(name: str) -> None:
    begin = bundled_scenario(name).begin
    scenario = resolve(name, begin, begin + WINDOW_S)
    layout = bundled_layout(name)
    decider = Compared()
    guard = SafetyGuard(layout)
    with Twin(scenario, layout, fields=decider.ai.requires | GUARD_FIELDS, defer=deferrable(decider.ai)) as twin:
        loop = ControlLoop(twin, guard, decider)
        loop.start(0)
        while not loop.done:
            loop.tick()
    assert decider.decisions > 0
    assert decider.skipped > 0  # steps where no intersection was due read none of its inputs
    assert guard.stats.violations == 0


def _loaded(layout: Layout, seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    n, k = len(layout.lanes), layout.n_intersections
    halting = rng.integers(0, 8, n).astype(float)
    return Observation(
        time=100.0,
        phase=rng.integers(0, 2, k),
        time_in_phase=rng.uniform(10.0, 60.0, k),
        vehicles=halting + rng.integers(0, 6, n),
        halting=halting,
        occupancy=rng.uniform(0.0, 1.0, n),
        backlog=np.zeros(n),
    )


def _sharp_ai(layout: Layout) -> AiController:
    """The shipped policy with its output layer scaled up, so that the learned part of a score weighs
    as much as the anchor's and moves the choice with the inputs (as in tests/learn's parity test)."""
    ai = AiController()
    ai.params["w4"] *= 100.0
    ai.reset(layout, ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1)))
    return ai


def _tipping_points(ai: AiController, obs: Observation, most: int) -> list[tuple[Observation, Observation]]:
    """Pairs of observations a float64 step apart in the occupancy of one green's exits, on either side
    of where the reference's choice at that intersection changes (occupancy feeds only the learned
    part, continuously)."""
    lay = ai.lay
    pairs = []
    for k in np.flatnonzero(ready(obs)):
        g = int(lay.green_start[k])
        exits = lay.mov_out[lay.serve_mov[lay.serve_green == g]]

        def at(t: float, exits: np.ndarray = exits) -> Observation:
            occupancy = np.array(obs.occupancy)
            occupancy[exits] = t
            return replace(obs, occupancy=occupancy)

        def choice(t: float, k: int = k) -> int:
            return int(reference(ai, at(t), ai.clock.due(at(t)))[0][k])

        lo, hi = 0.0, 1.0
        if choice(lo) == choice(hi):
            continue
        while (mid := 0.5 * (lo + hi)) not in (lo, hi):
            lo, hi = (mid, hi) if choice(mid) == choice(lo) else (lo, mid)
        pairs.append((at(lo), at(hi)))
        if len(pairs) == most:
            break
    return pairs


def test_near_ties_are_settled_as_the_reference_settles_them() -> None:
    """At a tipping point the two best greens score within float32's error bound, and within float64's:
    the fast path must notice, score again (in float64, or by the reference's own full-city pass), and
    choose as the reference on both sides."""
    layout = bundled_layout("grid4x4")
    ai = _sharp_ai(layout)
    pairs: list[tuple[Observation, Observation]] = []
    for seed in range(20):  # how many intersections tip within one observation depends on the weights
        pairs += _tipping_points(ai, _loaded(layout, seed), most=4 - len(pairs))
        if len(pairs) == 4:
            break
    assert len(pairs) == 4
    for pair in pairs:
        for obs in pair:
            ai.reset(layout, ProgramPosition(np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(1)))
            expected = reference(ai, obs, ai.clock.due(obs))[0]
            np.testing.assert_array_equal(ai.decide(obs), expected)
            assert ai.rechecks["float64"] + ai.rechecks["reference"] > 0
    assert ai.rechecks["reference"] > 0


def test_float32_scores_stay_within_their_bound() -> None:
    params, _ = load_policy(default_policy_path())
    head32 = Float32Head.of(params)
    for name in ("manhattan_28x7", "bologna_joined", "cologne8"):
        layout = bundled_layout(name)
        index = CityIndex.from_layout(layout)
        obs = _loaded(layout, 7)
        mov, green = movement_features(layout, obs), green_features(layout, obs)
        exact, _ = _head(params, index, mov, green)
        fast = head32(index, mov, green)
        bound = head_error_bound(params, np.abs(mov).max(axis=0), index.most_served, F32_UNIT)
        error = np.abs(fast.astype(np.float64) - exact).max()
        assert 0.0 < error <= bound, (name, error, bound)


def test_the_error_bound_grows_with_every_input_cap() -> None:
    """The controller rounds the caps up and reuses the bound (`AiController._error_bounds`): valid only if a
    larger cap never gives a smaller bound."""
    params, _ = load_policy(default_policy_path())
    rng = np.random.default_rng(3)
    for _ in range(50):
        cap = rng.uniform(0.0, 5.0, MOVEMENT_FEATURES)
        larger = cap + rng.uniform(0.0, 1.0, MOVEMENT_FEATURES) * (rng.random(MOVEMENT_FEATURES) < 0.5)
        for unit in (F32_UNIT, F64_UNIT):
            assert head_error_bound(params, larger, 4, unit) >= head_error_bound(params, cap, 4, unit)
        assert head_error_bound(params, cap, 5, F32_UNIT) >= head_error_bound(params, cap, 4, F32_UNIT)


def test_a_subset_scores_as_the_whole_city() -> None:
    params, _ = load_policy(default_policy_path())
    layout = bundled_layout("cologne8")
    index = CityIndex.from_layout(layout)
    obs = _loaded(layout, 2)
    mov, green = movement_features(layout, obs), green_features(layout, obs)
    chosen = np.arange(layout.n_intersections) % 3 == 1
    sub, movs, greens = index.subset(chosen)
    assert sub.n_intersections == chosen.sum() and np.array_equal(
        np.unique(layout.mov_int[movs]), np.flatnonzero(chosen)
    )
    fresh = replace(sub, served_always=None)
    assert fresh.served_always is None and np.array_equal(sub.always_served, fresh.always_served)
    whole, _ = forward(params, index, mov, green)
    part, _ = forward(params, sub, mov[movs], green[greens])
    np.testing.assert_allclose(part, whole[greens], rtol=1e-12)
    np.testing.assert_array_equal(
        np.argmax(masked_logits(sub, part), axis=1), np.argmax(masked_logits(index, whole), axis=1)[chosen]
    )


@pytest.mark.parametrize("name", ["cologne8", "bologna_joined", "ingolstadt21"])
def test_a_subset_is_the_city_index_of_the_chosen_intersections(name: str) -> None:
    """What `subset` builds from each intersection's ranges, checked against the city's arrays entry by
    entry: the chosen intersections' movements, greens, serve pairs, slots and groups, renumbered."""
    layout = bundled_layout(name)
    index = CityIndex.from_layout(layout)
    rng = np.random.default_rng(5)
    for share in (0.0, 0.3, 1.0):
        chosen = rng.random(layout.n_intersections) < share
        sub, movs, greens = index.subset(chosen)
        rows = np.flatnonzero(chosen)
        np.testing.assert_array_equal(movs, np.flatnonzero(chosen[layout.mov_int]))
        np.testing.assert_array_equal(greens, np.flatnonzero(chosen[layout.green_int]))
        np.testing.assert_array_equal(rows[sub.mov_int], layout.mov_int[movs])
        np.testing.assert_array_equal(rows[sub.green_int], layout.green_int[greens])
        pairs = chosen[layout.green_int[layout.serve_green]]
        np.testing.assert_array_equal(greens[sub.serve_green], layout.serve_green[pairs])
        np.testing.assert_array_equal(movs[sub.serve_mov], layout.serve_mov[pairs])
        np.testing.assert_array_equal(np.where(sub.slots >= 0, greens[np.maximum(sub.slots, 0)], -1), index.slots[rows])
        np.testing.assert_array_equal(sub.local, index.local[greens])
        np.testing.assert_array_equal(sub.always_served, index.always_served[movs])
        served = {(int(greens[g]), int(m)) for group, served_movs in sub.served_by_count
                  for g, ms in zip(group, movs[served_movs].T, strict=True) for m in ms}  # fmt: skip
        assert served == set(zip(layout.serve_green[pairs].tolist(), layout.serve_mov[pairs].tolist(), strict=True))
