"""cologne3's clustered junction once locked for good under max-pressure and the AI (seed-dependent: a
permissive left-turner trapped inside the junction met the next green). With the guard's clearance
check, no seed gridlocks there: every scheduled vehicle gets in, and nobody waits without bound."""

from __future__ import annotations

import pytest

from citysignal.bench.episode import run_episode
from citysignal.scenarios import resolve


@pytest.mark.parametrize("controller", ["maxpressure", "advanced_mp"])
def test_cologne3_never_locks(controller: str) -> None:
    scenario = resolve("cologne3", 25200.0, 27000.0)
    for seed in (23423, 23424, 23425, 23426):
        m = run_episode(scenario, controller, seed).metrics
        assert m["safety_violations"] == 0
        assert m["not_inserted"] <= 0.01 * (m["arrived"] + m["not_inserted"]), (seed, m["not_inserted"])
        assert m["max_waiting"] < 600, (seed, m["max_waiting"])
