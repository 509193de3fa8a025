"""Regression safety for the shipped AI policy, in CI: on short windows of the maps where it once
gridlocked (cologne3) or fell far behind (ingolstadt7), over two seeds each, the deployed controller
stays within 1.2x of max-pressure on the same seeds (delay, and vehicles left outside the map give or
take 1 % of the demand), and never commands an illegal state. Full-hour, many-seed figures live in
benchmarks/ai_resco.py."""

from __future__ import annotations

import pytest

from citysignal.bench.episode import run_episode
from citysignal.scenarios import resolve

WINDOWS = {"cologne3": (25200.0, 26700.0), "ingolstadt7": (57600.0, 59100.0)}
SEEDS = (23423, 23424)


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_shipped_policy_stays_near_max_pressure(name: str) -> None:
    scenario = resolve(name, *WINDOWS[name])
    for seed in SEEDS:
        ai = run_episode(scenario, "ai", seed).metrics
        mp = run_episode(scenario, "maxpressure", seed).metrics
        assert ai["safety_violations"] == 0
        assert ai["resco_delay"] <= 1.2 * mp["resco_delay"], (name, seed, ai["resco_delay"], mp["resco_delay"])
        demand = ai["arrived"] + ai["not_inserted"]
        assert ai["not_inserted"] <= 1.2 * mp["not_inserted"] + 0.01 * demand, (name, seed, ai["not_inserted"])
