"""Behaviour cloning, then PPO with parameter sharing: one policy for every intersection of every city.

Warm start (DemoLight-style): the policy first imitates a classic teacher (`teacher`, by default
Advanced-MP, the anchor of the deployed rule) on every training scenario, by cross-entropy inside the
trust region, for `imitation_epochs` passes over one demonstration episode per scenario.

Each iteration, Ray workers (one SUMO each) roll the current weights out on every training scenario
(NumPy, sampled actions); the learner then runs `epochs` passes of clipped PPO over that experience,
one scenario-episode per minibatch, every intersection an agent of the same policy (RESCO's
SharedAgent pattern, with action masks from the padding of each intersection's greens and from the
deployed rule's trust region, so that what is learned is what may run). Every `validate_every`
iterations the policy runs under exactly the deployed rule (trust region, out-of-range fallback with
the feature range seen so far) on held-back seeds of the same scenarios, and the checkpoint with the
lowest validation delay relative to the teacher (measured on the same seeds) is kept, not the last
or the best training episode; the untrained policy (its skip connection with a near-zero learned part)
and the cloned one are validated first, so learning ships only what beats them. How often the
fallback and the trust region took over is logged.

Outputs in `out`: `checkpoint.pt` (resumable: model, optimizer, iteration, log), `best.npz` (the
selected policy, NumPy), `train_log.csv`, TensorBoard events when tensorboard is installed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from citysignal.bench.episode import run_episode
from citysignal.bench.parallel import map_fresh
from citysignal.control.ai import MOVEMENT_FEATURES, TRUST, CityIndex, save_policy
from citysignal.learn.model import SharedPolicy
from citysignal.learn.rollout import Demonstration, Rollout, RuleConfig, demonstrate, rollout
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario

MINIBATCH_STEPS = 600


@dataclass
class TrainConfig:
    """Training settings; every field has a default that trained the shipped policy."""

    scenarios: Sequence[Scenario]
    out: Path
    episodes: int = 20  # iterations; each rolls out every scenario once
    workers: int = 2  # Ray workers (one SUMO process each)
    address: str | None = None  # Ray cluster address; None starts Ray locally
    seed: int = 0
    lr: float = 3e-4
    gamma: float = 0.9  # per 10 s: a horizon of about 100 s
    lam: float = 0.95  # per 10 s
    clip: float = 0.2
    epochs: int = 4
    entropy: float = 0.003
    value_coef: float = 0.5
    validate_every: int = 2
    validation_seeds: tuple[int, ...] = (10_001, 10_002)
    resume: bool = False
    teacher: str = "advanced_mp"  # imitated first, and the validation baseline
    imitation_epochs: int = 20  # 0: no warm start
    trust: float = TRUST  # the deployed rule's trust region, in training as at run time


@dataclass
class Progress:
    iteration: int = 0
    best_score: float = float("inf")
    best_iteration: int = -1
    imitated: bool = False
    log: list[dict[str, float]] = field(default_factory=list)


def _gae(
    rewards: np.ndarray, values: np.ndarray, seconds: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns per (step, intersection); the last step bootstraps on its own value. Steps
    last `seconds` each, and `gamma` and `lam` are per 10 s (a step of s seconds discounts by gamma^(s/10))."""
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        nxt = values[t + 1] if t + 1 < len(values) else values[t]
        discount = gamma ** (seconds[t] / 10.0)
        delta = rewards[t] + discount * nxt - values[t]
        last = delta + discount * lam ** (seconds[t] / 10.0) * last
        adv[t] = last
    return adv, adv + values


class Trainer:
    def __init__(self, config: TrainConfig, on_progress: Callable[[str, float], None] | None = None) -> None:
        self.config = config
        self.on_progress = on_progress or (lambda msg, frac: None)
        torch.manual_seed(config.seed)
        torch.set_num_threads(1)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SharedPolicy(seed=config.seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.progress = Progress()
        self.feature_max = np.zeros(MOVEMENT_FEATURES)  # the largest inputs seen in training: the OOD range
        self.indexes = {
            sc.name: CityIndex.from_layout(Layout.from_network(load_network(sc.net_file, sc.additional_files)))
            for sc in config.scenarios
        }
        config.out.mkdir(parents=True, exist_ok=True)
        self.checkpoint = config.out / "checkpoint.pt"
        if config.resume and self.checkpoint.exists():
            state = torch.load(self.checkpoint, weights_only=False, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.progress = state["progress"]
            self.feature_max = state["feature_max"]
        self.baseline: dict[str, float] = {}
        self._writer = self._tensorboard()

    def _tensorboard(self) -> object | None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.config.out / "tensorboard"))

    # parallel rollouts ------------------------------------------------------------------------
    def _map(self, fn: Callable[..., object], args: list[tuple[object, ...]]) -> list[object]:
        """Each call in a process of its own (`bench.parallel.map_fresh`): libsumo does not repeat a run
        exactly in a process that ran another, so a shared process would make the validation of a
        checkpoint, and the baseline it is scored against, depend on the order of the runs."""
        cfg = self.config
        return map_fresh(fn, args, cfg.workers, cfg.address)

    # the loop -----------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.config
        if not self.baseline:
            self.on_progress(f"{cfg.teacher} baseline on validation seeds", 0.0)
            jobs = [(sc, cfg.teacher, s) for sc in cfg.scenarios for s in cfg.validation_seeds]
            runs = self._map(run_episode, jobs)
            for sc in cfg.scenarios:
                delays = [r.metrics["resco_delay"] for r in runs if r.scenario == sc.name]  # type: ignore[attr-defined]
                self.baseline[sc.name] = float(np.mean(delays))
        if cfg.imitation_epochs and not self.progress.imitated:
            self._imitate()
        while self.progress.iteration < cfg.episodes:
            it = self.progress.iteration
            started = time.perf_counter()
            params = self.model.numpy_params()
            seeds = [cfg.seed * 100_000 + it * len(cfg.scenarios) + j for j in range(len(cfg.scenarios))]
            rule = RuleConfig(trust=cfg.trust)
            jobs = [(sc, params, s, False, rule) for sc, s in zip(cfg.scenarios, seeds, strict=True)]
            rollouts: list[Rollout] = self._map(rollout, jobs)  # type: ignore[assignment]
            self.feature_max = np.maximum(self.feature_max, np.max([r.feature_max for r in rollouts], axis=0))
            losses = self._update(rollouts)
            row: dict[str, float] = {
                "iteration": it,
                "train_delay": float(np.mean([r.metrics["resco_delay"] for r in rollouts])),
                "reward": float(np.mean([np.mean(r.rewards) for r in rollouts])),
                **losses,
                "alpha": float(self.model.alpha.item()),
                "seconds": time.perf_counter() - started,
            }
            for r in rollouts:
                row[f"train_delay/{r.scenario.name}"] = r.metrics["resco_delay"]
            if (it + 1) % cfg.validate_every == 0 or it + 1 == cfg.episodes:
                row.update(self._validate())
            self.progress.log.append(row)
            self.progress.iteration += 1
            self._save(row)
            self.on_progress(
                f"iteration {it + 1}/{cfg.episodes}: train delay {row['train_delay']:.1f} s", (it + 1) / cfg.episodes
            )
        return cfg.out / "best.npz"

    def _update(self, rollouts: list[Rollout]) -> dict[str, float]:
        cfg = self.config
        batches = []
        for r in rollouts:
            rewards, values = np.array(r.rewards), np.array(r.values)
            adv, ret = _gae(rewards, values, np.array(r.seconds), cfg.gamma, cfg.lam)
            batches.append((r, adv, ret))
        flat = np.concatenate([b[1].ravel() for b in batches])
        mean, scale = flat.mean(), flat.std() + 1e-8
        totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
        count = 0
        for _ in range(cfg.epochs):
            for r, adv, ret, part in self._minibatches(batches):
                index = self.indexes[r.scenario.name]
                dev = self.device
                mov = torch.as_tensor(np.array(r.mov[part]), dtype=torch.float64, device=dev)
                green = torch.as_tensor(np.array(r.green[part]), dtype=torch.float64, device=dev)
                actions = torch.as_tensor(np.array(r.actions[part]), device=dev)
                allowed = torch.as_tensor(np.array(r.allowed[part]), device=dev)
                decided = torch.as_tensor(np.array(r.decided[part]), device=dev, dtype=torch.float64)
                n_decided = decided.sum().clamp(min=1.0)
                old_logp = torch.as_tensor(np.array(r.logp[part]), device=dev)
                advantage = torch.as_tensor((adv[part] - mean) / scale, device=dev)
                returns = torch.as_tensor(ret[part], device=dev)
                scores, values = self.model(index, mov, green)
                logp_all = self.model.log_probs(index, scores, allowed)
                logp = logp_all.gather(-1, actions[..., None])[..., 0]
                ratio = torch.exp(logp - old_logp)
                surrogate = torch.min(ratio * advantage, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * advantage)
                policy_loss = -(surrogate * decided).sum() / n_decided  # held intersections chose nothing
                probs = torch.exp(logp_all).nan_to_num(0.0)
                entropy = (-(probs * logp_all.nan_to_num(0.0, neginf=0.0)).sum(-1) * decided).sum() / n_decided
                value_loss = ((values - returns) ** 2).mean()
                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy * entropy
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                totals["policy_loss"] += policy_loss.item()
                totals["value_loss"] += value_loss.item()
                totals["entropy"] += entropy.item()
                count += 1
        return {k: v / max(count, 1) for k, v in totals.items()}

    @staticmethod
    def _minibatches(
        batches: list[tuple[Rollout, np.ndarray, np.ndarray]],
    ) -> list[tuple[Rollout, np.ndarray, np.ndarray, slice]]:
        """Each episode in runs of at most `MINIBATCH_STEPS` consecutive steps (a decision every second or
        two makes an hour thousands of steps: one batch of them all would hold gigabytes of activations)."""
        return [
            (r, adv, ret, slice(start, start + MINIBATCH_STEPS))
            for r, adv, ret in batches
            for start in range(0, len(r.mov), MINIBATCH_STEPS)
        ]

    def _validate(self) -> dict[str, float]:
        cfg = self.config
        params = self.model.numpy_params()
        rule = RuleConfig(trust=cfg.trust, feature_max=self.feature_max)
        jobs = [(sc, params, s, True, rule) for sc in cfg.scenarios for s in cfg.validation_seeds]
        results: list[Rollout] = self._map(rollout, jobs)  # type: ignore[assignment]
        out: dict[str, float] = {}
        ratios = []
        for sc in cfg.scenarios:
            delay = float(np.mean([r.metrics["resco_delay"] for r in results if r.scenario.name == sc.name]))
            out[f"val_delay/{sc.name}"] = delay
            mine = [r for r in results if r.scenario.name == sc.name]
            for key in ("ai_fallback_rate", "ai_trust_takeover_rate"):
                out[f"val_{key}/{sc.name}"] = float(np.mean([r.metrics[key] for r in mine]))
            ratios.append(delay / max(self.baseline[sc.name], 1e-6))
        score = float(np.mean(ratios))
        out["val_score"] = score
        if score < self.progress.best_score:
            self.progress.best_score = score
            self.progress.best_iteration = self.progress.iteration
            names = ", ".join(sc.name for sc in cfg.scenarios)
            note = f"citysignal PPO shared policy; trained on {names}; after {self.progress.iteration} PPO iterations; "
            note += f"validation delay / {cfg.teacher} = {score:.3f} under the deployed rule; "
            note += f"config {asdict(cfg) | {'scenarios': names}}"
            save_policy(cfg.out / "best.npz", params, self.feature_max, note)
        return out

    def _imitate(self) -> None:
        """Behaviour cloning of the teacher inside the trust region, before any PPO iteration."""
        cfg = self.config
        self.on_progress(f"imitating {cfg.teacher}", 0.0)
        jobs = [(sc, cfg.teacher, cfg.seed * 100_000 + 50_000 + j, cfg.trust) for j, sc in enumerate(cfg.scenarios)]
        demos: list[Demonstration] = self._map(demonstrate, jobs)  # type: ignore[assignment]
        for demo in demos:
            self.feature_max = np.maximum(self.feature_max, demo.feature_max)
        # the untrained policy (the anchor with a near-zero learned part) is a candidate too, in the
        # feature range the demonstrations saw
        self.progress.log.append({"iteration": -2, **self._validate()})
        self._save(self.progress.log[-1])
        dev = self.device
        accuracy = 0.0
        for epoch in range(cfg.imitation_epochs):
            hits = total = 0
            for demo in demos:
                index = self.indexes[demo.scenario.name]
                mov = torch.as_tensor(np.array(demo.mov), dtype=torch.float64, device=dev)
                green = torch.as_tensor(np.array(demo.green), dtype=torch.float64, device=dev)
                labels = torch.as_tensor(np.array(demo.labels), device=dev)
                allowed = torch.as_tensor(np.array(demo.allowed), device=dev)
                scores, _ = self.model(index, mov, green)
                logp = self.model.log_probs(index, scores, allowed)
                taken = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
                valid = (labels >= 0) & torch.isfinite(taken)
                loss = -(taken[valid]).mean()
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                hits += int((logp.argmax(-1) == labels)[valid].sum())
                total += int(valid.sum())
            accuracy = hits / max(total, 1)
            frac = (epoch + 1) / cfg.imitation_epochs
            self.on_progress(f"imitation epoch {epoch + 1}: agreement {accuracy:.3f}", frac)
        self.progress.imitated = True
        # validated like any iteration: the cloned policy is the first candidate for best.npz
        self.progress.log.append({"iteration": -1, "imitation_agreement": accuracy, **self._validate()})
        self._save(self.progress.log[-1])

    def _save(self, row: dict[str, float]) -> None:
        torch.save(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
             "progress": self.progress, "feature_max": self.feature_max},
            self.checkpoint,
        )
        log = self.config.out / "train_log.csv"
        keys = sorted({k for r in self.progress.log for k in r})
        with log.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.progress.log)
        if self._writer is not None:
            for key, value in row.items():
                self._writer.add_scalar(key, value, int(row["iteration"]))  # type: ignore[attr-defined]
