"""Two signals joined by short links run as one (`control.pairs`): which greens may show together, the turns,
and the ingolstadt21 lock the AI no longer runs into."""

from __future__ import annotations

import numpy as np
from bundled import BUNDLED, bundled_layout

from citysignal.bench.episode import run_episode
from citysignal.control.guard import HOLD
from citysignal.control.pairs import MIN_TURN_S, TURN_S, Pair, ShortLinkPairs, find_pairs
from citysignal.scenarios import resolve


def _pair(pairs: list[Pair], ids: tuple[str, ...], junction: str) -> Pair:
    return next(p for p in pairs if junction in (ids[p.sides[0]], ids[p.sides[1]]))


def test_only_signals_joined_by_short_links_pair_up_and_a_green_into_a_link_needs_its_exit_protected() -> None:
    found = {name: find_pairs(bundled_layout(name)) for name in BUNDLED}
    assert {name for name, pairs in found.items() if pairs} == {"ingolstadt21"}
    layout = bundled_layout("ingolstadt21")
    pair = _pair(found["ingolstadt21"], layout.ids, "gneJ257")
    b, a = pair.sides  # 243641585 (rGgG, rGGr, Grrr) and gneJ257 (GGrrrrGg, rrrrrrGG, rrGGGGrr)
    assert (layout.ids[a], layout.ids[b]) == ("gneJ257", "243641585")
    # rGgG sends vehicles into -174800513, whose left turn at gneJ257 is protected only in rrrrrrGG; GGrrrrGg and
    # rrGGGGrr send them into 174800513, which rGGr clears (its left turn is only permissive in rGgG); Grrr
    # sends them into -174800513's left lane too
    np.testing.assert_array_equal(pair.allowed, [[False, True, False], [True, True, True], [False, True, False]])
    assert pair.drains == ((1,), (1,))  # rGGr and rrrrrrGG clear the links, beside any green of the other


def test_the_pair_runs_in_turns_the_held_side_clearing_the_links() -> None:
    layout = bundled_layout("ingolstadt21")
    pairs = ShortLinkPairs(layout)
    pair = _pair(pairs.pairs, layout.ids, "gneJ257")
    first, second = pair.sides
    requests = np.full(layout.n_intersections, HOLD, dtype=np.int64)

    def ask(now: float, **wanted: int) -> tuple[int, int]:
        r = requests.copy()
        for side, g in wanted.items():
            r[pair.sides[int(side[1])]] = g
        out = pairs.apply(now, r)
        others = np.ones(layout.n_intersections, dtype=bool)
        others[list(pair.sides)] = False
        assert (out[others & ~pairs.coupled] == HOLD).all()
        return int(out[first]), int(out[second])

    assert ask(0.0, s0=0, s1=2) == (0, 1)  # the first side's turn: its green; the second clears the links
    assert ask(5.0, s1=0) == (0, 1)  # the held side's wish waits for its turn
    assert ask(TURN_S - 1, s0=2) == (2, 1)  # the free side changes green within its turn
    assert ask(TURN_S) == (1, 0)  # the turn passes: the second side's last wish, the first clears
    assert ask(TURN_S + MIN_TURN_S - 1, s1=1) == (1, 0)  # it asked for its clearing green: its turn runs min turn
    assert ask(TURN_S + MIN_TURN_S) == (2, 1)  # then the turn passes back early, to the first side's last wish


def test_a_pair_s_turn_is_explained() -> None:
    layout = bundled_layout("ingolstadt21")
    pairs = ShortLinkPairs(layout)
    pair = _pair(pairs.pairs, layout.ids, "gneJ257")
    free, held = (layout.ids[k] for k in pair.sides)
    assert pairs.explain(pair.sides[0]).startswith(f"runs as one with {held}") and "its turn" in pairs.explain(
        pair.sides[0]
    )
    assert f"{free}'s turn" in pairs.explain(pair.sides[1])
    alone = int(np.flatnonzero(~pairs.coupled)[0])
    assert pairs.explain(alone) == ""


def test_ingolstadt21_s_pair_of_short_links_no_longer_locks() -> None:
    """Seed 23423: without the turns, a bus on one 12.1 m link and cars on the other stopped with their tails in
    the boxes they left and locked both junctions for good (a vehicle waited 1,364 s in the first half hour)."""
    m = run_episode(resolve("ingolstadt21", 57600.0, 59400.0), "ai", 23423).metrics
    assert m["safety_violations"] == 0
    assert m["max_waiting"] < 600, m["max_waiting"]
