"""A city under learned control: the twin and the safety guard, stepped one decision at a time.

`CityCore` is what both the PettingZoo environment and the trainer's rollout workers drive: every
`interval` seconds the agents' requests go to the guard (which still runs every 1 s of simulation in
between, carrying deferred requests out as soon as min green allows), and each intersection is
rewarded with minus the mean number of vehicles queued on its incoming lanes over the interval (vehicles
waiting to be inserted on an entry lane's edge included: a queue that continues off the map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.control.ai import movement_features
from citysignal.control.base import Controller
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.twin import Twin
from citysignal.twin.observation import Observation

FIELDS = frozenset({"vehicles", "occupancy", "backlog"}) | GUARD_FIELDS


@dataclass
class Step:
    obs: Observation
    reward: NDArray[np.float64]
    done: bool


class CityCore:
    def __init__(self, scenario: Scenario, interval: int = 10, tripinfo: Path | None = None) -> None:
        self.scenario = scenario
        self.interval = interval
        self.tripinfo = tripinfo
        self.layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
        self.twin: Twin | None = None
        self.guard = SafetyGuard(self.layout)
        self.obs: Observation | None = None
        # Intersections that are not agents can follow another controller, second by second.
        self.background: Controller | None = None
        self.background_mask = np.zeros(self.layout.n_intersections, dtype=bool)

    def reset(self, seed: int) -> Observation:
        self.close()
        self.guard = SafetyGuard(self.layout)
        self.twin = Twin(self.scenario, self.layout, seed=seed, fields=FIELDS, tripinfo=self.tripinfo)
        twin = self.twin.__enter__()
        position = twin.program_position()
        twin.write(self.guard.start(twin.time, position))
        if self.background is not None:
            self.background.reset(self.layout, position, seed)
        self.obs = self._observe()
        return self.obs

    def _observe(self) -> Observation:
        assert self.twin is not None
        now = self.twin.time
        return self.twin.observe(self.guard.green.copy(), self.guard.time_in_phase(now))

    def step(self, requests: NDArray[np.int64]) -> Step:
        """Apply one decision per intersection (or HOLD) and run `interval` seconds."""
        twin = self.twin
        if twin is None or self.obs is None:
            raise RuntimeError("reset() first")
        queued = np.zeros(self.layout.n_intersections)
        obs = self.obs
        hold = np.full(self.layout.n_intersections, HOLD, dtype=np.int64)
        for second in range(self.interval):
            if twin.done:
                break
            wanted = requests if second == 0 else hold
            if self.background is not None:
                wanted = np.where(self.background_mask, self.background.decide(obs), wanted)
            twin.write(self.guard.apply(twin.time, wanted, obs.lane("halting"), obs.lane("passed"), obs.lane("box")))
            twin.step()
            obs = self._observe()
            queued += self.layout.queue_per_intersection(obs.lane("halting") + obs.lane("backlog"))
        self.obs = obs
        return Step(obs, -queued / self.interval / 10.0, twin.done)

    def features(self) -> NDArray[np.float64]:
        assert self.obs is not None
        return movement_features(self.layout, self.obs)

    def close(self) -> None:
        if self.twin is not None:
            self.twin.close()
            self.twin = None
