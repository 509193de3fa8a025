"""The safety guard: the single writer of signal states.

Controllers *request* a green per intersection (or `HOLD`); the guard turns requests into legal
sequences and is the only source of the states the twin shows:

- min green: a green is left only after its minimum (the net's minDur, capped by what the program
  itself shows); an early request is deferred and carried out as soon as it is allowed;
- transitions: every change runs the model's transition (the program's own yellow/all-red where the
  program goes that way, else a synthesized yellow then all-red), never a direct green-to-red;
- prevention: every state is checked *before* it is written, against the state shown now: no
  hard-conflicting greens, no green dropped without yellow, the right number of signals. A state that
  fails is never written (counted as `prevented`, logged): the intersection goes to all-red through a
  legal transition (yellow for what shows green, held for the yellow floor, then red) and then on to the
  requested green. A green that conflicts in itself is never requested of the twin: requests for it are
  refused. So safety does not rest on the network model being right (e.g. a transition that drops a
  green, a corrupted green);
- yellow and all-red floors: a signal leaves yellow (`y`/`Y`) only after it showed yellow for the
  yellow floor, and an all-red state is left only after the all-red floor; a shorter transition step is
  held (counted as `floor_holds`). The floors are the program's own (its shortest yellow, its shortest
  all-red), else `signals.DEFAULT_YELLOW_S` yellow and no all-red. Red-yellow (`u`) has no floor;
- clearance: a change ends with the new green only once the junction box is clear of vehicles
  standing or crawling inside it (`Observation.box`) on a movement that has lost its green and
  conflicts with one the new green starts (a permissive left turn waiting for a gap, or one that
  found it as the yellow began: let it meet the new green's traffic and both wait for each other).
  Until then, for at most `MAX_CLEARANCE_S`, the guard shows all-red for those signals. Without it,
  such a vehicle meets the new green inside the box and two vehicles that each yield to the other
  lock the junction for good (seen on cologne3's and cologne1's clustered junctions, with SUMO's
  teleporting off). Needs the `box` observation; without it, the transitions run as modelled;
- max red: a vehicle signal whose vehicles have waited `max_red` seconds without being *served*
  preempts the controller: the guard switches (after min green) to the green that serves it (see
  `Intersection.serve_signals`), also serving most other such signals. Served means what a driver
  feels: the signal shows green (`G` or `g`) and its vehicles discharge (a vehicle crossed the stop
  line of one of its lanes in that second), or nobody waits there. A permissive left turn whose
  vehicles find gaps is served; one blocked behind opposing traffic, or a green into a full lane, is
  not. A green that serves the signal outright (`Intersection.serve_signals`) stops its clock while it shows
  (as the next sentences say, a blocked one cannot be helped by preempting for it), so only permissive
  greens have their stop lines read. Without stop-line counts (`passed`), a green counts as service when it
  is major (the permissive green of a signal that also has a protected one does not). A signal that was shown a
  green serving it and still did not discharge is blocked beyond the guard's reach (a full exit, a
  queue that is not there): the guard preempts for it again only once the bound has passed since that
  green, and leaves the controller free meanwhile. Before, blocked signals took turns while another one
  waited (ingolstadt21, seed 23423: two blocked signals for 40 minutes, while a third, free to go, never
  got its green). Waiting counts the queue behind a stub approach and vehicles waiting to enter too
  (the loop hands `Observation.waiting`: ingolstadt21's left turn onto a 0.2 m stub queued on the road
  before it, unseen, for 40 min).
  Pedestrian signals have no detectors here, so they are served by the controllers' cycles.

Detector readings may be faulty (see `citysignal.twin.faults`): a NaN halting or stop-line count is
*unknown*. An unknown halting count counts as vehicles waiting (the max-red clock runs), an unknown
count as discharging (a green shown to it serves it): a signal nobody can see is still served within
max red, and never preempted for on a guess.

It counts requests refused (not a green of that intersection, or a green that conflicts in itself) and
deferred (min green or a running transition), max-red preemptions, prevented writes, floor holds, and
violations: any written or observed state that shows hard-conflicting greens or drops a green without
yellow. Since every write is checked first it never writes one; in monitor mode (SUMO runs its own
program, e.g. `actuated`) it checks what SUMO shows instead.

Assumes a fixed 1 s control step; durations shorter than a step last one step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.network import signals
from citysignal.network.layout import Layout
from citysignal.network.model import Intersection
from citysignal.twin.observation import LaneRows, ProgramPosition

HOLD = -1
GUARD_FIELDS = frozenset({"halting", "backlog", "passed", "box"})  # what `apply` reads from every observation
GUARD_DEFERRED = frozenset({"passed", "box"})  # of those, what it can read by rows (`Observation.rows`)
DEFAULT_MAX_RED_S = 120.0
MAX_CLEARANCE_S = 5.0
CLEARANCE_YELLOW = frozenset("yY")  # the yellow that clears a lost green (red-yellow `u` announces one)
LOG_LINES = 100

logger = logging.getLogger(__name__)


@dataclass
class GuardStats:
    refused: int = 0
    deferred: int = 0
    max_red_preemptions: int = 0
    clearance_extensions: int = 0  # seconds of all-red added while vehicles waited inside a junction
    violations: int = 0
    violation_log: list[str] = field(default_factory=list)
    prevented: int = 0  # states that failed the check before writing and were never shown
    floor_holds: int = 0  # transition steps held until the yellow or all-red floor was reached
    prevention_log: list[str] = field(default_factory=list)


def _program_floor(inter: Intersection, yellow: bool) -> float:
    """The program's shortest yellow (or all-red) step; 0 when it has none."""
    durations = [
        p.duration
        for p in inter.program
        if p.duration > 0
        and signals.is_transitional(p.state)
        and (any(c in CLEARANCE_YELLOW for c in p.state) if yellow else not signals.yellow_mask(p.state).any())
    ]
    return min(durations, default=0.0)


def _all_red(state: str) -> bool:
    return not any(c in signals.GREEN_CHARS or c in signals.YELLOW_CHARS for c in state)


@dataclass(frozen=True)
class _Look:
    """What a state string shows, per signal (read once per distinct state: the guard looks at the same few
    states of each intersection every step)."""

    green: NDArray[np.bool_]
    major: NDArray[np.bool_]
    clearing: NDArray[np.bool_]  # yellow that clears a lost green (`CLEARANCE_YELLOW`)
    steady: NDArray[np.bool_]  # not `clearing`
    clears: bool  # some signal shows it: most states (greens, all-red) do not, and skip the yellow bookkeeping
    all_red: bool

    @classmethod
    def of(cls, state: str) -> _Look:
        clearing = np.fromiter((c in CLEARANCE_YELLOW for c in state), dtype=bool, count=len(state))
        green, major = signals.green_mask(state), signals.major_mask(state)
        return cls(green, major, clearing, ~clearing, bool(clearing.any()), _all_red(state))


def _to_yellow(state: str) -> str:
    """What was green turns yellow, what was yellow stays, the rest is red: legal after any state."""
    return "".join("y" if c in signals.GREEN_CHARS else c if c in CLEARANCE_YELLOW else "r" for c in state)


class SafetyGuard:
    """The only writer of signal states, for every intersection of one `Layout` (the rules it enforces are in
    the module docstring). It never reads the simulator: all it knows comes in through its arguments.

    Use: `start` takes over from the intersections' programs where they stand, then `apply` runs once per step
    (1 s) with the controllers' requests and the detector readings and returns the states to write now
    (intersection index -> state string; only the changes). When SUMO runs its own program, `adopt` then
    `monitor` every step check what it shows instead. `state` / `restore` carry the guard across a snapshot.

    Per intersection (arrays in `Layout` order):
    - `green`: the green showing (index into the intersection's `greens`), or HOLD (-1) during a transition;
    - `target`: the green the running transition leads to, HOLD when none runs;
    - `since`: when the green showing (or the transition) began (s);
    - `pending`: a request deferred by min green or a running transition, carried out once allowed; else HOLD;
    - `step_until`: when the running transition's current step ends (s; inf when none runs);
    - `shown`: the state string showing now;
    - `yellow_floor`, `all_red_floor`: the shortest yellow and all-red the intersection may show (s).

    Per signal (all intersections' signals in a row, from `Layout.signal_start`): `red_since`, when it last had
    nobody waiting or a permissive green of it discharged, and `offered`, when a green serving it outright last
    showed; the max-red clock runs from the later of the two. `stats`
    (`GuardStats`) counts what was refused, deferred, preempted, extended, prevented, held and violated.
    `max_red` is the max-red bound (s).
    """

    def __init__(self, layout: Layout, max_red: float = DEFAULT_MAX_RED_S) -> None:
        self.layout = layout
        self.max_red = max_red
        self.stats = GuardStats()
        n = layout.n_intersections
        self.green = np.full(n, HOLD, dtype=np.int64)
        self.target = np.full(n, HOLD, dtype=np.int64)
        self.since = np.zeros(n)
        self.step_until = np.full(n, np.inf)
        self.pending = np.full(n, HOLD, dtype=np.int64)
        self.shown: list[str] = [i.program[0].state for i in layout.intersections]
        self._steps: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        self._min_green = [i.min_green for i in layout.intersections]
        self._n_greens = np.array([len(i.greens) for i in layout.intersections], dtype=np.int64)
        total = layout.n_signals_total
        self._signal_int = np.repeat(
            np.arange(n), [i.n_signals for i in layout.intersections]
        ).astype(np.int64)
        self._mov_signal = layout.signal_start[layout.mov_int] + layout.mov_signal
        servable = np.zeros(total, dtype=bool)
        for k, inter in enumerate(layout.intersections):
            servable[layout.signal_start[k] : layout.signal_start[k] + inter.n_signals] = (
                inter.serve_signals.any(axis=0)
            )
        self._servable = servable
        self._served_by: list[dict[str, np.ndarray]] = [
            dict(zip(i.greens, i.serve_signals, strict=True)) for i in layout.intersections
        ]
        self._shown_served = np.zeros(total, dtype=bool)
        self._shown_permissive = np.zeros(total, dtype=bool)  # shown a green (G or g) that does not serve it
        self._last_passed = np.zeros(len(layout.lanes))  # each lane's stop-line count when last read
        self._passed_read = np.zeros(len(layout.lanes), dtype=bool)  # read since the start
        self.red_since = np.zeros(total)
        self.offered = np.full(total, -np.inf)  # per signal: when a green that serves it last showed
        self._box: LaneRows | None = None
        self._box_now: dict[int, NDArray[np.float64]] = {}  # per intersection whose change may end now: its box
        self._cleared = np.zeros(n)
        self._box_movements = [
            (layout.mov_signal[rows], layout.mov_box[rows])
            for rows in (np.flatnonzero((layout.mov_int == k) & (layout.mov_box >= 0)) for k in range(n))
        ]
        self._checked: dict[tuple[int, str, str], list[str]] = {}
        self._looks: dict[str, _Look] = {}
        # per (state shown, state next): the signals whose clearing yellow the next state ends (local indices)
        self._leaving: dict[tuple[str, str], NDArray[np.int64]] = {}
        self._start: list[int] = layout.signal_start.tolist()  # a Python int slices faster than a NumPy one
        self._unsafe = np.array(
            [bool(signals.conflicting_pairs(g, i.hard_conflict)) for i in layout.intersections for g in i.greens],
            dtype=bool,
        )  # per global green: one that shows hard-conflicting greens in itself is never shown
        self.yellow_floor = np.array(
            [_program_floor(i, True) or signals.DEFAULT_YELLOW_S for i in layout.intersections]
        )
        self.all_red_floor = np.array([_program_floor(i, False) for i in layout.intersections])
        self._yellow_since = np.full(total, np.inf)  # when each signal turned yellow; inf: not yellow
        self._all_red_from = np.full(n, np.inf)  # when each intersection turned all-red; inf: not all-red

    # state --------------------------------------------------------------------------------
    def time_in_phase(self, now: float) -> NDArray[np.float64]:
        return np.asarray(now - self.since, dtype=np.float64)

    def start(self, now: float, position: ProgramPosition) -> dict[int, str]:
        """Take over from each intersection's running program without a jump; returns the writes.

        In a green, the green simply continues. In a transition, the rest of the program's
        transition runs on if it is legal; otherwise the model's transition from the green before
        to the green after starts afresh (a program may, e.g., show a green beside a conflicting
        yellow, which SUMO accepts but the guard does not)."""
        writes: dict[int, str] = {}
        for k, inter in enumerate(self.layout.intersections):
            p, elapsed = int(position.phase[k]), float(position.elapsed[k])
            g = inter.program_green_index[p]
            self.since[k] = now - elapsed
            self._show(k, inter.program[p].state, now - elapsed, check=False)
            if g >= 0 and self._safe_target(k, g) == g:
                self.green[k] = g
                writes[k] = inter.program[p].state
                continue
            if g >= 0:  # the program's own green conflicts in itself: SUMO showed it, the guard leaves it now
                self.target[k] = self._safe_target(k, g)
                self.since[k] = now
                self._prevent(k, inter.program[p].state, ["the program's green conflicts in itself"], "green")
                self._advance(k, now, writes)
                continue
            n = len(inter.program)
            steps = [(inter.program[p].state, inter.program[p].duration - elapsed)]
            q = (p + 1) % n
            while inter.program_green_index[q] < 0 and q != p:
                steps.append((inter.program[q].state, inter.program[q].duration))
                q = (q + 1) % n
            self.target[k] = self._safe_target(k, inter.program_green_index[q])
            chain = [state for state, _ in steps] + [inter.greens[self.target[k]] if self.target[k] >= 0 else ""]
            if all(not self._problems(k, a, b) for a, b in pairwise(chain)):
                writes[k] = steps[0][0]
                self._steps[k] = steps[1:]
                self.step_until[k] = now + max(1.0, steps[0][1])
                continue
            r = (p - 1) % n
            while inter.program_green_index[r] < 0 and r != p:
                r = (r - 1) % n
            before = inter.program_green_index[r]
            self._steps[k] = (
                list(inter.transition(before, int(self.target[k]))) if min(before, self.target[k]) >= 0 else []
            )
            self.since[k] = now
            self._advance(k, now, writes)
        self.red_since[:] = now
        return writes

    # one control step ---------------------------------------------------------------------
    def apply(
        self,
        now: float,
        requests: NDArray[np.int64],
        halting: NDArray[np.float64],
        passed: NDArray[np.float64] | LaneRows | None = None,
        box: NDArray[np.float64] | LaneRows | None = None,
        hold: NDArray[np.int64] | None = None,
    ) -> dict[int, str]:
        """Turn this step's requests into the states to write now (only those that change).

        `halting` and `passed` are per layout lane: vehicles waiting for its signal now
        (`Observation.waiting`),
        and vehicles that crossed the lane's stop line since the start (cumulative; see
        `Observation.passed`); `box` is per `Layout.box_lanes`: vehicles not yet clear of the junction
        (`Observation.box`). `passed` and `box` may be readers of the rows asked for (`Observation.rows`):
        the guard then reads the boxes only where a change is about to end, and the stop lines only where
        a green shows or is about to (the decisions are those of whole arrays). `hold` (per intersection, a
        green or HOLD) is priority (`control.priority`): that green is reached by the usual legal way and
        kept, whatever the controller requests and whoever starves meanwhile."""
        self._box = (lambda rows: box[rows]) if isinstance(box, np.ndarray) else box
        writes: dict[int, str] = {}
        due = np.flatnonzero(self.step_until <= now)
        self._box_now = self._boxes(due)
        for j in due.tolist():
            self._advance(j, now, writes)
        self._box_now = {}

        requests = np.where(requests == HOLD, self.pending, requests)
        requests = self._preempt_starved(now, requests, halting, passed)
        if hold is not None:
            requests = np.where(hold != HOLD, hold, requests)

        in_green = self.green >= 0
        bad = (requests != HOLD) & ((requests < 0) | (requests >= self._n_greens))
        index = self.layout.green_start + np.clip(requests, 0, np.maximum(self._n_greens - 1, 0))
        bad |= (requests != HOLD) & self._unsafe[np.minimum(index, len(self._unsafe) - 1)]
        self.stats.refused += int(bad.sum())
        requests = np.where(bad, HOLD, requests)
        self.pending = np.where(requests == self.green, HOLD, self.pending)
        change = in_green & (requests != HOLD) & (requests != self.green)
        busy = ~in_green & (requests != HOLD) & (requests != self.target)
        for k in np.flatnonzero(change | busy):
            want = int(requests[k])
            if busy[k] or now - self.since[k] < self._min_green[k][self.green[k]]:
                if self.pending[k] != want:
                    self.stats.deferred += 1
                    self.pending[k] = want
                continue
            self.pending[k] = HOLD
            self._begin_transition(int(k), want, now, writes)
        if passed is not None and not isinstance(passed, np.ndarray):
            self._read_ahead(now, passed)
        return writes

    def _lanes_of(self, movements: NDArray[np.bool_]) -> NDArray[np.int64]:
        """The incoming lanes of these movements (a mask over the layout's movements), each once."""
        lanes = np.zeros(len(self.layout.lanes), dtype=bool)
        lanes[self.layout.mov_in[movements]] = True
        return np.flatnonzero(lanes)

    def _read_ahead(self, now: float, passed: LaneRows) -> None:
        """Read the stop lines the next step's service check will diff against: the lanes of every permissive
        green showing now (`_shown_permissive`), and of every intersection whose change may move on at the next
        step (a green it reaches then counts the vehicles that crossed since now). Rows read already at this
        instant are not read again (`Deferred` keeps them)."""
        moving_on = (self.step_until <= now + 1.0)[self.layout.mov_int]
        rows = self._lanes_of(self._shown_permissive[self._mov_signal] | moving_on)
        self._last_passed[rows] = passed(rows)
        self._passed_read[rows] = True

    def _preempt_starved(
        self,
        now: float,
        requests: NDArray[np.int64],
        halting: NDArray[np.float64],
        passed: NDArray[np.float64] | LaneRows | None,
    ) -> NDArray[np.int64]:
        lay = self.layout
        queue = halting[lay.mov_in]
        queue = np.where(np.isnan(queue), 1.0, queue)  # unknown: someone may be waiting
        waiting = np.bincount(self._mov_signal, weights=queue, minlength=lay.n_signals_total) > 0
        if passed is None:
            served = self._shown_served
        else:
            # Only a permissive green's discharge counts: a green that serves a signal outright is offered to it,
            # which stops its clock (`offered` below) whether or not its vehicles move, so a reader is asked for
            # the lanes of the permissive greens showing only (none on a grid of protected turns: at 2,500
            # signals that spared 10,000 detector reads a step).
            if isinstance(passed, np.ndarray):
                rows, now_count = np.arange(len(lay.lanes)), passed
            else:
                rows = self._lanes_of(self._shown_permissive[self._mov_signal])
                now_count = passed(rows)
            last = np.where(self._passed_read[rows], self._last_passed[rows], now_count)
            # A detector's count can restart (a new aggregation interval): never a negative flow.
            step = np.zeros(len(lay.lanes))
            step[rows] = np.maximum(now_count - last, 0.0)
            self._last_passed[rows] = np.where(np.isnan(now_count), last, now_count)
            self._passed_read[rows] = True
            moved = step[lay.mov_in]
            moved = np.where(np.isnan(moved), 1.0, moved)  # unknown: a green may be discharging
            discharged = np.bincount(self._mov_signal, weights=moved, minlength=lay.n_signals_total) > 0
            served = self._shown_permissive & discharged
        self.red_since[served | ~waiting] = now
        self.offered[self._shown_served] = now
        # a signal shown a green that serves it within the bound, and still not discharging, is blocked
        # beyond the guard's reach: another preemption for it only takes the green from the others
        starved = waiting & self._servable & (now - np.maximum(self.red_since, self.offered) > self.max_red)
        if not starved.any():
            return requests
        requests = requests.copy()
        for k in np.unique(self._signal_int[starved]):
            g = self.green[k]
            if g < 0 or now - self.since[k] < self._min_green[k][g]:
                continue
            start = lay.signal_start[k]
            inter = lay.intersections[k]
            # The running green already does what it can for the signals it serves (one that is
            # blocked, e.g. behind a left-turner on a shared lane, is not helped by keeping it).
            local = starved[start : start + inter.n_signals] & ~inter.serve_signals[g]
            if not local.any():
                continue
            # Serve the longest-starved signal first, by the clock `starved` reads (so every one is reached
            # however short max_red is), with the green that also serves the most other starved signals.
            clock = np.maximum(
                self.red_since[start : start + inter.n_signals], self.offered[start : start + inter.n_signals]
            )
            red_for = np.where(local, now - clock, -1.0)
            oldest = int(np.argmax(red_for))
            count = inter.serve_signals[:, local].sum(axis=1)
            safe = ~self._unsafe[lay.green_start[k] : lay.green_start[k] + len(inter.greens)]
            options = np.where(inter.serve_signals[:, oldest] & safe, count, -1)
            best = int(np.argmax(options))
            if options[best] >= 0 and best != requests[k]:
                self.stats.max_red_preemptions += 1
                requests[k] = best
        return requests

    def _begin_transition(self, k: int, want: int, now: float, writes: dict[int, str]) -> None:
        steps = list(self.layout.intersections[k].transition(int(self.green[k]), want))
        self.green[k] = HOLD
        self.target[k] = want
        self.since[k] = now
        self._steps[k] = steps
        self._advance(k, now, writes)

    def _advance(self, k: int, now: float, writes: dict[int, str]) -> None:
        """Show the next state of a running change, once it passed the floors and the check.

        Terminates: a failed check replaces what follows with the way to all-red, whose states are
        legal after any legal state; from all-red only a green can fail (it conflicts in itself), and
        each such green is dropped for good, down to parking in all-red."""
        while True:
            state, duration, kind = self._next_state(k)
            wait = self._floor_wait(k, state, now)
            if wait > 1e-9:
                self.stats.floor_holds += 1
                self.step_until[k] = now + wait
                return
            problems = self._problems(k, self.shown[k], state)
            if not problems:
                break
            self._prevent(k, state, problems, kind)
        if kind == "step":
            self._steps[k].pop(0)
            self.step_until[k] = now + max(1.0, duration)
        elif kind == "clear":
            self._cleared[k] += 1.0
            self.stats.clearance_extensions += 1
            self.step_until[k] = now + 1.0
        elif kind == "green":
            self._cleared[k] = 0.0
            self.green[k] = self.target[k]
            self.target[k] = HOLD
            self.since[k] = now
            self.step_until[k] = np.inf
        else:  # parked in all-red: no green of this intersection can be shown
            self.step_until[k] = np.inf
            return
        writes[k] = state
        self._show(k, state, now)

    def _next_state(self, k: int) -> tuple[str, float, str]:
        """The state a running change shows next, its duration, and what it is (nothing is changed)."""
        if self._steps[k]:
            state, duration = self._steps[k][0]
            return state, duration, "step"
        if self.target[k] == HOLD:
            return self.shown[k], np.inf, "park"
        if self._cleared[k] < MAX_CLEARANCE_S and self._box_blocked(k):
            return "".join("r" if c in signals.YELLOW_CHARS else c for c in self.shown[k]), 1.0, "clear"
        return self.layout.intersections[k].greens[self.target[k]], np.inf, "green"

    def _look(self, state: str) -> _Look:
        look = self._looks.get(state)
        if look is None:
            look = self._looks[state] = _Look.of(state)
        return look

    def _floor_wait(self, k: int, state: str, now: float) -> float:
        """Seconds the shown state must still stay before `state` may follow it (<= 0: none)."""
        before = self.shown[k]
        shown, after = self._look(before), self._look(state)
        wait = 0.0
        if shown.clears:  # only a yellow showing now can be left too early
            leaving = self._leaving.get((before, state))
            if leaving is None:
                n = min(len(shown.clearing), len(after.clearing))
                leaving = self._leaving[before, state] = np.flatnonzero(shown.clearing[:n] & ~after.clearing[:n])
            if leaving.size:
                start = self._start[k]
                since = self._yellow_since[start : start + len(before)]
                wait = float(since[leaving].max()) + self.yellow_floor[k] - now
        if shown.all_red and not after.all_red:
            wait = max(wait, float(self._all_red_from[k] + self.all_red_floor[k] - now))
        return wait

    def _prevent(self, k: int, state: str, problems: list[str], kind: str) -> None:
        """Count and log a state that will not be shown; plan the legal way on instead."""
        self.stats.prevented += 1
        if len(self.stats.prevention_log) < LOG_LINES:
            line = f"{self.layout.ids[k]}: not shown {state!r}: {'; '.join(problems)}"
            self.stats.prevention_log.append(line)
            logger.warning("safety guard: %s", line)
        shown = self.shown[k]
        inter = self.layout.intersections[k]
        if not _all_red(shown):
            route = [(_to_yellow(shown), float(self.yellow_floor[k]))] if signals.green_mask(shown).any() else []
            self._steps[k] = [*route, ("r" * inter.n_signals, float(self.all_red_floor[k]))]
            return
        self._steps[k] = []
        if kind == "green":
            self._unsafe[self.layout.green_start[k] + self.target[k]] = True
            self.target[k] = self._safe_target(k, HOLD)

    def _safe_target(self, k: int, g: int) -> int:
        """`g` if it can be shown, else the first green of `k` that can, else HOLD."""
        start = int(self.layout.green_start[k])
        unsafe = self._unsafe[start : start + int(self._n_greens[k])]
        if 0 <= g < len(unsafe) and not unsafe[g]:
            return g
        safe = np.flatnonzero(~unsafe)
        return int(safe[0]) if safe.size else HOLD

    def _boxes(self, due: NDArray[np.int64]) -> dict[int, NDArray[np.float64]]:
        """The box lanes of those of `due` whose change may end now (no transition step left, the clearance
        not used up: `_next_state` asks `_box_blocked`), read in one call: a read by rows costs about ten
        microseconds before the first lane, and at city scale a hundred changes end in a step."""
        if self._box is None:
            return {}
        due = due[(self.target[due] != HOLD) & (self._cleared[due] < MAX_CLEARANCE_S)]
        ending = [k for k in due.tolist() if not self._steps[k] and self._box_movements[k][1].size]
        if not ending:
            return {}
        rows = [self._box_movements[k][1] for k in ending]
        counts = self._box(np.concatenate(rows))
        return dict(zip(ending, np.split(counts, np.cumsum([len(r) for r in rows[:-1]])), strict=True))

    def _box_blocked(self, k: int) -> bool:
        """Vehicles wait inside the junction on a signal the coming green leaves red, in conflict
        with a signal that green starts."""
        if self._box is None:
            return False
        sig, box = self._box_movements[k]
        counts = self._box_now.get(k)
        inside = sig[(self._box(box) if counts is None else counts) > 0]
        if inside.size == 0:
            return False
        inter = self.layout.intersections[k]
        target = inter.greens[self.target[k]]
        trapped = np.zeros(inter.n_signals, dtype=bool)
        trapped[inside] = True
        trapped &= ~self._look(target).green
        started = self._look(target).major & ~self._look(self.shown[k]).major
        return bool(inter.hard_conflict[np.ix_(trapped, started)].any())

    # checking -----------------------------------------------------------------------------
    def _show(self, k: int, state: str, now: float, check: bool = True) -> None:
        if check:
            problems = self._problems(k, self.shown[k], state)
            if problems:
                self.stats.violations += 1
                if len(self.stats.violation_log) < 100:
                    self.stats.violation_log.append(f"{self.layout.ids[k]}: {'; '.join(problems)}")
        before = self.shown[k]
        self.shown[k] = state
        start = self._start[k]
        look = self._look(state)
        served = self._served_by[k].get(state)
        if served is None:  # a transition or a foreign state: it serves what it shows major
            served = look.major
        end = start + len(state)
        self._shown_served[start:end] = served
        self._shown_permissive[start:end] = look.green & ~served
        if look.clears:  # a clearing yellow keeps the time it began
            yellow_since = self._yellow_since[start:end]  # a view: updated in place
            yellow_since[look.steady] = np.inf
            np.minimum(yellow_since, now, out=yellow_since, where=look.clearing)
        elif self._look(before).clears or len(before) != len(state):  # else no yellow shows there already
            self._yellow_since[start:end] = np.inf
        if not look.all_red:
            self._all_red_from[k] = np.inf
        elif now < self._all_red_from[k]:
            self._all_red_from[k] = now

    def _problems(self, k: int, before: str, after: str) -> list[str]:
        key = (k, before, after)
        if key not in self._checked:
            inter = self.layout.intersections[k]
            problems = []
            if len(after) != inter.n_signals:
                problems.append(f"state {after!r} has {len(after)} signals, expected {inter.n_signals}")
            else:
                pairs = signals.conflicting_pairs(after, inter.hard_conflict)
                if pairs:
                    problems.append(f"conflicting greens {pairs[:3]} in {after!r}")
                dropped = signals.lost_green_without_yellow(before, after, inter.pedestrian_signals)
                if dropped:
                    problems.append(f"green to red without yellow on signals {dropped[:5]} ({before!r} -> {after!r})")
            self._checked[key] = problems
        return self._checked[key]

    def adopt(self, now: float, states: list[str]) -> None:
        """Start monitoring a program SUMO runs itself, from the states it shows now."""
        for k, state in enumerate(states):
            self._show(k, state, now, check=False)
            self._track(k, state, now)
        self.red_since[:] = now

    def monitor(self, now: float, states: list[str]) -> None:
        """Check the states SUMO shows when it runs a program itself; track phase and time."""
        for k, state in enumerate(states):
            if state != self.shown[k]:
                self._show(k, state, now)
                self._track(k, state, now)
        self.red_since[self._shown_served] = now

    def _track(self, k: int, state: str, now: float) -> None:
        greens = self.layout.intersections[k].greens
        self.green[k] = greens.index(state) if state in greens else HOLD
        self.since[k] = now

    # snapshot -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the guard knows at a step boundary, as JSON values (infinity included): `restore` on a
        guard of the same layout continues from exactly here, so a twin restarted from a SUMO state saved at
        the same step goes on with legal signal sequences (min green, running transitions, max-red clocks)."""
        return {
            "green": self.green.tolist(), "target": self.target.tolist(), "since": self.since.tolist(),
            "step_until": self.step_until.tolist(), "pending": self.pending.tolist(), "shown": list(self.shown),
            "steps": [[[s, d] for s, d in steps] for steps in self._steps], "red_since": self.red_since.tolist(),
            "offered": self.offered.tolist(),
            "stats": asdict(self.stats), "cleared": self._cleared.tolist(),
            "last_passed": self._last_passed.tolist(), "passed_read": self._passed_read.tolist(),
            "yellow_since": self._yellow_since.tolist(), "all_red_from": self._all_red_from.tolist(),
            "unsafe": self._unsafe.tolist(),
        }  # fmt: skip

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state()` of a guard of the same layout; ValueError if it does not fit this layout."""
        inters = self.layout.intersections
        shown = [str(s) for s in state["shown"]]
        if len(shown) != len(inters) or any(len(s) != i.n_signals for s, i in zip(shown, inters, strict=True)):
            raise ValueError("the guard state belongs to another network")
        self.green = np.array(state["green"], dtype=np.int64)
        self.target = np.array(state["target"], dtype=np.int64)
        self.since = np.array(state["since"], dtype=np.float64)
        self.step_until = np.array(state["step_until"], dtype=np.float64)
        self.pending = np.array(state["pending"], dtype=np.int64)
        self._steps = [[(str(s), float(d)) for s, d in steps] for steps in state["steps"]]
        for k, s in enumerate(shown):
            self._show(k, s, 0.0, check=False)
        self._yellow_since = np.array(state["yellow_since"], dtype=np.float64)
        self._all_red_from = np.array(state["all_red_from"], dtype=np.float64)
        self._unsafe = np.array(state["unsafe"], dtype=bool)
        self.red_since = np.array(state["red_since"], dtype=np.float64)
        self.offered = np.array(state.get("offered", self.red_since), dtype=np.float64)
        self.stats = GuardStats(**state["stats"])
        self._cleared = np.array(state["cleared"], dtype=np.float64)
        passed = state["last_passed"]
        lanes = len(self.layout.lanes)
        self._last_passed = np.zeros(lanes) if passed is None else np.array(passed, dtype=np.float64)
        read = state.get("passed_read", passed is not None)  # a state from before deferred reads: all or none
        self._passed_read = np.array(read, dtype=bool) if isinstance(read, list) else np.full(lanes, bool(read))
