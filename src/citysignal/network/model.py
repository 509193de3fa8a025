"""Typed model of a signalized road network, derived from a SUMO net (see `parse.py`).

An `Intersection` is one SUMO traffic-light system (TLS), which may control several joined junctions.
Its *actions* are the distinct green states of its active program (`greens`); everything between two
greens is a *transition* (yellow, all-red), taken from the program where the program goes from one
green to the other, synthesized (yellow, then all-red if the program uses one) where it does not.

Assumptions and limits:
- the active program is the last `tlLogic` loaded for a TLS (net first, then additional files), as
  SUMO does without WAUTs; programs switched by WAUTs are not modelled;
- a phase is a green (an action) when it shows some green and no yellow; a program made only of
  transitional states has no action and its intersection is left to its program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.network import signals

DEFAULT_MIN_GREEN_S = 5.0
DEFAULT_MAX_GREEN_S = 60.0
ADAPTIVE_PROGRAM_TYPES = frozenset({"actuated", "delay_based", "NEMA"})


@dataclass(frozen=True)
class Movement:
    """One controlled connection: an incoming lane to an outgoing lane through signal `signal`."""

    signal: int
    from_lane: str
    to_lane: str
    direction: str
    pedestrian: bool
    via: str = ""  # its first lane inside the junction (where a vehicle may wait to turn), "" if none


@dataclass(frozen=True)
class ProgramPhase:
    state: str
    duration: float
    min_dur: float | None = None
    max_dur: float | None = None
    name: str = ""


@dataclass(frozen=True)
class Lane:
    id: str
    edge: str
    length: float
    speed: float
    shape: tuple[tuple[float, float], ...]


def _add(a: float | None, b: float | None) -> float | None:
    """Bounds of consecutive phases add up; unknown if either is."""
    return None if a is None or b is None else a + b


@dataclass(frozen=True)
class GreenRun:
    """One green of the program's cycle: consecutive program phases showing the same green."""

    green: int
    duration: float
    min_dur: float | None
    max_dur: float | None
    phases: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Intersection:
    """One traffic-light system with its actions, transitions, conflicts and neighbours."""

    id: str
    junctions: tuple[str, ...]
    program_id: str
    program_type: str
    offset: float
    program: tuple[ProgramPhase, ...]
    movements: tuple[Movement, ...]
    hard_conflict: NDArray[np.bool_]
    upstream: tuple[str, ...] = ()
    downstream: tuple[str, ...] = ()
    default_min_green: float = DEFAULT_MIN_GREEN_S
    default_max_green: float = DEFAULT_MAX_GREEN_S
    _transitions: dict[tuple[int, int], tuple[tuple[str, float], ...]] = field(default_factory=dict, repr=False)

    @property
    def n_signals(self) -> int:
        return len(self.program[0].state)

    @cached_property
    def greens(self) -> tuple[str, ...]:
        """Distinct green states of the program, in program order: the actions."""
        seen: dict[str, None] = {}
        for phase in self.program:
            if not signals.is_transitional(phase.state):
                seen.setdefault(phase.state, None)
        return tuple(seen)

    @cached_property
    def program_green_index(self) -> tuple[int, ...]:
        """For each program phase, the index of its green in `greens`, or -1 for a transition."""
        index = {s: i for i, s in enumerate(self.greens)}
        return tuple(index.get(p.state, -1) for p in self.program)

    @property
    def _honours_min_max(self) -> bool:
        """SUMO reads minDur/maxDur only in programs that adapt; a static program's are inert notes."""
        return self.program_type in ADAPTIVE_PROGRAM_TYPES

    @cached_property
    def min_green(self) -> NDArray[np.float64]:
        """Per green: the default floor, or the net's minDur in a program type SUMO applies it to; never
        above what the program itself shows of that green in one go (consecutive phases together)."""
        out = np.full(len(self.greens), np.inf)
        for run in self.cycle:
            floor = run.min_dur if self._honours_min_max and run.min_dur is not None else self.default_min_green
            out[run.green] = min(out[run.green], floor, run.duration)
        return out

    @cached_property
    def max_green(self) -> NDArray[np.float64]:
        """Per green: the default cap, or the net's maxDur in a program type SUMO applies it to; never
        below what the program itself shows of that green in one go."""
        out = np.zeros(len(self.greens))
        for run in self.cycle:
            cap = run.max_dur if self._honours_min_max and run.max_dur is not None else self.default_max_green
            out[run.green] = max(out[run.green], cap, run.duration)
        return out

    @cached_property
    def yellow_time(self) -> float:
        durations = [p.duration for p in self.program if any(c in "yY" for c in p.state)]
        return max(durations) if durations else signals.DEFAULT_YELLOW_S

    @cached_property
    def all_red_time(self) -> float:
        """Duration of the program's all-red clearance, 0 when the program has none.

        A program with no yellow at all (e.g. converted from CityFlow: 5 s of red between greens) uses
        its clearance as the whole intergreen; a synthesized transition then keeps that intergreen,
        yellow first and the rest red, instead of adding the yellow on top of it."""
        durations = [
            p.duration
            for p in self.program
            if signals.is_transitional(p.state) and not any(c in "yYu" for c in p.state)
        ]
        clearance = max(durations) if durations else 0.0
        if not any(any(c in "yYu" for c in p.state) for p in self.program):
            return max(0.0, clearance - self.yellow_time)
        return clearance

    @cached_property
    def green_signals(self) -> NDArray[np.bool_]:
        """(greens x signals) which signal each action shows green."""
        if not self.greens:
            return np.zeros((0, self.n_signals), dtype=bool)
        return np.stack([signals.green_mask(s) for s in self.greens])

    @cached_property
    def serve_signals(self) -> NDArray[np.bool_]:
        """(greens x signals) which signals each action *serves*: gives right of way (major green),
        or any green for signals that no action shows major (e.g. permissive-only right turns).

        A permissive (minor) green does not count as service where a protected one exists: a
        left turn that must yield can wait forever behind opposing traffic while "green"."""
        if not self.greens:
            return np.zeros((0, self.n_signals), dtype=bool)
        major = np.stack([signals.major_mask(s) for s in self.greens])
        return major | (self.green_signals & ~major.any(axis=0))

    @cached_property
    def pedestrian_signals(self) -> tuple[int, ...]:
        return tuple(sorted({m.signal for m in self.movements if m.pedestrian}))

    @cached_property
    def vehicle_movements(self) -> tuple[Movement, ...]:
        return tuple(m for m in self.movements if not m.pedestrian)

    @cached_property
    def cycle(self) -> tuple[GreenRun, ...]:
        """The program's greens in order, repeats merged (also across the end of the cycle)."""
        runs: list[GreenRun] = []
        for p, (phase, g) in enumerate(zip(self.program, self.program_green_index, strict=True)):
            if g < 0:
                continue
            if runs and runs[-1].green == g and runs[-1].phases[-1] == p - 1:
                last = runs[-1]
                runs[-1] = GreenRun(g, last.duration + phase.duration, _add(last.min_dur, phase.min_dur),
                                    _add(last.max_dur, phase.max_dur), (*last.phases, p))  # fmt: skip
            else:
                runs.append(GreenRun(g, phase.duration, phase.min_dur, phase.max_dur, (p,)))
        wraps = len(runs) > 1 and runs[0].green == runs[-1].green
        if wraps and runs[-1].phases[-1] == len(self.program) - 1 and runs[0].phases[0] == 0:
            last = runs.pop()
            first = runs[0]
            runs[0] = GreenRun(
                first.green,
                first.duration + last.duration,
                _add(last.min_dur, first.min_dur),
                _add(last.max_dur, first.max_dur),
                (*last.phases, *first.phases),
            )
        return tuple(runs)

    def transition(self, src: int, dst: int) -> tuple[tuple[str, float], ...]:
        """States and durations between green `src` and green `dst` (empty when src == dst)."""
        if src == dst:
            return ()
        key = (src, dst)
        if key not in self._transitions:
            own = self._program_transition(src, dst)  # () is a real answer: the program goes green to green
            if own is None:
                own = signals.synthesize_transition(
                    self.greens[src], self.greens[dst], self.yellow_time, self._clearance(src, dst)
                )
            self._transitions[key] = own
        return self._transitions[key]

    @cached_property
    def intergreen(self) -> NDArray[np.float64]:
        """(signals x signals) the program's shortest time from signal i's green ending to signal j's
        green starting within one transition (NaN where the program never hands over from i to j).

        The intergreen matrix of signal engineering, read off the plan: a UTOPIA plan starts some
        greens while conflicting signals are still yellow (an intergreen under the yellow time)."""
        n = self.n_signals
        out = np.full((n, n), np.nan)
        program = self.program
        green = [signals.green_mask(p.state) for p in program]
        for k in range(len(program)):
            lost = green[k - 1] & ~green[k]
            if not lost.any():
                continue
            elapsed, seen = 0.0, green[k - 1].copy()
            for step in range(len(program)):
                p = (k + step) % len(program)
                gained = green[p] & ~seen
                out[np.ix_(lost, gained)] = np.fmin(out[np.ix_(lost, gained)], elapsed)
                seen |= green[p]
                if not signals.is_transitional(program[p].state):
                    break
                elapsed += program[p].duration
        return out

    def _clearance(self, src: int, dst: int) -> float:
        """All-red after the yellow of a synthesized transition: the longest the program's intergreens
        ask beyond the yellow for a signal `src` loses and one `dst` gains; for a hard-conflicting pair
        the program never hands over directly, its all-red (`all_red_time`); otherwise none.

        An all-red after every synthesized yellow cost SUMO's actuated logic on bologna_joined's UTOPIA
        plans 1.6x (453 s against 285 s on the plans' own transitions). The guard's clearance check still
        extends an all-red while a vehicle is trapped in the junction."""
        lost = self.green_signals[src] & ~self.green_signals[dst]
        gained = self.green_signals[dst] & ~self.green_signals[src]
        ig = self.intergreen[np.ix_(lost, gained)]
        need = np.where(np.isnan(ig), np.where(self.hard_conflict[np.ix_(lost, gained)], self.all_red_time, 0.0),
                        np.maximum(0.0, ig - self.yellow_time))  # fmt: skip
        return float(need.max(initial=0.0))

    def _program_transition(self, src: int, dst: int) -> tuple[tuple[str, float], ...] | None:
        """The program's own way from `src` to `dst`, if it has one and it is legal."""
        n = len(self.program)
        for start in range(n):
            if self.program_green_index[start] != src:
                continue
            steps: list[tuple[str, float]] = []
            k = (start + 1) % n
            while self.program_green_index[k] < 0 and k != start:
                steps.append((self.program[k].state, self.program[k].duration))
                k = (k + 1) % n
            if self.program_green_index[k] == dst and self._legal_path(src, dst, steps):
                return tuple(steps)
        return None

    def _legal_path(self, src: int, dst: int, steps: list[tuple[str, float]]) -> bool:
        chain = [self.greens[src], *(s for s, _ in steps), self.greens[dst]]
        for before, after in pairwise(chain):
            if signals.lost_green_without_yellow(before, after, self.pedestrian_signals):
                return False
            if signals.conflicting_pairs(after, self.hard_conflict):
                return False
        return True


@dataclass(frozen=True, eq=False)
class Network:
    """All traffic-light systems of a SUMO net, plus the lanes they touch."""

    net_file: Path
    intersections: tuple[Intersection, ...]
    lanes: dict[str, Lane]
    bounds: tuple[float, float, float, float]
    feeders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # edge -> edges leading only to it
    runs: dict[str, float] = field(default_factory=dict)  # edge -> its road's length up to the next real junction

    @cached_property
    def by_id(self) -> dict[str, Intersection]:
        return {i.id: i for i in self.intersections}

    @property
    def controllable(self) -> tuple[Intersection, ...]:
        """Intersections with at least one green to choose (others keep their own program)."""
        return tuple(i for i in self.intersections if i.greens)
