"""Priority vehicles end to end on SUMO: the same seeded emergency vehicles and buses with and without
priority; preemption gets them through faster, legally, and the priority vehicles are kept apart from
general traffic's figures."""

from __future__ import annotations

import pytest

from citysignal.bench.episode import run_episode
from citysignal.errors import UserError
from citysignal.scenarios import resolve
from citysignal.scenarios.priority import PriorityDemand


def test_preemption_cuts_emergency_delay_legally() -> None:
    scenario = resolve("cologne8", 25200.0, 26400.0)
    demand = PriorityDemand(emergency_per_hour=60.0, buses_per_hour=30.0, seed=1)
    on = run_episode(scenario, "maxpressure", 23423, priority=demand).metrics
    off = run_episode(scenario, "maxpressure", 23423, priority=demand, priority_on=False).metrics
    assert on["preemptions"] > 0 and off["preemptions"] == 0
    assert on["bus_grants"] > 0
    assert on["safety_violations"] == off["safety_violations"] == 0
    assert on["emergency_delay"] < 0.75 * off["emergency_delay"], (on["emergency_delay"], off["emergency_delay"])
    plain = run_episode(scenario, "maxpressure", 23423).metrics
    assert "emergency_delay" not in plain
    assert off["vehicles"] == on["vehicles"] == plain["vehicles"]  # general traffic only


def test_sumo_programs_cannot_give_priority() -> None:
    scenario = resolve("cologne1", 25200.0, 26400.0)
    with pytest.raises(UserError, match="no-priority"):
        run_episode(scenario, "actuated", 23423, priority=PriorityDemand(emergency_per_hour=10.0))
