"""The service's parts wired together: settings, scenario, twin loop, audit store, tokens, rate limit.

`build_service` does everything that can fail on user input (settings, scenario, net, database,
controller name) before anything runs, so `citysignal serve` reports it in one line with exit code 2.
`Service.start` writes the start record (and notes a previous run that ended without a stop record,
i.e. was killed or crashed) and starts the twin in its worker process; `stop` is idempotent.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.service.config import Settings
from citysignal.service.engine import KPI_EVERY_S, EngineConfig
from citysignal.service.geometry import geometry
from citysignal.service.security import RateLimits, TokenRegistry
from citysignal.service.store import AuditStore, EventIn
from citysignal.service.worker import EngineProcess
from citysignal.twin import DEFAULT_SEED

MAX_SPEED = 1000.0


@dataclass
class Service:
    settings: Settings
    scenario: Scenario
    engine: EngineProcess
    store: AuditStore
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
            })  # fmt: skip
            self.engine.start()

    def stop(self) -> None:
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
            self.engine.stop()
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
            "kpi_every_s": KPI_EVERY_S,
            "read_open": self.settings.read_open,
            "override_rate": {"limit": self.settings.override_limit, "window_s": self.settings.override_window_s},
            "store": {"backend": self.store.engine.dialect.name, "journal_mode": self.store.journal_mode},
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
) -> Service:
    settings.validate()
    if not 0 < speed <= MAX_SPEED:
        raise UserError(f"--speed must be in (0, {MAX_SPEED:g}], got {speed:g}")
    if max_red < 1:
        raise UserError(f"max-red must be at least 1 s, got {max_red:g}")
    sc = resolve(scenario, begin, end)
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    run_id = uuid.uuid4().hex
    store = AuditStore(settings.db_url, run_id)
    try:
        engine = EngineProcess(EngineConfig(sc, controller, speed, seed, max_red), network, layout, store)
    except UserError:
        store.close()
        raise
    return Service(
        settings=settings,
        scenario=sc,
        engine=engine,
        store=store,
        tokens=TokenRegistry(settings.tokens),
        limits=RateLimits(settings),
        geometry_json=json.dumps(geometry(network, layout), separators=(",", ":")).encode(),
        run_id=run_id,
    )
