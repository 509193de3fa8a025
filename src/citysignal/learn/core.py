"""A city under learned control: the twin and the safety guard, stepped one decision at a time.

`CityCore` is what both the PettingZoo environment and the trainer's rollout workers drive: the control
loop (`citysignal.loop`) over the twin, with the agents as its decider. A step hands the agents'
requests to the guard (which runs every 1 s of simulation, carrying deferred requests out as soon as
min green allows) and runs either a fixed number of seconds (the environments) or, as the trainer
does, until the next second at which some intersection is due to decide on the deployed controller's
`DecisionClock`. Each intersection is rewarded with minus the vehicles queued on its incoming lanes
(vehicles waiting to be inserted on an entry lane's edge included: a queue that continues off the map),
summed over the step's seconds and divided by `REWARD_SCALE`: a 10 s step of a steady queue of q
vehicles earns -q / 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.control.ai import DECISION_INTERVAL_S, DecisionClock, GapOut, InitialGreen, movement_features
from citysignal.control.base import Controller
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.control.pairs import ShortLinkPairs
from citysignal.loop import ControlLoop
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.twin import Twin
from citysignal.twin.observation import Observation, ProgramPosition

FIELDS = frozenset({"vehicles", "occupancy", "backlog"}) | GUARD_FIELDS
REWARD_SCALE = 100.0  # vehicle-seconds of queue per unit of reward


@dataclass
class Step:
    obs: Observation
    reward: NDArray[np.float64]
    done: bool
    seconds: int  # simulated seconds the step ran


class _Agents:
    """The learning city's decider: the agents' requests at the first second of an interval, HOLD for the
    rest, run in turns where two signals are joined by short links (`ShortLinkPairs`, as `AiController`);
    intersections in `background_mask` follow `background`, second by second."""

    def __init__(self, layout: Layout) -> None:
        self.hold = np.full(layout.n_intersections, HOLD, dtype=np.int64)
        self.pending = self.hold
        self.pairs = ShortLinkPairs(layout)
        self.background: Controller | None = None
        self.background_mask = np.zeros(layout.n_intersections, dtype=bool)

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.pending = self.hold
        self.pairs = ShortLinkPairs(layout)
        if self.background is not None:
            self.background.reset(layout, position, seed)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        wanted, self.pending = self.pairs.apply(obs.time, self.pending), self.hold
        if self.background is not None:
            wanted = np.where(self.background_mask, self.background.decide(obs), wanted)
        return wanted


class CityCore:
    """`interval`: the seconds a fixed step runs; `decision_interval`: the `DecisionClock` of `due` and
    of steps run until the next decision."""

    def __init__(
        self,
        scenario: Scenario,
        interval: int = 10,
        tripinfo: Path | None = None,
        decision_interval: float = DECISION_INTERVAL_S,
    ) -> None:
        self.scenario = scenario
        self.interval = interval
        self.decision_interval = decision_interval
        self.tripinfo = tripinfo
        self.layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
        self.twin: Twin | None = None
        self.guard = SafetyGuard(self.layout)
        self.loop: ControlLoop[Twin] | None = None
        self.obs: Observation | None = None
        self._agents = _Agents(self.layout)
        self.clock = self._clock()

    @property
    def background(self) -> Controller | None:
        """A controller for the intersections that are not agents (`background_mask`), second by second."""
        return self._agents.background

    @background.setter
    def background(self, controller: Controller | None) -> None:
        self._agents.background = controller

    @property
    def background_mask(self) -> NDArray[np.bool_]:
        return self._agents.background_mask

    def reset(self, seed: int) -> Observation:
        self.close()
        self.guard = SafetyGuard(self.layout)
        self.twin = Twin(self.scenario, self.layout, seed=seed, fields=FIELDS, tripinfo=self.tripinfo).__enter__()
        self.loop = ControlLoop(self.twin, self.guard, self._agents)
        self.loop.start(seed)
        self.clock = self._clock()
        self.obs = self.loop.observe()
        return self.obs

    def _clock(self) -> DecisionClock:
        """The run-time controller's clock (`AiController`), initial green included."""
        return DecisionClock(self.layout.n_intersections, self.decision_interval, InitialGreen(self.layout),
                             GapOut(self.layout))  # fmt: skip

    def due(self) -> NDArray[np.bool_]:
        """Intersections due to decide now on the `DecisionClock`."""
        assert self.obs is not None
        return self.clock.due(self.obs)

    def step(self, requests: NDArray[np.int64], until_due: bool = False) -> Step:
        """Apply one decision per intersection (or HOLD) and run `interval` seconds, or with `until_due`
        until some intersection is `due` (the intersections due now count as having decided)."""
        loop = self.loop
        if loop is None or self.obs is None:
            raise RuntimeError("reset() first")
        if until_due:
            self.clock.mark(self.due(), self.obs.time)
        queued = np.zeros(self.layout.n_intersections)
        obs = self.obs
        self._agents.pending = requests
        seconds = 0
        while not loop.done and (until_due or seconds < self.interval):
            loop.tick()
            obs = loop.observe()
            seconds += 1
            queued += self.layout.queue_per_intersection(obs.lane("halting") + obs.lane("backlog"))
            if until_due and self.clock.due(obs).any():
                break
        self._agents.pending = self._agents.hold
        self.obs = obs
        return Step(obs, -queued / REWARD_SCALE, loop.done, seconds)

    def features(self) -> NDArray[np.float64]:
        assert self.obs is not None
        return movement_features(self.layout, self.obs)

    def close(self) -> None:
        self.loop = None
        if self.twin is not None:
            self.twin.close()
            self.twin = None
