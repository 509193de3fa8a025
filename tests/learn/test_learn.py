"""The learning stack: official API checkers, torch/NumPy parity, a tiny end-to-end training run,
and the shipped AI controller running without torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bundled import BUNDLED, bundled_layout  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from pettingzoo.test import parallel_api_test  # noqa: E402

from citysignal.control.ai import (  # noqa: E402
    MOVEMENT_FEATURES,
    CityIndex,
    forward,
    green_features,
    load_policy,
    masked_logits,
    movement_features,
)
from citysignal.learn.env import CityParallelEnv, IntersectionEnv  # noqa: E402
from citysignal.learn.model import SharedPolicy  # noqa: E402
from citysignal.learn.train import TrainConfig, Trainer  # noqa: E402
from citysignal.scenarios import resolve  # noqa: E402
from citysignal.twin.observation import Observation  # noqa: E402


def test_pettingzoo_parallel_api() -> None:
    env = CityParallelEnv(resolve("cologne3", 25200, 25500))
    try:
        parallel_api_test(env, num_cycles=25)
    finally:
        env.close()


def test_gymnasium_check_env() -> None:
    env = IntersectionEnv(resolve("ingolstadt1", 57600, 57900))
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_pettingzoo_episode_is_safe_and_ends() -> None:
    env = CityParallelEnv(resolve("grid4x4", 0, 200))
    obs, _infos = env.reset(seed=1)
    assert set(obs) == set(env.possible_agents) and len(obs) == 16
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        actions = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        _, rewards, _, trunc, _ = env.step(actions)
        assert all(r <= 0 for r in rewards.values())
        steps += 1
    assert steps == 20 and all(trunc.values())
    assert env.core.guard.stats.violations == 0
    env.close()


@pytest.mark.parametrize("name", BUNDLED)
def test_torch_and_numpy_give_identical_outputs(name: str) -> None:
    """Scores, values and decisions on every bundled network, with every input feature in play."""
    layout = bundled_layout(name)
    index = CityIndex.from_layout(layout)
    rng = np.random.default_rng(3)
    model = SharedPolicy(seed=5)
    with torch.no_grad():  # make the output layer matter, not just the max-pressure skip
        model.w4.mul_(100.0)
    params = model.numpy_params()
    n_lanes = len(layout.lanes)
    movs, greens = [], []
    for _ in range(3):
        halting = rng.integers(0, 20, n_lanes).astype(float)
        obs = Observation(
            time=0.0,
            phase=rng.integers(-1, 2, layout.n_intersections),
            time_in_phase=rng.uniform(0, 90, layout.n_intersections),
            vehicles=halting + rng.integers(0, 10, n_lanes),
            halting=halting,
            occupancy=rng.uniform(0, 1, n_lanes),  # libsumo: a fraction
            backlog=rng.integers(0, 5, n_lanes).astype(float) * (rng.random(n_lanes) < 0.2),
        )
        movs.append(movement_features(layout, obs))
        greens.append(green_features(layout, obs))
    ts, tv = model(index, torch.as_tensor(np.array(movs)), torch.as_tensor(np.array(greens)))
    tlogp = model.log_probs(index, ts).detach().numpy()
    for t in range(3):
        ns, nv = forward(params, index, movs[t], greens[t])
        np.testing.assert_allclose(ns, ts[t].detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(nv, tv[t].detach().numpy(), rtol=1e-12, atol=1e-12)
        logits = masked_logits(index, ns)
        np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(tlogp[t], axis=1))
        assert np.ptp(ns) > 0.1  # the scores really vary


def test_tiny_training_run_produces_a_loadable_policy(tmp_path: Path) -> None:
    window = resolve("cologne1", 25200, 25500)
    config = TrainConfig([window], tmp_path, episodes=2, workers=1, validate_every=1, imitation_epochs=2)
    best = Trainer(config).run()
    params, feature_max = load_policy(best)
    assert set(params) >= {"w1", "alpha"} and feature_max.shape == (MOVEMENT_FEATURES,)
    assert (feature_max > 0).any()  # the range seen in training, for the deployed rule's fallback
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    # the untrained policy validated, the warm start (validated), then 2 iterations
    assert [int(float(row["iteration"])) for row in rows] == [-2, -1, 0, 1]
    assert 0.0 < float(rows[1]["imitation_agreement"]) <= 1.0
    assert all(row["val_score"] and row["val_ai_trust_takeover_rate/cologne1"] for row in rows)
    resumed = Trainer(TrainConfig([window], tmp_path, episodes=3, workers=1, resume=True, imitation_epochs=2))
    assert resumed.progress.iteration == 2 and resumed.progress.imitated
    resumed.run()
    assert len((tmp_path / "train_log.csv").read_text().splitlines()) == 6
    proc = subprocess.run(
        [sys.executable, "-m", "citysignal", "bench", "cologne1", "-c", "ai", "--policy", str(best),
         "--end", "25500", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["safety_violations"] == 0


BLOCK_TORCH = (
    "import sys; sys.modules['torch'] = None; from citysignal.cli import main; sys.argv[0] = 'citysignal'; main()"
)


def test_ai_controller_runs_without_torch(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "citysignal" / "scenarios" / "data" / "ingolstadt1"
    cfg = tmp_path / "ing.sumocfg"
    cfg.write_text(
        f'<configuration><input><net-file value="{src / "ingolstadt1.net.xml.gz"}"/>'
        f'<route-files value="{src / "ingolstadt1.rou.xml.gz"}"/></input>'
        '<time><begin value="57600"/><end value="58200"/></time></configuration>'
    )
    for target in ("grid4x4", str(cfg)):
        proc = subprocess.run(
            [sys.executable, "-c", BLOCK_TORCH, "bench", target, "-c", "ai", "--json", "--end", "58200"
             if target != "grid4x4" else "600"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)
        assert row["controller"] == "ai" and row["safety_violations"] == 0 and row["arrived"] > 50
