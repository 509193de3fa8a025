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


def test_a_queue_behind_a_stub_approach_is_served() -> None:
    """ingolstadt7: a signalized approach 0.92 m long holds one vehicle of a queue that continues on the
    road behind it (`Network.feeders`). Blind to that queue, Advanced-MP starved it (217 s/vehicle over
    the hour, hundreds never entered); seeing it (`Observation.backlog`), it serves it like the rest."""
    scenario = resolve("ingolstadt7", 57600.0, 59400.0)
    m = run_episode(scenario, "advanced_mp", 23423).metrics
    assert m["safety_violations"] == 0
    assert m["not_inserted"] <= 0.01 * (m["arrived"] + m["not_inserted"]), m["not_inserted"]
    assert m["max_waiting"] < 400, m["max_waiting"]
