"""Cycle-based control: fixed-time (the net's own programs) and Webster re-timing.

Both run each intersection's greens in program order (`Intersection.cycle`); they differ only in how
long each green lasts. Fixed-time uses the program's durations and picks up the program where SUMO
stands at the start, so through the guard it reproduces a plain `sumo` run of the net exactly
(where the program's transitions are legal; see the guard).

Webster (1958): from flows measured at the stop line over the last `period` seconds, the critical flow
ratio of each green y_i = max over its incoming lanes of q / s (s = saturation flow per lane),
Y = sum y_i, lost time L = sum of the cycle's transition times, optimal cycle
C = (1.5 L + 5) / (1 - Y) clamped to [c_min, c_max], and effective greens (C - L) y_i / Y, each at
least its min green. Assumes under-saturated, stationary demand within a period and one saturation
flow for every lane; near or above saturation (Y -> 1) the formula diverges and the cycle sits at
c_max. A green's critical ratio is that of its busiest lane, counting only the movements the green
serves (`critical_ratios`). Stop-line detectors count lanes, not turns, so online a lane's flow is
split evenly over its movements; offline plans (`citysignal.plan`) use the routes' exact turns. SUMO's
`tools/tlsCycleAdaptation.py` applies the same formula to route-file flows offline; here it runs
online from detector counts.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from citysignal.control.base import Controller
from citysignal.network.layout import Layout
from citysignal.network.model import Intersection
from citysignal.twin.observation import Observation, ProgramPosition

SATURATION_FLOW_VEH_S = 0.5  # 1800 veh/h per lane


def critical_ratios(layout: Layout, movement_flow: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per green: the flow ratio (veh/s over saturation flow) of its busiest lane, counting only the
    movements of that lane the green serves."""
    n_lanes = len(layout.lanes)
    key = layout.serve_green * n_lanes + layout.mov_in[layout.serve_mov]
    pairs, inverse = np.unique(key, return_inverse=True)
    per_pair = np.bincount(inverse, weights=movement_flow[layout.serve_mov], minlength=len(pairs))
    ratio = np.zeros(layout.n_greens)
    np.maximum.at(ratio, pairs // n_lanes, per_pair / SATURATION_FLOW_VEH_S)
    return ratio


def split_lane_flow(layout: Layout, lane_flow: NDArray[np.float64]) -> NDArray[np.float64]:
    """Movement flows from lane counts, each lane's flow split evenly over its movements."""
    per_lane = np.bincount(layout.mov_in, minlength=len(layout.lanes))
    return np.asarray(lane_flow[layout.mov_in] / per_lane[layout.mov_in], dtype=np.float64)


def webster_cycle(
    flow_ratios: NDArray[np.float64],
    lost_time: float,
    min_green: NDArray[np.float64],
    c_min: float = 30.0,
    c_max: float = 120.0,
) -> tuple[float, NDArray[np.float64]]:
    """Webster's optimal cycle and green splits for critical flow ratios y_i (one per green)."""
    y = np.maximum(np.asarray(flow_ratios, dtype=float), 0.0)
    total = float(y.sum())
    floor = max(c_min, lost_time + float(min_green.sum()))
    cycle = c_max if total >= 0.95 else (1.5 * lost_time + 5.0) / (1.0 - total)
    cycle = float(np.clip(cycle, floor, max(c_max, floor)))
    share = y / total if total > 0 else np.full(len(y), 1.0 / len(y))
    greens = np.maximum((cycle - lost_time) * share, min_green)
    return cycle, greens


class CycleController(Controller):
    """Runs every intersection's green cycle; subclasses set the green durations."""

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        green: list[int] = []
        dur: list[float] = []
        nxt: list[int] = []
        first: list[int] = []
        lost: list[float] = []
        run_of_phase: list[dict[int, int]] = []
        for inter in layout.intersections:
            base = len(green)
            first.append(base)
            cycle = inter.cycle
            mapping = {}
            for r, run in enumerate(cycle):
                green.append(run.green)
                dur.append(run.duration)
                nxt.append(base + (r + 1) % len(cycle))
                for p in run.phases:
                    mapping[p] = base + r
            run_of_phase.append(mapping)
            lost.append(sum(d for _, d in self._cycle_transitions(inter)))
        self.run_green = np.array(green, dtype=np.int64)
        self.run_duration = np.array(dur, dtype=float)
        self.run_next = np.array(nxt, dtype=np.int64)
        self.run_first = np.array(first, dtype=np.int64)
        self.lost_time = np.array(lost, dtype=float)
        self.current = np.empty(layout.n_intersections, dtype=np.int64)
        self.credit = np.zeros(layout.n_intersections)
        for k, inter in enumerate(layout.intersections):
            p = int(position.phase[k])
            n = len(inter.program)
            while p not in run_of_phase[k]:  # in a transition: the run it leads to
                p = (p + 1) % n
            current = run_of_phase[k][p]
            self.current[k] = current
            if p == int(position.phase[k]):
                before = inter.cycle[current - int(self.run_first[k])].phases
                served = before[: before.index(p)]
                self.credit[k] = sum(inter.program[q].duration for q in served)

    @staticmethod
    def _cycle_transitions(inter: Intersection) -> list[tuple[str, float]]:
        cycle = inter.cycle
        nexts = cycle[1:] + cycle[:1]
        return [step for run, nxt in zip(cycle, nexts, strict=True) for step in inter.transition(run.green, nxt.green)]

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        cur = self.current
        done = (obs.phase == self.run_green[cur]) & (obs.time_in_phase + self.credit >= self.run_duration[cur])
        self.current = np.where(done, self.run_next[cur], cur)
        self.credit[done] = 0.0
        return self.run_green[self.current]

    def explain(self, k: int) -> str:
        run = int(self.current[k])
        local = run - int(self.run_first[k])
        return (
            f"{self.name}: cycle step {local + 1}, green {int(self.run_green[run])} "
            f"for {self.run_duration[run]:.0f} s"
        )


class FixedTime(CycleController):
    """The net's own programs, replayed through the guard."""

    name: ClassVar[str] = "fixed"


class Webster(CycleController):
    """Webster re-timing every `period` seconds from stop-line counts; program durations until then."""

    name: ClassVar[str] = "webster"
    requires: ClassVar[frozenset[str]] = frozenset({"halting", "passed"})

    def __init__(self, period: float = 300.0, c_min: float = 30.0, c_max: float = 120.0) -> None:
        super().__init__()
        self.period = period
        self.c_min = c_min
        self.c_max = c_max
        self.cycle_length = np.zeros(0)

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        self._last_counts: NDArray[np.float64] | None = None
        self._last_time = 0.0
        self.cycle_length = np.array(
            [
                self.run_duration[self.run_first[k] : self._run_end(k)].sum() + self.lost_time[k]
                for k in range(layout.n_intersections)
            ]
        )

    def _run_end(self, k: int) -> int:
        return int(self.run_first[k + 1]) if k + 1 < len(self.run_first) else len(self.run_green)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        counts = obs.lane("passed")
        if self._last_counts is None:
            self._last_counts, self._last_time = counts, obs.time
        elif obs.time - self._last_time >= self.period:
            flows = (counts - self._last_counts) / (obs.time - self._last_time)
            self._retime(flows)
            self._last_counts, self._last_time = counts, obs.time
        return super().decide(obs)

    def _retime(self, lane_flow: NDArray[np.float64]) -> None:
        lay = self.lay
        green_ratio = critical_ratios(lay, split_lane_flow(lay, lane_flow))
        for k, inter in enumerate(lay.intersections):
            runs = slice(int(self.run_first[k]), self._run_end(k))
            greens = self.run_green[runs]
            y = green_ratio[lay.green_start[k] + greens]
            cycle, splits = webster_cycle(
                y, float(self.lost_time[k]), inter.min_green[greens], self.c_min, self.c_max
            )
            self.run_duration[runs] = np.round(splits)
            self.cycle_length[k] = cycle

    def explain(self, k: int) -> str:
        return f"{super().explain(k)}; Webster cycle {self.cycle_length[k]:.0f} s from measured flows"
