"""Reinforcement-learning environments over the twin: PettingZoo (the city) and Gymnasium (one junction).

Agents are intersections (TLS ids), an action is the index of one of the agent's greens (all of
them legal; the action mask in `infos` says so and lets a shared policy pad), and every action goes
through the safety guard. Observation and reward are pluggable functions of the running city, not
constructor flags:

    obs_fn(core, k) -> np.ndarray   the observation of intersection k
    reward_fn(core, step, k) -> float

The defaults are the transferable encoding of `control.ai` (per movement: queue in, moving in,
queue out, occupancy out; per green: current, time in it) flattened, and minus the mean queue on
the intersection's incoming lanes over the 10 s step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray
from pettingzoo import ParallelEnv

from citysignal.control.ai import GREEN_FEATURES, MOVEMENT_FEATURES, green_features, movement_features
from citysignal.control.cycle import FixedTime
from citysignal.control.guard import HOLD
from citysignal.learn.core import CityCore, Step
from citysignal.scenarios import Scenario

ObsFn = Callable[[CityCore, int], NDArray[np.float32]]
RewardFn = Callable[[CityCore, Step, int], float]
OBS_HIGH = 1e4  # features are counts / 10, shares and minutes: far below this


def movement_observation(core: CityCore, k: int) -> NDArray[np.float32]:
    """Intersection k's movements (4 features each) and greens (2 each), flattened."""
    lay = core.layout
    assert core.obs is not None
    mov = movement_features(lay, core.obs)[lay.mov_int == k]
    green = green_features(lay, core.obs)[lay.green_int == k]
    return np.concatenate([mov.ravel(), green.ravel()]).astype(np.float32)


def queue_reward(core: CityCore, step: Step, k: int) -> float:
    return float(step.reward[k])


def _obs_size(core: CityCore, k: int) -> int:
    lay = core.layout
    return int((lay.mov_int == k).sum()) * MOVEMENT_FEATURES + int((lay.green_int == k).sum()) * GREEN_FEATURES


class CityParallelEnv(ParallelEnv[str, NDArray[np.float32], int]):
    """PettingZoo parallel environment: every signalized intersection of a scenario is an agent."""

    metadata: ClassVar[dict[str, Any]] = {"name": "citysignal_city_v0", "render_modes": []}

    def __init__(
        self,
        scenario: Scenario,
        obs_fn: ObsFn = movement_observation,
        reward_fn: RewardFn = queue_reward,
        interval: int = 10,
    ) -> None:
        self.core = CityCore(scenario, interval=interval)
        self.obs_fn = obs_fn
        self.reward_fn = reward_fn
        self.possible_agents = list(self.core.layout.ids)
        self.agents: list[str] = []
        self._k = {a: k for k, a in enumerate(self.possible_agents)}
        self._n_greens = [len(i.greens) for i in self.core.layout.intersections]
        # Observation sizes are fixed by the network.
        self._obs_spaces = {
            a: spaces.Box(0.0, OBS_HIGH, shape=(_obs_size(self.core, k),), dtype=np.float32)
            for a, k in self._k.items()
        }
        self._act_spaces = {a: spaces.Discrete(self._n_greens[k]) for a, k in self._k.items()}
        self.render_mode = None

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _infos(self) -> dict[str, dict[str, Any]]:
        return {a: {"action_mask": np.ones(self._n_greens[k], dtype=np.int8)} for a, k in self._k.items()}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, NDArray[np.float32]], dict[str, dict[str, Any]]]:
        self.core.reset(23423 if seed is None else seed)
        self.agents = list(self.possible_agents)
        return {a: self.obs_fn(self.core, k) for a, k in self._k.items()}, self._infos()

    def step(self, actions: dict[str, int]) -> tuple[
        dict[str, NDArray[np.float32]], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]
    ]:  # fmt: skip
        requests = np.full(len(self.possible_agents), HOLD, dtype=np.int64)
        for agent, action in actions.items():
            requests[self._k[agent]] = int(action)
        step = self.core.step(requests)
        obs = {a: self.obs_fn(self.core, self._k[a]) for a in self.agents}
        rewards = {a: self.reward_fn(self.core, step, self._k[a]) for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: step.done for a in self.agents}
        infos = {a: i for a, i in self._infos().items() if a in self.agents}
        if step.done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def close(self) -> None:
        self.core.close()


class IntersectionEnv(gymnasium.Env[NDArray[np.float32], int]):
    """Gymnasium view of one intersection; every other intersection runs its fixed-time program."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario,
        agent: str | None = None,
        obs_fn: ObsFn = movement_observation,
        reward_fn: RewardFn = queue_reward,
        interval: int = 10,
    ) -> None:
        self.core = CityCore(scenario, interval=interval)
        ids = self.core.layout.ids
        self.k = ids.index(agent) if agent is not None else 0
        self.agent = ids[self.k]
        self.obs_fn = obs_fn
        self.reward_fn = reward_fn
        self.core.background = FixedTime()
        self.core.background_mask[:] = True
        self.core.background_mask[self.k] = False
        self.observation_space = spaces.Box(0.0, OBS_HIGH, shape=(_obs_size(self.core, self.k),), dtype=np.float32)
        self.action_space = spaces.Discrete(len(self.core.layout.intersections[self.k].greens))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        self.core.reset(23423 if seed is None else seed)
        return self.obs_fn(self.core, self.k), {"action_mask": np.ones(int(self.action_space.n), dtype=np.int8)}

    def step(self, action: int) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        requests = np.full(self.core.layout.n_intersections, HOLD, dtype=np.int64)
        requests[self.k] = int(action)
        step = self.core.step(requests)
        info = {"action_mask": np.ones(int(self.action_space.n), dtype=np.int8)}
        return self.obs_fn(self.core, self.k), self.reward_fn(self.core, step, self.k), False, step.done, info

    def close(self) -> None:
        self.core.close()
