"""One controller driving field controllers through the control loop, for `bench --field`.

The loop is the one every backend uses (`citysignal.loop`), over a `FieldBackend` with a `FieldGuard`.
What the centre can measure is reported: the guard's counts (violations are what the controllers
showed), the link (polls, missed polls, comm loss events) and the time the controllers reported running
their local plan. Travel times are not among them: they are measured where the vehicles are (the
simulated controller's tripinfo, see `field.sim`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from citysignal.control import make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S, GUARD_FIELDS
from citysignal.errors import UserError
from citysignal.field.backend import DEFAULT_MISSED_POLLS, CommEvent, FieldBackend
from citysignal.field.client import FieldAddress
from citysignal.field.guard import FieldGuard
from citysignal.loop import ControlLoop
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.twin.session import DEFAULT_SEED


@dataclass
class FieldResult:
    scenario: str
    controller: str
    address: str
    metrics: dict[str, float]
    events: list[CommEvent] = field(default_factory=list)
    violation_log: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        return {"scenario": self.scenario, "controller": self.controller, "field": self.address, **self.metrics,
                "events": [asdict(e) for e in self.events]}  # fmt: skip


def run_field(
    scenario: Scenario,
    controller_name: str,
    address: FieldAddress,
    *,
    policy: Path | None = None,
    max_red: float = DEFAULT_MAX_RED_S,
    missed_polls: int = DEFAULT_MISSED_POLLS,
    on_step: Callable[[float], None] | None = None,
) -> FieldResult:
    """Drive the controllers at `address` with one controller until the scenario's end."""
    controller = make_controller(controller_name, policy)
    if controller.sumo_program is not None:
        raise UserError(f"'{controller_name}' is SUMO's own program: it cannot drive field controllers")
    layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
    backend = FieldBackend(layout, address, scenario.end, controller.requires | GUARD_FIELDS,
                           missed_polls=missed_polls)  # fmt: skip
    started = time.perf_counter()
    try:
        guard = FieldGuard(layout, backend, max_red=max_red)
        loop = ControlLoop(backend, guard, controller)
        loop.start(DEFAULT_SEED)
        backup_polls = 0
        span = max(scenario.end - backend.time, 1.0)
        while not loop.done:
            loop.tick()
            backup_polls += int(backend.backup.sum())
            if on_step is not None and loop.steps % 10 == 0:
                on_step(1.0 - (scenario.end - backend.time) / span)
    finally:
        backend.close()
    wall = time.perf_counter() - started
    n = layout.n_intersections
    kinds = [e.kind for e in backend.events]
    metrics = {
        "steps": float(loop.steps),
        "safety_violations": float(guard.stats.violations),
        "refused": float(guard.stats.refused),
        "deferred": float(guard.stats.deferred),
        "max_red_preemptions": float(guard.stats.max_red_preemptions),
        "unobserved_changes": float(guard.unobserved),
        "polls": float(backend.polls),
        "missed_poll_share": round(backend.missed_total / max(backend.polls * n, 1), 4),
        "comm_loss_events": float(kinds.count("comm_loss")),
        "comm_restored_events": float(kinds.count("comm_restored")),
        "backup_share": round(backup_polls / max(loop.steps * n, 1), 4),
        "wall_s": round(wall, 3),
        "decide_s": round(loop.clock["decide"], 3),
        "in_comm_loss_at_end": float(np.sum(backend.lost)),
    }
    return FieldResult(scenario.name, controller_name, str(address), metrics, list(backend.events),
                       guard.stats.violation_log)  # fmt: skip
