"""Rollouts in NumPy: a worker runs the shared policy on one scenario and returns its experience.

Workers need no torch: they run `control.ai.forward` (the same function the run-time controller uses)
and sample from its per-intersection softmax; the learner recomputes log-probabilities in torch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.bench.metrics import trip_metrics
from citysignal.control.ai import CityIndex, forward, green_features, log_softmax, masked_logits, sample
from citysignal.learn.core import CityCore
from citysignal.scenarios import Scenario

FloatArray = NDArray[np.float64]


@dataclass
class Rollout:
    scenario: Scenario
    seed: int
    mov: list[FloatArray] = field(default_factory=list)
    green: list[FloatArray] = field(default_factory=list)
    actions: list[NDArray[np.int64]] = field(default_factory=list)
    logp: list[FloatArray] = field(default_factory=list)
    values: list[FloatArray] = field(default_factory=list)
    rewards: list[FloatArray] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def feature_max(self) -> FloatArray:
        return np.max([m.max(axis=0) for m in self.mov], axis=0) if self.mov else np.zeros(4)


def rollout(scenario: Scenario, params: dict[str, FloatArray], seed: int, greedy: bool = False) -> Rollout:
    """One episode of the shared policy (sampled, or greedy for validation)."""
    rng = np.random.default_rng(seed)
    result = Rollout(scenario, seed)
    with tempfile.TemporaryDirectory(prefix="citysignal-rollout-") as tmp:
        tripinfo = Path(tmp) / "tripinfo.xml"
        core = CityCore(scenario, tripinfo=tripinfo)
        index = CityIndex.from_layout(core.layout)
        obs = core.reset(seed)
        try:
            while True:
                mov = core.features()
                green = green_features(core.layout, obs)
                scores, values = forward(params, index, mov, green)
                logits = masked_logits(index, scores)
                actions = np.argmax(logits, axis=1).astype(np.int64) if greedy else sample(logits, rng)
                step = core.step(actions)
                if not greedy:
                    result.mov.append(mov.astype(np.float32))
                    result.green.append(green.astype(np.float32))
                    result.actions.append(actions)
                    result.logp.append(np.take_along_axis(log_softmax(logits), actions[:, None], axis=1)[:, 0])
                    result.values.append(values)
                    result.rewards.append(step.reward)
                obs = step.obs
                if step.done:
                    break
        finally:
            core.close()
        result.metrics = trip_metrics(tripinfo)
    return result
