"""The service's parts wired together: settings, scenario, twin loop, audit store, tokens, rate limit.

`build_service` does everything that can fail on user input (settings, scenario, net, database,
controller name) before anything runs, so `citysignal serve` reports it in one line with exit code 2.
`Service.start` writes the start record (and notes a previous run that ended without a stop record,
i.e. was killed or crashed) and starts the twin in its worker process; `stop` is idempotent.

Restart: a run that was killed or crashed leaves its restart state (`store.RestartStore`) for the same
scenario, window and seed: the next start re-applies the controller assignments (audited as one
`controller_switch` "restored") and each active override ("restored", or "dropped" with the reason: it
expired, the service having been down more than `OVERRIDE_RESTORE_S`, or it does not fit the scenario),
and the twin resumes from the latest snapshot instead of the scenario's begin. A clean stop deletes that
state: the next run starts as its command line says.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.scenarios.priority import PriorityDemand, write_priority_vehicles
from citysignal.service.config import Settings
from citysignal.service.engine import KPI_EVERY_S, ControlState, EngineConfig, Snapshot
from citysignal.service.geometry import geometry
from citysignal.service.security import RateLimits, TokenRegistry
from citysignal.service.store import AuditStore, EventIn, RestartStore
from citysignal.service.worker import EngineProcess
from citysignal.twin import DEFAULT_SEED
from citysignal.twin.faults import FaultSpec

MAX_SPEED = 1000.0
OVERRIDE_RESTORE_S = 900.0  # an override outlives an outage this long at most: its operator may have gone


@dataclass
class Service:
    settings: Settings
    scenario: Scenario
    engine: EngineProcess
    store: AuditStore
    restart: RestartStore
    tokens: TokenRegistry
    limits: RateLimits
    geometry_json: bytes
    run_id: str
    _started: bool = False
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self.store.start_writer()
            unclean = self.store.unclean_previous_run()
            if unclean is not None:
                note = "no stop record: the previous run was killed or crashed"
                self.system_event("previous_run_unclean", "service", "noted", {"run_id": unclean, "note": note})
            cfg = self.engine.config
            self.system_event("service_start", "service", "ok", {
                "scenario": self.scenario.name, "begin": self.scenario.begin, "end": self.scenario.end,
                "controller": cfg.controller, "speed": cfg.speed, "seed": cfg.seed, "max_red": cfg.max_red,
                "env": self.settings.env, "read_open": self.settings.read_open,
                **self._priority_settings(),
            })  # fmt: skip
            control, resume = self._restored()
            self.engine.start(control=control, resume=resume)

    def _priority_settings(self) -> dict[str, Any]:
        vehicles = self.engine.config.vehicles
        if vehicles is None:
            return {}
        return {"emergency_per_hour": vehicles.emergency_per_hour, "buses_per_hour": vehicles.buses_per_hour,
                "priority": self.engine.config.priority_on}  # fmt: skip

    def _restored(self) -> tuple[ControlState | None, Snapshot | None]:
        """What the previous run of this scenario left, checked and audited (see the module doc)."""
        key = self.engine.config.key
        saved = self.restart.load_control(key)
        row = self.restart.load_snapshot(key)
        resume = None if row is None else Snapshot(key, guard=row[1], sumo_state=row[2], **row[0])
        if saved is None:
            return None, resume
        down = time.time() - max(saved[0], resume.taken_at if resume else 0.0)
        assignment: dict[str, str] = saved[1]["assignment"]
        overrides: dict[str, dict[str, Any]] = saved[1]["overrides"]
        local = self.engine.local
        skipped = local.apply_control(ControlState(assignment, {}))
        counts = Counter(name for inter_id, name in assignment.items() if inter_id not in skipped)
        self.system_event("controller_switch", "city", "restored", {
            "controllers": dict(counts), "left_out": len(skipped), "first_left_out": dict(list(skipped.items())[:5]),
        })  # fmt: skip
        if down > OVERRIDE_RESTORE_S:
            dropped = {i: f"expired: the service was down {down:.0f} s, more than {OVERRIDE_RESTORE_S:g} s"
                       for i in overrides}  # fmt: skip
        else:
            dropped = local.apply_control(ControlState({}, overrides))
        for inter_id, ov in overrides.items():
            detail = {"mode": ov["mode"], "green": ov["green"], "by": ov["actor"], "reason": ov["reason"]}
            if inter_id in dropped:
                self.system_event("override", inter_id, "dropped", {**detail, "why": dropped[inter_id]})
            else:
                self.system_event("override", inter_id, "restored", detail)
        return local.control_state(), resume

    def stop(self) -> None:
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
            self.engine.stop()
            self.restart.clear(self.engine.config.key)
            live = self.engine.live()
            self.system_event("service_stop", "service", "ok", {}, live.time if live else None)
            self.store.close()

    def system_event(self, action: str, target: str, result: str, detail: dict[str, Any],
                     sim_time: float | None = None) -> dict[str, Any]:  # fmt: skip
        return self.store.record(EventIn("system", "system", action, target, result, detail, sim_time=sim_time))

    def info(self) -> dict[str, Any]:
        cfg = self.engine.config
        return {
            "run_id": self.run_id,
            "env": self.settings.env,
            "scenario": self.scenario.name,
            "begin": self.scenario.begin,
            "end": self.scenario.end,
            "intersections": self.engine.layout.n_intersections,
            "controller": cfg.controller,
            "controllers": list(self.engine.offered),
            "speed": cfg.speed,
            "max_red": cfg.max_red,
            **self._priority_settings(),
            "kpi_every_s": KPI_EVERY_S,
            "read_open": self.settings.read_open,
            "override_rate": {"limit": self.settings.override_limit, "window_s": self.settings.override_window_s},
            "store": {"backend": self.store.engine.dialect.name, "journal_mode": self.store.journal_mode},
            "twin": {
                "pid": self.engine.pid,
                "restarts": self.engine.restarts,
                "snapshot_write_errors": self.engine.snapshot_errors,
            },
        }


def build_service(
    settings: Settings,
    scenario: str,
    controller: str,
    *,
    speed: float = 1.0,
    seed: int = DEFAULT_SEED,
    begin: float | None = None,
    end: float | None = None,
    max_red: float = DEFAULT_MAX_RED_S,
    faults: FaultSpec | None = None,
    priority: PriorityDemand | None = None,
    priority_on: bool = True,
    field: str | None = None,
) -> Service:
    settings.validate()
    if not 0 < speed <= MAX_SPEED:
        raise UserError(f"--speed must be in (0, {MAX_SPEED:g}], got {speed:g}")
    if max_red < 1:
        raise UserError(f"max-red must be at least 1 s, got {max_red:g}")
    address = None
    if field is not None:
        from citysignal.field.client import parse_address  # pysnmp: only for street controllers

        address = parse_address(field)
    sc = resolve(scenario, begin, end)
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    if priority is not None and not priority.empty:  # a window too short or no route fails here, in one line
        with tempfile.TemporaryDirectory(prefix="citysignal-") as tmp:
            write_priority_vehicles(sc, priority, Path(tmp) / "priority.add.xml")
    run_id = uuid.uuid4().hex
    store = AuditStore(settings.db_url, run_id)
    try:
        restart = RestartStore(store.engine, run_id)
        config = EngineConfig(sc, controller, speed, seed, max_red, faults, priority, priority_on, address)
        engine = EngineProcess(config, network, layout, store, restart)
    except UserError:
        store.close()
        raise
    return Service(
        settings=settings,
        scenario=sc,
        engine=engine,
        store=store,
        restart=restart,
        tokens=TokenRegistry(settings.tokens),
        limits=RateLimits(settings),
        geometry_json=json.dumps(geometry(network, layout), separators=(",", ":")).encode(),
        run_id=run_id,
    )
