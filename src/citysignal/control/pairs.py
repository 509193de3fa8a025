"""Closely spaced signals run as one: two junctions joined by short links never let a vehicle stop on a link.

A short link (`Layout.short_links`: a road that ends within 25 m at the next junction where vehicles may stop)
between two signals holds one car or one bus. A vehicle that enters it behind one that then stops (at a red,
or waiting for a gap to turn) stands with its tail in the box it left, across the paths through that box; on
ingolstadt21's pair of 12.1 m links (gneJ257 and 243641585) two such tails, one in each box, each block the
left turn out of the other link, and both junctions lock for good, whatever the signals show (the vehicles
were taken out one by one: each frees the next). Holding single signals at the pair only moved the lock to
other seeds; traffic engineering runs such junctions (diamond interchanges) as one controller whose phases
clear the link.

`ShortLinkPairs` finds the pairs and, per pair, which greens of the two junctions may show together: a green
that sends vehicles into a link (`G` or `g` on a movement into it) only beside a partner green that shows a
protected green (`G`) on every movement out of it. The *drain* greens of a junction are those allowed beside
every green of its partner (on ingolstadt21: rrrrrrGG at gneJ257, rGGr at 243641585, which clear the links).
The pair then runs in turns: one side free (its controller's greens), the other side in a drain green; the turn
passes after `turn` seconds, or earlier (once it ran `min_turn`) when the free side's last request was a drain
green. So each junction's outside approaches run while the other junction clears the link toward it.

What it costs and buys, the AI on ingolstadt21 (5 seeds, `citysignal bench ingolstadt21 -c ai --seeds 5`): without
it 77.1 s mean, but 115.0 at the seed where the pair locked (65-70 at the others); with it no lock, 85.1 mean and
89.1 worst: each junction's outside approaches get a green only in its turns. Turns of 15, 35 and 40 s gave 90.4,
88.7 and 87.5. With 20 % faulty detectors (`benchmarks/detector_faults.py`, 3 seeds) the AI's delay went from +42.4 %
to +2.7 % of its healthy delay.

Assumes each junction belongs to at most one pair (one with links to two signals is left alone) and that both
junctions have a drain green (else the pair is left alone). A controller's requests are overridden at the pair
every step; the safety guard still has the last word (min green, max red, priority holds), and a guard
preemption may show a forbidden pair of greens for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import HOLD
from citysignal.network.layout import Layout

TURN_S = 25.0  # the longest one side of a pair runs free before the other side's turn
MIN_TURN_S = 10.0  # a turn lasts at least this long before the free side's drain request ends it


@dataclass
class Pair:
    """Two junctions (layout indices) run as one, their drain greens, which side runs free, and since when;
    per side its last request (`asked`) and its last request for a green that is not a drain green (`wish`, its
    turn's green)."""

    sides: tuple[int, int]
    drains: tuple[tuple[int, ...], tuple[int, ...]]
    allowed: NDArray[np.bool_]  # (greens of side 0 x greens of side 1): which may show together
    free: int = 0
    since: float = float("nan")
    asked: list[int] = field(default_factory=lambda: [HOLD, HOLD])
    wish: list[int] = field(default_factory=lambda: [HOLD, HOLD])


def _entries_and_exits(
    layout: Layout, k: int, links: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], dict[int, list[int]]]:
    """At junction k: (greens x lanes) which short links each green sends vehicles into (`G` or `g`), and per
    short link the signals of the movements out of it."""
    inter = layout.intersections[k]
    rows = np.flatnonzero(layout.mov_int == k)
    enters = np.zeros((len(inter.greens), len(layout.lanes)), dtype=bool)
    for m in rows[links[layout.mov_out[rows]]].tolist():
        signal = int(layout.mov_signal[m])
        for g, state in enumerate(inter.greens):
            enters[g, layout.mov_out[m]] |= state[signal] in "Gg"
    exits: dict[int, list[int]] = {}
    for m in rows[links[layout.mov_in[rows]]].tolist():
        exits.setdefault(int(layout.mov_in[m]), []).append(int(layout.mov_signal[m]))
    return enters, exits


def _allowed(layout: Layout, a: int, b: int, links: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(greens of a x greens of b): neither sends vehicles into a link between them that the other does not
    clear with a protected green on every movement out of it."""
    (enter_a, exit_a), (enter_b, exit_b) = _entries_and_exits(layout, a, links), _entries_and_exits(layout, b, links)
    greens_a, greens_b = layout.intersections[a].greens, layout.intersections[b].greens

    def clears(state: str, signals: list[int]) -> bool:
        return all(state[s] == "G" for s in signals)

    into_b = [[x for x in np.flatnonzero(row).tolist() if x in exit_b] for row in enter_a]
    into_a = [[x for x in np.flatnonzero(row).tolist() if x in exit_a] for row in enter_b]
    allowed = np.ones((len(greens_a), len(greens_b)), dtype=bool)
    for i, ga in enumerate(greens_a):
        for j, gb in enumerate(greens_b):
            into_partner = all(clears(gb, exit_b[x]) for x in into_b[i])
            allowed[i, j] = into_partner and all(clears(ga, exit_a[x]) for x in into_a[j])
    return allowed


def find_pairs(layout: Layout) -> list[Pair]:
    """The pairs of signals joined by short links that can run as one (see the module docstring)."""
    links = layout.short_links()
    partners: dict[int, set[int]] = {}
    for m in np.flatnonzero(links[layout.mov_out]).tolist():  # a movement into a short link ...
        downstream = np.flatnonzero(layout.mov_in == layout.mov_out[m])  # ... which a signal's movement leaves
        for k in set(layout.mov_int[downstream].tolist()) - {int(layout.mov_int[m])}:
            partners.setdefault(int(layout.mov_int[m]), set()).add(k)
            partners.setdefault(k, set()).add(int(layout.mov_int[m]))
    pairs = []
    for a, others in sorted(partners.items()):
        b = next(iter(others))
        if len(others) != 1 or len(partners[b]) != 1 or b < a:
            continue
        allowed = _allowed(layout, a, b, links)
        drains = (
            tuple(np.flatnonzero(allowed.all(axis=1)).tolist()),
            tuple(np.flatnonzero(allowed.all(axis=0)).tolist()),
        )
        if drains[0] and drains[1]:
            pairs.append(Pair((a, b), drains, allowed))
    return pairs


class ShortLinkPairs:
    """Runs each pair of `find_pairs` in turns (see the module docstring): `apply` rewrites a controller's
    requests, once per step."""

    def __init__(self, layout: Layout, turn: float = TURN_S, min_turn: float = MIN_TURN_S) -> None:
        self.layout = layout
        self.turn = turn
        self.min_turn = min_turn
        self.pairs = find_pairs(layout)
        self.coupled = np.zeros(layout.n_intersections, dtype=bool)
        for pair in self.pairs:
            self.coupled[list(pair.sides)] = True

    def apply(self, now: float, requests: NDArray[np.int64]) -> NDArray[np.int64]:
        """The requests with each pair's two junctions set to its turn: the free side's last wish (or its
        controller's request before it had one), the other side's drain green."""
        if not self.pairs:
            return requests
        requests = requests.copy()
        for pair in self.pairs:
            asked = [int(requests[k]) for k in pair.sides]
            for side, g in enumerate(asked):
                if g != HOLD:
                    pair.asked[side] = g
                    if g not in pair.drains[side]:
                        pair.wish[side] = g
            if np.isnan(pair.since):
                pair.since = now
            ran = now - pair.since
            if ran >= self.turn or (ran >= self.min_turn and pair.asked[pair.free] in pair.drains[pair.free]):
                pair.free, pair.since = 1 - pair.free, now
            free, held = pair.free, 1 - pair.free
            requests[pair.sides[free]] = pair.wish[free] if pair.wish[free] != HOLD else asked[free]
            drain = pair.asked[held] if pair.asked[held] in pair.drains[held] else pair.drains[held][0]
            requests[pair.sides[held]] = drain
        return requests

    def explain(self, k: int) -> str:
        """Why junction k's request was its pair's turn, or "" when k is in no pair."""
        for pair in self.pairs:
            if k in pair.sides:
                other = self.layout.ids[pair.sides[1 - pair.sides.index(k)]]
                if pair.sides[pair.free] == k:
                    return (f"runs as one with {other} (joined by short links): its turn, while {other} clears the "
                            "links toward it")  # fmt: skip
                return (f"runs as one with {other} (joined by short links): {other}'s turn, so this junction shows "
                        "the green that clears the links toward it")  # fmt: skip
        return ""
