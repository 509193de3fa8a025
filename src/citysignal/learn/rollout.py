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
from citysignal.control.ai import (
    MOVEMENT_FEATURES,
    OOD_FACTOR,
    TRUST,
    CityIndex,
    anchor_scores,
    deployed_choice,
    forward,
    green_features,
    log_softmax,
    masked_logits,
    sample,
    trust_region,
)
from citysignal.control.guard import HOLD
from citysignal.control.registry import make_controller
from citysignal.errors import UserError
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
    seconds: list[int] = field(default_factory=list)  # each step's length (discounting is per second)
    allowed: list[NDArray[np.bool_]] = field(default_factory=list)
    decided: list[NDArray[np.bool_]] = field(default_factory=list)  # the policy's choice was carried out
    metrics: dict[str, float] = field(default_factory=dict)
    feature_max: FloatArray = field(default_factory=lambda: np.zeros(MOVEMENT_FEATURES))


def rollout(
    scenario: Scenario,
    params: dict[str, FloatArray],
    seed: int,
    greedy: bool = False,
    rule: RuleConfig | None = None,
) -> Rollout:
    """One episode of the shared policy under the deployed rule's trust region: sampled inside it for
    training, or exactly the deployed rule (trust region and out-of-range fallback) for validation.
    The metrics gain the shares of decisions the fallback and the trust region took over."""
    rule = rule or RuleConfig()
    rng = np.random.default_rng(seed)
    result = Rollout(scenario, seed)
    with tempfile.TemporaryDirectory(prefix="citysignal-rollout-") as tmp:
        tripinfo = Path(tmp) / "tripinfo.xml"
        core = CityCore(scenario, tripinfo=tripinfo)
        index = CityIndex.from_layout(core.layout)
        obs = core.reset(seed)
        decisions = fallback = overruled = 0
        try:
            while True:
                mov = core.features()
                green = green_features(core.layout, obs)
                scores, values = forward(params, index, mov, green)
                logits = masked_logits(index, scores)
                result.feature_max = np.maximum(result.feature_max, np.nan_to_num(mov).max(axis=0))
                deciding = core.due()
                if greedy:
                    deployed = deployed_choice(index, logits, mov, green, rule.feature_max, rule.ood_factor, rule.trust)
                    actions = deployed.choice
                    decisions += int(deciding.sum())
                    fallback += int((deployed.fallback & deciding).sum())
                    overruled += int((deployed.overruled & deciding).sum())
                else:
                    allowed = trust_region(index, anchor_scores(index, mov, green), rule.trust)
                    inside = np.where(allowed, logits, -np.inf)
                    actions = sample(inside, rng)
                step = core.step(np.where(deciding, actions, HOLD).astype(np.int64), until_due=True)
                if not greedy:
                    result.mov.append(mov.astype(np.float32))
                    result.green.append(green.astype(np.float32))
                    result.actions.append(actions)
                    result.decided.append(deciding)
                    result.allowed.append(allowed)
                    result.logp.append(np.take_along_axis(log_softmax(inside), actions[:, None], axis=1)[:, 0])
                    result.values.append(values)
                    result.rewards.append(step.reward)
                    result.seconds.append(step.seconds)
                obs = step.obs
                if step.done:
                    break
        finally:
            core.close()
        result.metrics = trip_metrics(tripinfo)
    if decisions:
        result.metrics.update(ai_fallback_rate=fallback / decisions, ai_trust_takeover_rate=overruled / decisions)
    return result


@dataclass(frozen=True)
class RuleConfig:
    """The deployed rule's settings, as `control.ai.AiController` applies them."""

    trust: float = TRUST
    ood_factor: float = OOD_FACTOR
    feature_max: FloatArray = field(default_factory=lambda: np.full(MOVEMENT_FEATURES, np.inf))


@dataclass
class Demonstration:
    """A teacher's episode, seen as the policy sees it: features, and at every second some intersection is
    due on the policy's `DecisionClock`, the anchor's (Advanced-MP's) choice for those due."""

    scenario: Scenario
    mov: list[FloatArray] = field(default_factory=list)
    green: list[FloatArray] = field(default_factory=list)
    labels: list[NDArray[np.int64]] = field(default_factory=list)
    allowed: list[NDArray[np.bool_]] = field(default_factory=list)
    feature_max: FloatArray = field(default_factory=lambda: np.zeros(MOVEMENT_FEATURES))


def demonstrate(scenario: Scenario, teacher: str, seed: int, trust: float = TRUST) -> Demonstration:
    """One episode of a classic controller (one that decides; not a SUMO program) driving every
    intersection through the guard, recorded for behaviour cloning of Advanced-MP's rule at the
    policy's own decision ticks (the skip connection then starts where the teacher is)."""
    controller = make_controller(teacher)
    if controller.sumo_program is not None:
        raise UserError(f"teacher '{teacher}' is a SUMO program: it cannot be imitated here; choose one that decides")
    core = CityCore(scenario)
    core.background = controller
    core.background_mask[:] = True
    index = CityIndex.from_layout(core.layout)
    demo = Demonstration(scenario)
    hold = np.full(core.layout.n_intersections, HOLD, dtype=np.int64)
    obs = core.reset(seed)
    try:
        while True:
            mov = core.features()
            green = green_features(core.layout, obs)
            due = core.due()
            step = core.step(hold, until_due=True)
            demo.mov.append(mov.astype(np.float32))
            demo.green.append(green.astype(np.float32))
            anchor = np.argmax(masked_logits(index, anchor_scores(index, mov, green)), axis=1)
            demo.labels.append(np.where(due, anchor, -1).astype(np.int64))  # -1: no decision here
            demo.allowed.append(trust_region(index, anchor_scores(index, mov, green), trust))
            demo.feature_max = np.maximum(demo.feature_max, np.nan_to_num(mov).max(axis=0))
            obs = step.obs
            if step.done:
                break
    finally:
        core.close()
    return demo
