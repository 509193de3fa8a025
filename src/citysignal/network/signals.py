"""Signal-state strings and the rules that make a sequence of them legal.

A SUMO state string has one character per signal (TLS link index):
`G` major green, `g` minor green (must yield), `y`/`Y` yellow, `u` red-yellow, `r` red, `s` stop
(green after stopping), `o`/`O` off (blinking / no signal, traffic follows the junction's priorities).

Legality, as the safety guard enforces it:
- no two *hard-conflicting* signals are major green (`G`, `O`) at once, and no signal is yellow while
  a hard-conflicting one is major green; a hard conflict is a pair of movements whose paths cross or
  merge at the junction and neither of which the net tells to yield to the other (see `parse.py`);
  a minor green (`g`) always yields, so it never makes a state illegal;
- a vehicle signal that loses its green passes through yellow before red (`y` lasts at least the
  program's yellow time, checked by the guard which knows the clock); pedestrian signals are cleared
  by the program's own pedestrian-red phase instead.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from numpy.typing import NDArray

GREEN_CHARS = frozenset("GgOo")
MAJOR_CHARS = frozenset("GO")
YELLOW_CHARS = frozenset("yYu")
DEFAULT_YELLOW_S = 3.0


def is_transitional(state: str) -> bool:
    """A yellow or all-red state: part of a transition, never an action a controller can request."""
    return any(c in YELLOW_CHARS for c in state) or not any(c in GREEN_CHARS for c in state)


def green_mask(state: str) -> NDArray[np.bool_]:
    return np.fromiter((c in GREEN_CHARS for c in state), dtype=bool, count=len(state))


def major_mask(state: str) -> NDArray[np.bool_]:
    return np.fromiter((c in MAJOR_CHARS for c in state), dtype=bool, count=len(state))


def yellow_mask(state: str) -> NDArray[np.bool_]:
    return np.fromiter((c in YELLOW_CHARS for c in state), dtype=bool, count=len(state))


def conflicting_pairs(state: str, hard_conflict: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Signal pairs that this state shows in conflict (empty for a legal state)."""
    major = major_mask(state)
    active = major | yellow_mask(state)
    bad = hard_conflict & np.outer(major, active)
    rows, cols = np.nonzero(bad)
    return sorted({(int(min(a, b)), int(max(a, b))) for a, b in zip(rows, cols, strict=True)})


def lost_green_without_yellow(before: str, after: str, exempt: Collection[int] = ()) -> list[int]:
    """Signals that go straight from green to red between two consecutive states.

    `exempt` signals (pedestrian crossings: SUMO programs clear them with a pedestrian red while
    vehicles keep their green, not with a yellow) may do so."""
    return [
        i
        for i, (a, b) in enumerate(zip(before, after, strict=True))
        if a in GREEN_CHARS and b not in GREEN_CHARS and b not in YELLOW_CHARS and i not in exempt
    ]


def synthesize_transition(
    src: str, dst: str, yellow_s: float, all_red_s: float
) -> tuple[tuple[str, float], ...]:
    """Yellow (then all-red, if the program uses one) from green state `src` to green state `dst`.

    Signals green in both keep their green (downgraded to minor if either side is minor), signals
    that lose their green turn yellow and then red, signals that gain green stay red until `dst`.
    Every intermediate state only shows greens that `src` already showed, so it is legal if `src` is.
    """
    yellow = []
    red = []
    for a, b in zip(src, dst, strict=True):
        if a in GREEN_CHARS and b in GREEN_CHARS:
            keep = "g" if "g" in (a, b) or "o" in (a, b) else a
            yellow.append(keep)
            red.append(keep)
        elif a in GREEN_CHARS:
            yellow.append("y")
            red.append("r")
        else:
            off = "s" if a == "s" and b == "s" else "r"
            yellow.append(off)
            red.append(off)
    steps: list[tuple[str, float]] = []
    if "y" in yellow:
        steps.append(("".join(yellow), yellow_s))
        if all_red_s > 0:
            steps.append(("".join(red), all_red_s))
    return tuple(steps)
