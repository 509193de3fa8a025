"""Adaptive classic controllers: max-pressure, SOTL, and SUMO's actuated logic as a reference.

Max-pressure (Varaiya 2013): every `interval` seconds (and only after `interval` s of green), each
intersection picks the green with the largest pressure, the sum over its movements of
(halting on the incoming lane - halting on the outgoing lane). Throughput-optimal for point queues
with unbounded storage; it breaks where queues spill back (finite lanes) or where a green's
movements share lanes with another's, and it has no notion of coordination or max green, so it
can starve a light movement only as long as the guard's max-red bound allows.

Advanced-MP (Zhang et al., ICML 2022, "Expression might be enough"): every `interval` seconds, after
`min_green`, keep the current green while the vehicles still *moving* towards its stop lines within
`reach` metres outweigh the largest pressure of any green; otherwise switch to the green with the
largest pressure. Pressure is efficient (queued vehicles only) and aware of insertion backlogs and
spill-back (`control.pressure`). Lanes are counted, not vehicles located: the moving vehicles of a
lane longer than `reach` are scaled by reach / length (uniform spacing assumed). Vehicles approaching on a
movement that every green serves (the permanent right turns of CityFlow conversions and Manhattan) flow
whatever is chosen, so they are no reason to keep a green: counted, they held greens for right-turners
while the through queues waited (hangzhou_4x4, seed 23423: 84.7 s, without them 56.6 s).

SOTL (Gershenson 2005, "self-organizing traffic lights"): each intersection integrates the vehicles
waiting at red (veh x s); when that exceeds `theta` and the green has run `min_green` seconds, it
switches, unless a platoon (more than `platoon` moving vehicles) is still on the green's lanes and the
green is shorter than `max_green`. Instead of the next green in the cycle it takes the green serving
the most waiting vehicles. Lanes have no distance window here: every moving vehicle on a green lane
counts as approaching, which on long lanes holds greens longer than Gershenson's 25 m window would.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from citysignal.control.base import Controller
from citysignal.control.guard import HOLD
from citysignal.control.pressure import movement_pressure, spillback
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition


class MaxPressure(Controller):
    name: ClassVar[str] = "maxpressure"

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        self.last_decision = np.full(layout.n_intersections, -np.inf)
        self.pressure = np.zeros(layout.n_greens)
        self.request = self.hold_all()

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        lay = self.lay
        due = (obs.phase >= 0) & (obs.time_in_phase >= self.interval) & (obs.time - self.last_decision >= self.interval)
        if not due.any():
            return self.hold_all()
        self.pressure = lay.per_green(movement_pressure(lay, obs))
        best = lay.argmax_green(self.pressure)
        self.last_decision[due] = obs.time
        self.request = np.where(due, best, HOLD)
        return self.request

    def explain(self, k: int) -> str:
        lay = self.lay
        start = int(lay.green_start[k])
        n = len(lay.intersections[k].greens)
        p = self.pressure[start : start + n]
        best = int(np.argmax(p))
        return (
            f"max-pressure: green {best} has the highest pressure {p[best]:.0f} "
            f"(queued in minus queued out); all greens: {', '.join(f'{v:.0f}' for v in p)}"
        )


class AdvancedMaxPressure(Controller):
    name: ClassVar[str] = "advanced_mp"
    requires: ClassVar[frozenset[str]] = frozenset({"halting", "vehicles", "backlog"})

    def __init__(self, interval: float = 10.0, min_green: float = 10.0, reach: float = 167.0) -> None:
        super().__init__()
        self.interval = interval
        self.min_green = min_green
        self.reach = reach

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        self.last_decision = np.full(layout.n_intersections, -np.inf)
        self.pressure = np.zeros(layout.n_greens)
        self.running = np.zeros(layout.n_greens)
        self.kept = np.zeros(layout.n_intersections, dtype=bool)
        self.request = self.hold_all()
        self._reach = np.minimum(1.0, reach_fraction(layout, self.reach))

    def scores(self, obs: Observation) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per green: aware efficient pressure, and the vehicles still moving towards its stop lines."""
        lay = self.lay
        halting = obs.lane("halting")
        moving = (obs.lane("vehicles") - halting)[lay.mov_in] * self._reach
        moving = np.where(spillback(lay, halting) | lay.always_served, 0.0, moving)
        return lay.per_green(movement_pressure(lay, obs, aware=True)), lay.per_green(moving)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        lay = self.lay
        ready = (obs.phase >= 0) & (obs.time_in_phase >= self.min_green)
        due = ready & (obs.time - self.last_decision >= self.interval)
        if not due.any():
            return self.hold_all()
        self.pressure, self.running = self.scores(obs)
        best = lay.argmax_green(self.pressure)
        top = self.pressure[lay.green_start + best]
        current = lay.green_start + np.maximum(obs.phase, 0)
        self.kept = due & (self.running[current] >= top)
        self.last_decision[due] = obs.time
        self.request = np.where(due & ~self.kept, best, HOLD)
        return self.request

    def explain(self, k: int) -> str:
        lay = self.lay
        start, n = int(lay.green_start[k]), len(lay.intersections[k].greens)
        p = self.pressure[start : start + n]
        best = int(np.argmax(p))
        if self.kept[k]:
            return (f"advanced max-pressure: kept the green, {self.running[start:start + n].max():.0f} vehicles still "
                    f"approaching on it outweigh the largest queue pressure elsewhere ({p[best]:.0f})")  # fmt: skip
        return (f"advanced max-pressure: green {best} has the highest queue pressure {p[best]:.0f} "
                f"(queued and waiting to enter, minus queued downstream; full exits count 0)")  # fmt: skip


def reach_fraction(layout: Layout, reach: float, rows: NDArray[np.int64] | slice = slice(None)) -> NDArray[np.float64]:
    """Per movement (of `rows`, default all): the share of its incoming lane within `reach` metres of the
    stop line."""
    return np.asarray(reach / np.maximum(layout.lane_length[layout.mov_in[rows]], 1.0), dtype=np.float64)


class Sotl(Controller):
    name: ClassVar[str] = "sotl"
    requires: ClassVar[frozenset[str]] = frozenset({"halting", "vehicles"})

    def __init__(self, theta: float = 60.0, min_green: float = 10.0, max_green: float = 60.0, platoon: int = 3) -> None:
        super().__init__()
        self.theta = theta
        self.min_green = min_green
        self.max_green = max_green
        self.platoon = platoon

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        self.kappa = np.zeros(layout.n_intersections)
        self.waiting_green = np.zeros(layout.n_greens)
        self.on_green = np.zeros(layout.n_intersections)
        self.request = self.hold_all()
        self._n_mov = len(layout.mov_int)
        self._serve_keys = np.sort(layout.serve_green * self._n_mov + layout.serve_mov)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        lay = self.lay
        halting = obs.lane("halting")[lay.mov_in]
        vehicles = obs.lane("vehicles")[lay.mov_in]
        in_green = obs.phase >= 0
        current = lay.green_start + np.maximum(obs.phase, 0)
        keys = current[lay.mov_int] * self._n_mov + np.arange(self._n_mov)
        served = np.isin(keys, self._serve_keys, assume_unique=True)
        red_wait = lay.per_intersection(np.where(served, 0.0, halting))
        self.on_green = lay.per_intersection(np.where(served, vehicles - halting, 0.0))
        self.kappa = np.where(in_green, self.kappa + red_wait, 0.0)
        self.waiting_green = lay.per_green(halting)
        best = lay.argmax_green(self.waiting_green)
        ready = in_green & (obs.time_in_phase >= self.min_green) & (self.kappa >= self.theta)
        platoon = (self.on_green > self.platoon) & (obs.time_in_phase < self.max_green)
        switch = ready & ~platoon & (best != obs.phase)
        self.kappa[switch] = 0.0
        self.request = np.where(switch, best, HOLD)
        return self.request

    def explain(self, k: int) -> str:
        return (
            f"SOTL: {self.kappa[k]:.0f} veh*s waited at red (threshold {self.theta:.0f}), "
            f"{self.on_green[k]:.0f} moving vehicles on the green's lanes (platoon limit {self.platoon})"
        )


class Actuated(Controller):
    """SUMO's own `actuated` logic on the net's phases, run by SUMO as a reference."""

    name: ClassVar[str] = "actuated"
    sumo_program: ClassVar[str | None] = "actuated"

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        return self.hold_all()

    def explain(self, k: int) -> str:
        return "SUMO actuated: extends each green while its detectors see gaps shorter than the limit (minDur..maxDur)"
