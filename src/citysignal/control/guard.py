"""The safety guard: the single writer of signal states.

Controllers *request* a green per intersection (or `HOLD`); the guard turns requests into legal
sequences and is the only source of the states the twin shows:

- min green: a green is left only after its minimum (the net's minDur, capped by what the program
  itself shows); an early request is deferred and carried out as soon as it is allowed;
- transitions: every change runs the model's transition (the program's own yellow/all-red where the
  program goes that way, else a synthesized yellow then all-red), never a direct green-to-red;
- conflicts: every state written is checked against the hard-conflict relation;
- clearance: a change ends with the new green only once the junction box is clear of vehicles
  waiting inside it on a movement that has lost its green and conflicts with one the new green
  starts (a permissive left turn waiting for a gap). Until then, for at most `MAX_CLEARANCE_S`, the
  guard shows all-red for those signals. Without it, such a vehicle meets the new green inside the
  box and two vehicles that each yield to the other lock the junction for good (seen on cologne3's
  clustered junction, with SUMO's teleporting off). Needs the `box` observation; without it, the
  transitions run as modelled;
- max red: a vehicle signal whose vehicles have waited `max_red` seconds without being *served*
  preempts the controller: the guard switches (after min green) to the green that serves it (see
  `Intersection.serve_signals`), also serving most other such signals. Served means what a driver
  feels: the signal shows green (`G` or `g`) and its vehicles discharge (a vehicle crossed the stop
  line of one of its lanes in that second), or nobody waits there. A permissive left turn whose
  vehicles find gaps is served; one blocked behind opposing traffic, or a green into a full lane, is
  not. Without stop-line counts (`passed`), a green counts as service when it is major (the
  permissive green of a signal that also has a protected one does not). Pedestrian signals have no
  detectors here, so they are served by the controllers' cycles.

It counts requests refused (not a green of that intersection) and deferred (min green or a running
transition), max-red preemptions, and violations: any written or observed state that shows
hard-conflicting greens or drops a green without yellow. By construction it never writes one; in
monitor mode (SUMO runs its own program, e.g. `actuated`) it checks what SUMO shows instead.

Assumes a fixed 1 s control step; durations shorter than a step last one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.network import signals
from citysignal.network.layout import Layout
from citysignal.twin.observation import ProgramPosition

HOLD = -1
GUARD_FIELDS = frozenset({"halting", "passed", "box"})  # what `apply` reads from every observation
DEFAULT_MAX_RED_S = 120.0
MAX_CLEARANCE_S = 5.0


@dataclass
class GuardStats:
    refused: int = 0
    deferred: int = 0
    max_red_preemptions: int = 0
    clearance_extensions: int = 0  # seconds of all-red added while vehicles waited inside a junction
    violations: int = 0
    violation_log: list[str] = field(default_factory=list)


class SafetyGuard:
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
        self._shown_green = np.zeros(total, dtype=bool)
        self._last_passed: NDArray[np.float64] | None = None
        self.red_since = np.zeros(total)
        self._box: NDArray[np.float64] | None = None
        self._cleared = np.zeros(n)
        self._box_movements = [
            (layout.mov_signal[rows], layout.mov_box[rows])
            for rows in (np.flatnonzero((layout.mov_int == k) & (layout.mov_box >= 0)) for k in range(n))
        ]
        self._checked: dict[tuple[int, str, str], list[str]] = {}

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
            self._show(k, inter.program[p].state, check=False)
            if g >= 0:
                self.green[k] = g
                writes[k] = inter.program[p].state
                continue
            n = len(inter.program)
            steps = [(inter.program[p].state, inter.program[p].duration - elapsed)]
            q = (p + 1) % n
            while inter.program_green_index[q] < 0 and q != p:
                steps.append((inter.program[q].state, inter.program[q].duration))
                q = (q + 1) % n
            self.target[k] = inter.program_green_index[q]
            chain = [state for state, _ in steps] + [inter.greens[self.target[k]]]
            if all(not self._problems(k, a, b) for a, b in pairwise(chain)):
                writes[k] = steps[0][0]
                self._steps[k] = steps[1:]
                self.step_until[k] = now + max(1.0, steps[0][1])
                continue
            r = (p - 1) % n
            while inter.program_green_index[r] < 0 and r != p:
                r = (r - 1) % n
            before = inter.program_green_index[r]
            self._steps[k] = list(inter.transition(before, int(self.target[k]))) if before >= 0 else []
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
        passed: NDArray[np.float64] | None = None,
        box: NDArray[np.float64] | None = None,
    ) -> dict[int, str]:
        """Turn this step's requests into the states to write now (only those that change).

        `halting` and `passed` are per layout lane: vehicles halting now, and vehicles that crossed
        the lane's stop line since the start (cumulative; see `Observation.passed`); `box` is per
        `Layout.box_lanes`: vehicles halting inside the junction."""
        self._box = box
        writes: dict[int, str] = {}
        for k in np.flatnonzero(self.step_until <= now):
            self._advance(int(k), now, writes)

        requests = np.where(requests == HOLD, self.pending, requests)
        requests = self._preempt_starved(now, requests, halting, passed)

        in_green = self.green >= 0
        bad = (requests != HOLD) & ((requests < 0) | (requests >= self._n_greens))
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
        return writes

    def _preempt_starved(
        self,
        now: float,
        requests: NDArray[np.int64],
        halting: NDArray[np.float64],
        passed: NDArray[np.float64] | None,
    ) -> NDArray[np.int64]:
        lay = self.layout
        waiting = np.bincount(self._mov_signal, weights=halting[lay.mov_in], minlength=lay.n_signals_total) > 0
        if passed is None:
            served = self._shown_served
        else:
            # A detector's count can restart (a new aggregation interval): never a negative flow.
            moved = np.maximum(passed - self._last_passed, 0.0) if self._last_passed is not None else passed * 0.0
            self._last_passed = np.array(passed, dtype=np.float64)
            discharged = np.bincount(self._mov_signal, weights=moved[lay.mov_in], minlength=lay.n_signals_total) > 0
            served = self._shown_green & discharged
        self.red_since[served | ~waiting] = now
        starved = waiting & self._servable & (now - self.red_since > self.max_red)
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
            # Serve the longest-starved signal first (so every one is reached however short
            # max_red is), with the green that also serves the most other starved signals.
            red_for = np.where(local, now - self.red_since[start : start + inter.n_signals], -1.0)
            oldest = int(np.argmax(red_for))
            count = inter.serve_signals[:, local].sum(axis=1)
            best = int(np.argmax(np.where(inter.serve_signals[:, oldest], count, -1)))
            if best != requests[k]:
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
        if self._steps[k]:
            state, duration = self._steps[k].pop(0)
            self.step_until[k] = now + max(1.0, duration)
        elif self._cleared[k] < MAX_CLEARANCE_S and self._box_blocked(k):
            state = "".join("r" if c in signals.YELLOW_CHARS else c for c in self.shown[k])
            self._cleared[k] += 1.0
            self.stats.clearance_extensions += 1
            self.step_until[k] = now + 1.0
        else:
            self._cleared[k] = 0.0
            self.green[k] = self.target[k]
            self.target[k] = HOLD
            self.since[k] = now
            self.step_until[k] = np.inf
            state = self.layout.intersections[k].greens[self.green[k]]
        writes[k] = state
        self._show(k, state)

    def _box_blocked(self, k: int) -> bool:
        """Vehicles wait inside the junction on a signal the coming green leaves red, in conflict
        with a signal that green starts."""
        if self._box is None:
            return False
        sig, box = self._box_movements[k]
        inside = sig[self._box[box] > 0]
        if inside.size == 0:
            return False
        inter = self.layout.intersections[k]
        target = inter.greens[self.target[k]]
        trapped = np.zeros(inter.n_signals, dtype=bool)
        trapped[inside] = True
        trapped &= ~signals.green_mask(target)
        started = signals.major_mask(target) & ~signals.major_mask(self.shown[k])
        return bool(inter.hard_conflict[np.ix_(trapped, started)].any())

    # checking -----------------------------------------------------------------------------
    def _show(self, k: int, state: str, check: bool = True) -> None:
        if check:
            problems = self._problems(k, self.shown[k], state)
            if problems:
                self.stats.violations += 1
                if len(self.stats.violation_log) < 100:
                    self.stats.violation_log.append(f"{self.layout.ids[k]}: {'; '.join(problems)}")
        self.shown[k] = state
        start = self.layout.signal_start[k]
        served = self._served_by[k].get(state)
        if served is None:  # a transition or a foreign state: it serves what it shows major
            served = signals.major_mask(state)
        self._shown_served[start : start + len(state)] = served
        self._shown_green[start : start + len(state)] = signals.green_mask(state)

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
            self._show(k, state, check=False)
            self._track(k, state, now)
        self.red_since[:] = now

    def monitor(self, now: float, states: list[str]) -> None:
        """Check the states SUMO shows when it runs a program itself; track phase and time."""
        for k, state in enumerate(states):
            if state != self.shown[k]:
                self._show(k, state)
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
            "stats": asdict(self.stats), "cleared": self._cleared.tolist(),
            "last_passed": None if self._last_passed is None else self._last_passed.tolist(),
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
            self._show(k, s, check=False)
        self.red_since = np.array(state["red_since"], dtype=np.float64)
        self.stats = GuardStats(**state["stats"])
        self._cleared = np.array(state["cleared"], dtype=np.float64)
        passed = state["last_passed"]
        self._last_passed = None if passed is None else np.array(passed, dtype=np.float64)
