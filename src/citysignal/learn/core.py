"""A city under learned control: the twin and the safety guard, stepped one decision at a time.

`CityCore` is what both the PettingZoo environment and the trainer's rollout workers drive: the control
loop (`citysignal.loop`) over the twin, with the agents as its decider. Every `interval` seconds the
agents' requests go to the guard (which still runs every 1 s of simulation in between, carrying deferred
requests out as soon as min green allows), and each intersection is rewarded with minus the mean number
of vehicles queued on its incoming lanes over the interval (vehicles waiting to be inserted on an entry
lane's edge included: a queue that continues off the map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.control.ai import movement_features
from citysignal.control.base import Controller
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.loop import ControlLoop
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.twin import Twin
from citysignal.twin.observation import Observation, ProgramPosition

FIELDS = frozenset({"vehicles", "occupancy", "backlog"}) | GUARD_FIELDS


@dataclass
class Step:
    obs: Observation
    reward: NDArray[np.float64]
    done: bool


class _Agents:
    """The learning city's decider: the agents' requests at the first second of an interval, HOLD for the
    rest; intersections in `background_mask` follow `background`, second by second."""

    def __init__(self, n: int) -> None:
        self.hold = np.full(n, HOLD, dtype=np.int64)
        self.pending = self.hold
        self.background: Controller | None = None
        self.background_mask = np.zeros(n, dtype=bool)

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.pending = self.hold
        if self.background is not None:
            self.background.reset(layout, position, seed)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        wanted, self.pending = self.pending, self.hold
        if self.background is not None:
            wanted = np.where(self.background_mask, self.background.decide(obs), wanted)
        return wanted


class CityCore:
    def __init__(self, scenario: Scenario, interval: int = 10, tripinfo: Path | None = None) -> None:
        self.scenario = scenario
        self.interval = interval
        self.tripinfo = tripinfo
        self.layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
        self.twin: Twin | None = None
        self.guard = SafetyGuard(self.layout)
        self.loop: ControlLoop[Twin] | None = None
        self.obs: Observation | None = None
        self._agents = _Agents(self.layout.n_intersections)

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
        self.obs = self.loop.observe()
        return self.obs

    def step(self, requests: NDArray[np.int64]) -> Step:
        """Apply one decision per intersection (or HOLD) and run `interval` seconds."""
        loop = self.loop
        if loop is None or self.obs is None:
            raise RuntimeError("reset() first")
        queued = np.zeros(self.layout.n_intersections)
        obs = self.obs
        self._agents.pending = requests
        for _ in range(self.interval):
            if loop.done:
                break
            loop.tick()
            obs = loop.observe()
            queued += self.layout.queue_per_intersection(obs.lane("halting") + obs.lane("backlog"))
        self._agents.pending = self._agents.hold
        self.obs = obs
        return Step(obs, -queued / self.interval / 10.0, loop.done)

    def features(self) -> NDArray[np.float64]:
        assert self.obs is not None
        return movement_features(self.layout, self.obs)

    def close(self) -> None:
        self.loop = None
        if self.twin is not None:
            self.twin.close()
            self.twin = None
