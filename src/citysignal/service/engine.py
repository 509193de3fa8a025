"""The real-time control loop: one twin, the controllers, operator overrides, all through the guard.

One dedicated thread owns the twin (libsumo allows one simulation per process) and runs the control
loop (`citysignal.loop`, the one bench and learn run) at wall-clock pace times `speed`: observe ->
every active controller decides -> operator overrides replace the requests of their intersections ->
`SafetyGuard.apply` -> `Twin.write` -> record (audit, KPIs, publish) -> `Twin.step`. The guard stays
the only writer of signal states: an override is a *request* like any controller's, so min green,
yellow/all-red transitions, conflict checks and the max-red bound still apply to it (a held phase is
preempted when a waiting movement has been red for `max_red`, and resumed afterwards; both are logged).

Controller switching: each intersection is assigned one controller by name. Every controller with at
least one intersection decides city-wide each step (controllers are vectorized) and its requests are
taken where it is assigned. A controller taking over starts fresh, `reset` from the guard's current
phase (so a cycle controller continues from the green that is showing). `actuated` is SUMO's own
program, not a guard-driven controller, so the service does not offer it.

Readers never touch SUMO: they read `live()`, an immutable snapshot published after every step (and
handed to `on_publish`), and change overrides/assignments under a lock the loop holds only during a
step. The service runs this engine in a worker process (see `worker.py`): libsumo holds the GIL for a
whole simulation step, which would stall the API if both shared a process. When the
scenario's window ends, the next episode starts at once (seed + episode number), keeping the
controller assignment and the overrides.

Snapshots: every `SNAPSHOT_EVERY_S` of wall time (and after the first step) the loop hands `on_snapshot` a
`Snapshot`: SUMO's saved state and the guard's, taken together at one step boundary. An engine built with
`resume=` starts from one instead of the scenario's begin: SUMO loads the state, the guard continues its
sequences (min green, running transitions, max-red clocks) and writes the states it was showing again
(SUMO does not keep states set from outside), and the controllers start fresh from the greens shown, as
after a controller switch. A snapshot that does not load is audited (`snapshot_unusable`) and the
episode starts from its begin. `ControlState` (assignments and overrides by intersection id) is what a
restart must carry over besides the snapshot; `apply_control` takes it back, leaving out what does not
fit this scenario.

Priority vehicles (`serve --emergency-per-hour/--buses-per-hour`, `scenarios.priority`): each episode adds its
own (seed + episode number) and `control.priority.Priority` turns their calls into greens the guard holds
(it only watches under `--no-priority`). `Live.priority` carries the preemptions and bus grants in force and
the calls; each preemption and grant is audited when it starts and when it ends. A resumed snapshot keeps
the vehicles on the road, but priority starts afresh: a hold in force is taken up again from its vehicle's
call (audited as a new start) and the counts restart. What-if candidates fork the vehicles but give them no
priority.

Limits: pace is best effort; when a step takes longer than 1/speed s the loop runs as fast as it can
and reports the achieved pace (`pace`) and what it could do (`capacity`, sim s per wall s) instead
of bursting to catch up. Queue fractions assume 7.5 m per halting vehicle.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from citysignal.control import HOLD, Controller, SafetyGuard, controller_names, make_controller
from citysignal.control.guard import DEFAULT_MAX_RED_S, GUARD_FIELDS
from citysignal.control.health import HEALTH_FIELDS, DetectorSupervisor
from citysignal.control.priority import REACH_M, Priority
from citysignal.errors import UserError
from citysignal.loop import ControlLoop, ResumeError, Tick, guard_position
from citysignal.network import Network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.scenarios.priority import PriorityDemand, write_priority_vehicles
from citysignal.service.store import EventIn
from citysignal.twin import DEFAULT_SEED, Observation, ProgramPosition, Twin
from citysignal.twin.faults import DetectorFaults, FaultSpec
from citysignal.twin.observation import JAM_SPACING_M

if TYPE_CHECKING:
    from citysignal.field.backend import FieldBackend
    from citysignal.field.client import FieldAddress

SERVICE_FIELDS = frozenset({"vehicles", "occupancy", "speed"}) | GUARD_FIELDS
KPI_EVERY_S = 10
PACE_WINDOW_STEPS = 50
SNAPSHOT_EVERY_S = 5.0
OverrideMode = Literal["hold", "force", "auto"]
PRIORITY_ACTIONS = {"emergency": "emergency_preemption", "bus": "transit_priority"}  # audit actions by kind


class Recorder(Protocol):
    """Where the loop sends its system events and KPI samples (the audit store's async side)."""

    def record_later(self, ev: EventIn) -> None: ...

    def kpi_later(self, sample: dict[str, Any]) -> None: ...


class CommandError(Exception):
    """An operator command the engine cannot carry out; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def offered_controllers() -> tuple[str, ...]:
    """Controllers the service can run and switch: the guard-driven ones (not SUMO's own programs)."""
    return tuple(n for n in controller_names() if make_controller(n).sumo_program is None)


@dataclass(frozen=True)
class EngineConfig:
    scenario: Scenario
    controller: str
    speed: float = 1.0
    seed: int = DEFAULT_SEED
    max_red: float = DEFAULT_MAX_RED_S
    faults: FaultSpec | None = None  # detector faults (see `bench --detector-faults`); controllers supervised
    priority: PriorityDemand | None = None  # emergency vehicles and buses added (`serve --emergency-per-hour`)
    priority_on: bool = True  # False: the same vehicles, no preemption or priority (`--no-priority`)
    field: FieldAddress | None = None  # street controllers to drive instead of the twin (`serve --field`)

    @property
    def vehicles(self) -> PriorityDemand | None:
        """The priority vehicles added, if any."""
        return self.priority if self.priority is not None and not self.priority.empty else None

    @property
    def key(self) -> str:
        """Which runs can share state: the same scenario files, window, seed and added vehicles (a snapshot
        of one run does not fit another)."""
        sc = self.scenario
        ident = f"{sc.name}|{sc.sumocfg.resolve()}|{sc.begin!r}|{sc.end!r}|{self.seed}"
        if self.vehicles is not None:
            ident += f"|{self.vehicles!r}"
        return hashlib.sha256(ident.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Snapshot:
    """A step boundary the twin can continue from: SUMO's saved state and the guard's, taken together."""

    key: str
    episode: int
    episode_steps: int
    sim_time: float
    taken_at: float  # wall clock, UTC seconds
    guard: dict[str, Any]
    sumo_state: bytes  # gzip-compressed SUMO state XML


@dataclass(frozen=True)
class ControlState:
    """What operators set that outlives a restart: every intersection's controller, the active overrides
    (`Override.public()` by intersection id)."""

    assignment: dict[str, str]
    overrides: dict[str, dict[str, Any]]


class _ResumeFailed(Exception):
    pass


class _Assigned:
    """The engine's decider in the loop: every controller with at least one intersection decides city-wide,
    each intersection takes the request of the controller assigned to it, and an operator override
    replaces that request (a request like any other: the guard still has the last word)."""

    def __init__(self, engine: ControlEngine) -> None:
        self.engine = engine

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        engine = self.engine
        engine._controllers = {name: engine._fresh(name, position, seed) for name in engine._active_names()}

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        engine = self.engine
        requests = np.full(engine.layout.n_intersections, HOLD, dtype=np.int64)
        for name, ctrl in engine._controllers.items():
            mine = engine._assign == engine._name_index[name]
            requests[mine] = ctrl.decide(obs)[mine]
        for k, ov in engine._overrides.items():
            requests[k] = ov.green
        return requests

    def guard_inputs(self, obs: Observation) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        halting: NDArray[np.float64] = obs.lane("halting")
        passed: NDArray[np.float64] | None = obs.lane("passed")
        for ctrl in self.engine._controllers.values():
            if isinstance(ctrl, DetectorSupervisor):  # every supervisor judges the same readings alike
                halting, passed = ctrl.guard_inputs(obs)
        return halting, passed


@dataclass
class Override:
    mode: Literal["hold", "force"]
    green: int
    actor: str
    reason: str
    since_sim: float
    since_wall: float
    preempted: bool = False

    def public(self) -> dict[str, Any]:
        return {"mode": self.mode, "green": self.green, "actor": self.actor, "reason": self.reason,
                "since_sim": self.since_sim, "since_wall": self.since_wall, "preempted": self.preempted}  # fmt: skip

    @classmethod
    def from_public(cls, d: dict[str, Any]) -> Override:
        mode: Literal["hold", "force"] = "force" if d["mode"] == "force" else "hold"
        return cls(mode, int(d["green"]), str(d["actor"]), str(d["reason"]), float(d["since_sim"]),
                   float(d["since_wall"]))  # fmt: skip


@dataclass(frozen=True)
class Live:
    """The city after one step; read-only arrays, safe to read from any thread."""

    step: int
    episode: int
    time: float
    wall: float
    shown: tuple[str, ...]
    green: NDArray[np.int64]
    target: NDArray[np.int64]
    time_in_phase: NDArray[np.float64]
    obs: Observation
    assignment: tuple[str, ...]
    overrides: dict[str, dict[str, Any]]
    kpi: dict[str, float]
    kpi_sample: dict[str, Any] | None
    pace: float
    capacity: float
    queue_fraction: NDArray[np.float64] = field(repr=False, default_factory=lambda: np.zeros(0))
    priority: dict[str, Any] | None = None  # see `ControlEngine._priority_view`; None without priority vehicles
    field: dict[str, Any] | None = None  # see `ControlEngine._field_view`; None on the twin


class ControlEngine:
    def __init__(
        self, config: EngineConfig, network: Network, layout: Layout, recorder: Recorder,
        on_publish: Callable[[Live], None] | None = None, on_snapshot: Callable[[Snapshot], None] | None = None,
        resume: Snapshot | None = None,
    ) -> None:  # fmt: skip
        self.offered = offered_controllers()
        if config.controller not in self.offered:
            hint = " (SUMO's own program: use `citysignal bench` for it)" if config.controller == "actuated" else ""
            raise UserError(
                f"controller '{config.controller}' cannot be served{hint}; choose from: {', '.join(self.offered)}"
            )
        if not layout.n_intersections:
            raise UserError(f"{config.scenario.name}: no controllable intersection")
        if config.field is not None and (config.faults is not None or config.vehicles is not None):
            raise UserError("--field drives real detectors and vehicles: no --detector-faults or priority vehicles")
        self.config = config
        self.network = network
        self.layout = layout
        self.recorder = recorder
        self.on_publish = on_publish
        self.on_snapshot = on_snapshot
        self._resume = resume if resume is not None and resume.key == config.key else None
        make_controller(config.controller)  # an unknown name fails here, before the thread starts
        self.fields = SERVICE_FIELDS.union(*(make_controller(n).requires for n in self.offered))
        self.fields |= HEALTH_FIELDS if config.faults is not None else frozenset()
        self._decider = _Assigned(self)
        self.index = {inter.id: k for k, inter in enumerate(layout.intersections)}
        self._name_index = {n: i for i, n in enumerate(self.offered)}
        self._assign = np.full(layout.n_intersections, self._name_index[config.controller], dtype=np.int64)
        self._controllers: dict[str, Controller | DetectorSupervisor] = {}
        self._overrides: dict[int, Override] = {}
        self._guard: SafetyGuard | None = None
        self._priority: Priority | None = None
        self._priority_active: dict[tuple[str, str, str], dict[str, Any]] = {}  # audited as started, not ended
        self._field: FieldBackend | None = None
        self._field_events = 0  # the field's comm events audited so far
        self._lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._episode = self._resume.episode if self._resume is not None else 0
        self._episode_steps = 0
        self._steps = 0
        self._seen_refused = 0
        self._seen_violations = 0
        self._pace: deque[tuple[float, float]] = deque(maxlen=PACE_WINDOW_STEPS)
        self._busy: deque[float] = deque(maxlen=PACE_WINDOW_STEPS)
        self.error: str | None = None
        self.loading = True  # opening a twin (start, next episode): no step is due
        self.stepped_at = time.monotonic()
        self._lane_length = np.maximum(layout.lane_length, 1.0)
        self.approaches = [self._approaches(k) for k in range(layout.n_intersections)]

    def _approaches(self, k: int) -> list[tuple[str, list[int]]]:
        lanes = sorted({int(i) for i in self.layout.mov_in[self.layout.mov_int == k]})
        by_edge: dict[str, list[int]] = {}
        for i in lanes:
            name = self.layout.lanes[i]
            edge = self.network.lanes[name].edge if name in self.network.lanes else name.rsplit("_", 1)[0]
            by_edge.setdefault(edge, []).append(i)
        return sorted(by_edge.items())

    # lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def start(self, timeout: float = 120.0) -> None:
        """Start the loop thread and wait for the first step; a twin that cannot start is a UserError."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="citysignal-twin", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise UserError(f"the twin did not start within {timeout:g} s")
        if self.error is not None:
            raise UserError(self.error)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def live(self) -> Live | None:
        return self._live

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._run_episode()
                except _ResumeFailed as exc:
                    self._system("snapshot_unusable", "city", "error", {"error": str(exc), "episode": self._episode})
                    continue
                if self._stop.is_set():
                    break
                if self.config.field is not None:  # the field's clock passed the window's end: nothing to restart
                    self._system("field_window_end", "city", "ok", {"sim_time": self.config.scenario.end})
                    self.loading = True
                    break
                self._episode += 1
                self._system("episode_restart", "city", "ok", {"episode": self._episode})
        except UserError as exc:
            self._fail(str(exc))
        except Exception as exc:  # a crashed loop must be visible (health, log), not silent
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._ready.set()

    def _fail(self, message: str) -> None:
        self.error = message
        self._system("engine_error", "city", "error", {"error": message})

    def _run_episode(self) -> None:
        resume, self._resume = self._resume, None
        self.loading = True
        try:
            if self.config.field is not None:
                self._run_field(self.config.field)
            else:
                with tempfile.TemporaryDirectory(prefix="citysignal-serve-") as tmp:
                    self._run_twin(resume, Path(tmp))
        finally:
            self._guard = None
            self._priority = None

    def _run_twin(self, resume: Snapshot | None, tmp: Path) -> None:
        cfg = self.config
        extra: tuple[Path, ...] = ()
        if cfg.vehicles is not None:  # new vehicles each episode, the same again when a snapshot resumes
            demand = replace(cfg.vehicles, seed=cfg.vehicles.seed + self._episode)
            extra = (write_priority_vehicles(cfg.scenario, demand, tmp / "priority.add.xml"),)
        priority = Priority(self.layout, enabled=cfg.priority_on) if extra else None
        reach = REACH_M if priority is not None else None
        with Twin(cfg.scenario, self.layout, seed=cfg.seed + self._episode, fields=self.fields, extra_additional=extra,
                  priority_reach=reach) as twin:  # fmt: skip
            with self._lock:
                guard = self._guard = SafetyGuard(self.layout, cfg.max_red)
                self._priority = priority
                self._priority_active = {}
                loop = ControlLoop(twin, guard, self._decider, recorder=self._record, priority=priority)
                if resume is None:
                    loop.start(cfg.seed + self._episode)
                    self._episode_steps = 0
                else:
                    self._resume_from(loop, resume)
                faults = cfg.faults
                loop.faults = None if faults is None else DetectorFaults(faults, self.layout, twin.time)
                self._seen_refused, self._seen_violations = guard.stats.refused, guard.stats.violations
                for ov in self._overrides.values():
                    ov.preempted = False
            self._loop(loop)
            self._check_priority(loop.time, ended=True)

    def _run_field(self, address: FieldAddress) -> None:
        """Street controllers instead of the twin (`citysignal.field`): the same loop, controllers and overrides
        through a `FieldGuard`; the controllers' clock paces the loop, no snapshot is taken (a street cannot be
        forked), and each comm loss and its end is audited and published. The live state ends at the window's
        end, however far the controllers' clock ran ahead of a slow centre in its last step."""
        from citysignal.field.backend import FIELD_FIELDS, FieldBackend
        from citysignal.field.guard import FieldGuard

        cfg = self.config
        backend = FieldBackend(self.layout, address, cfg.scenario.end, self.fields & FIELD_FIELDS)
        try:
            with self._lock:
                guard = self._guard = FieldGuard(self.layout, backend, cfg.max_red)
                self._field, self._field_events = backend, 0
                loop = ControlLoop(backend, guard, self._decider, recorder=self._record)
                loop.start(cfg.seed)
                self._episode_steps = 0
                self._seen_refused, self._seen_violations = guard.stats.refused, guard.stats.violations
            self._loop(loop)
            if loop.done:  # the last poll, past the window's end: a step records what it saw before stepping
                with self._lock:
                    now = loop.time
                    self._check_field(now)
                    self._publish(guard, loop.observe(), now, None)
        finally:
            backend.close()

    def _resume_from(self, loop: ControlLoop[Twin], snap: Snapshot) -> None:
        try:
            loop.resume(snap.sumo_state, snap.guard, self.config.seed + self._episode)
        except ResumeError as exc:
            raise _ResumeFailed(f"snapshot at t={snap.sim_time:g} s did not load: {exc}") from exc
        self._episode_steps = snap.episode_steps
        self._system("twin_resumed", "city", "ok", {"sim_time": loop.time, "episode": snap.episode,
                                                     "snapshot_taken_at": snap.taken_at}, loop.time)  # fmt: skip

    def _loop(self, loop: ControlLoop[Twin] | ControlLoop[FieldBackend]) -> None:
        deadline = time.perf_counter()
        snapshot_at = -np.inf
        self.loading = False
        while not loop.done and not self._stop.is_set():
            if self._waiting:  # let a waiting API command in before taking the lock again
                time.sleep(0.0005)
            started = time.perf_counter()
            with self._lock:
                loop.tick()
                self._pace.append((time.perf_counter(), loop.time))
            finished = time.perf_counter()
            self.stepped_at = time.monotonic()
            self._busy.append(finished - started)
            if self._field is not None:  # the controllers keep the pace, and a street has no snapshot
                continue
            if self.on_snapshot is not None and finished - snapshot_at >= SNAPSHOT_EVERY_S:
                snapshot_at = finished
                self.on_snapshot(self._snapshot(loop))  # type: ignore[arg-type]
            deadline += 1.0 / self.config.speed
            delay = deadline - finished
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1.0:  # behind by more than a second: run on, don't burst to catch up
                deadline = finished

    def _snapshot(self, loop: ControlLoop[Twin]) -> Snapshot:
        """Only the loop thread steps the twin and the guard, so no lock is needed to read both together."""
        sumo_state, guard_state = loop.save()
        return Snapshot(self.config.key, self._episode, self._episode_steps, loop.time, time.time(), guard_state,
                        sumo_state)  # fmt: skip

    def control_state(self) -> ControlState:
        ids = self.layout.ids
        return ControlState({ids[k]: self.offered[i] for k, i in enumerate(self._assign)},
                            {ids[k]: ov.public() for k, ov in self._overrides.items()})  # fmt: skip

    def apply_control(self, control: ControlState) -> dict[str, str]:
        """Take over a restart's assignments and overrides (before `start`); returns, by intersection id,
        why an entry was left out (an intersection, controller or green this scenario does not have)."""
        left_out: dict[str, str] = {}
        for inter_id, name in control.assignment.items():
            if inter_id not in self.index:
                left_out[inter_id] = "no such intersection"
            elif name not in self._name_index:
                left_out[inter_id] = f"controller '{name}' cannot be served"
            else:
                self._assign[self.index[inter_id]] = self._name_index[name]
        for inter_id, ov in control.overrides.items():
            k = self.index.get(inter_id)
            if k is None:
                left_out[inter_id] = "no such intersection"
            elif not 0 <= int(ov["green"]) < len(self.layout.intersections[k].greens):
                left_out[inter_id] = f"green {ov['green']} does not exist"
            else:
                self._overrides[k] = Override.from_public(ov)
        return left_out

    def _active_names(self) -> list[str]:
        return [self.offered[i] for i in np.unique(self._assign)]

    def _fresh(self, name: str, position: ProgramPosition, seed: int) -> Controller | DetectorSupervisor:
        made = make_controller(name)
        ctrl = made if self.config.faults is None else DetectorSupervisor(made)
        ctrl.reset(self.layout, position, seed)
        return ctrl

    # one step ------------------------------------------------------------------------------
    def _record(self, tick: Tick) -> None:
        """The loop's recorder: after the guard's writes, before the twin steps."""
        guard = self._guard
        assert guard is not None
        now, obs = tick.time, tick.obs  # the KPIs keep the true readings
        self._check_overrides(guard, now)
        self._check_guard(guard, now)
        self._check_priority(now)
        self._check_field(now)
        sample = None
        if self._episode_steps % KPI_EVERY_S == 0:
            sample = self._kpi_sample(guard, obs, now)
            self.recorder.kpi_later(sample)
        self._publish(guard, obs, now, sample)
        self._episode_steps += 1
        self._steps += 1

    def _check_overrides(self, guard: SafetyGuard, now: float) -> None:
        """An override the guard is not carrying out (not shown, not next, not pending) was preempted
        by the max-red bound; log the start and the end of each such preemption once."""
        for k, ov in self._overrides.items():
            want = ov.green
            on_track = want in (int(guard.green[k]), int(guard.target[k]), int(guard.pending[k]))
            if not on_track and not ov.preempted:
                ov.preempted = True
                self._system(
                    "guard_preempted", self.layout.ids[k], "preempted",
                    {"override": ov.mode, "green": want, "by": ov.actor,
                     "why": f"a waiting movement was red for more than {self.config.max_red:g} s (max-red bound); "
                            "the guard serves it first, then the override resumes"},
                    now,
                )  # fmt: skip
            elif on_track and ov.preempted:
                ov.preempted = False
                self._system("override_resumed", self.layout.ids[k], "ok", {"green": want, "by": ov.actor}, now)

    def _check_priority(self, now: float, ended: bool = False) -> None:
        """Audit each emergency preemption and bus priority grant once when it starts and once when it ends
        (`ended`: the episode is over, so all in force end)."""
        priority = self._priority
        if priority is None:
            return
        rows = {} if ended else {(r["kind"], r["intersection"], r["vehicle"]): r for r in priority.active()}
        for key, row in rows.items():
            if key not in self._priority_active:
                self._system(PRIORITY_ACTIONS[row["kind"]], row["intersection"], "start",
                             {"vehicle": row["vehicle"], "green": row["green"]}, now)  # fmt: skip
        for key, row in self._priority_active.items():
            if key not in rows:
                self._system(PRIORITY_ACTIONS[row["kind"]], row["intersection"], "end",
                             {"vehicle": row["vehicle"], "held_s": round(now - row["since"], 1)}, now)  # fmt: skip
        self._priority_active = rows

    def _priority_view(self, obs: Observation) -> dict[str, Any] | None:
        """What the dashboard shows of priority: the preemptions and grants in force (`Priority.active`), the
        priority vehicles calling a signal now (requests, granted or not), and the counts so far."""
        priority = self._priority
        if priority is None:
            return None
        ids = self.layout.ids
        calls = [{"intersection": ids[c.intersection], "kind": c.kind, "vehicle": c.vehicle,
                  "distance": round(c.distance, 1)} for c in obs.calls]  # fmt: skip
        return {"enabled": priority.enabled, "active": list(self._priority_active.values()), "calls": calls,
                **priority.counts}  # fmt: skip

    def _check_field(self, now: float) -> None:
        """Audit each comm loss of an intersection and each end of one (`FieldBackend.events`), once."""
        field = self._field
        if field is None:
            return
        for event in field.events[self._field_events :]:
            result = "error" if event.kind == "comm_loss" else "ok"
            self._system(event.kind, event.intersection, result, {"missed_polls": field.missed_polls}, event.time)
        self._field_events = len(field.events)

    def _field_view(self) -> dict[str, Any] | None:
        """What the dashboard shows of the field: the address, the intersections in comm loss and those whose
        controllers report running their local plan."""
        field = self._field
        if field is None:
            return None
        ids = self.layout.ids
        return {"address": str(field.address), "comm_loss": [ids[k] for k in np.flatnonzero(field.lost)],
                "local_plan": [ids[k] for k in np.flatnonzero(field.backup)], "polls": field.polls,
                "missed_polls": field.missed_total}  # fmt: skip

    def _check_guard(self, guard: SafetyGuard, now: float) -> None:
        st = guard.stats
        if st.refused > self._seen_refused:
            self._system("guard_refused", "city", "refused", {"requests": st.refused - self._seen_refused}, now)
            self._seen_refused = st.refused
        if st.violations > self._seen_violations:
            new = st.violations - self._seen_violations
            self._system("guard_violation", "city", "violation", {"count": new, "log": st.violation_log[-new:]}, now)
            self._seen_violations = st.violations

    def _kpis(self, guard: SafetyGuard, obs: Observation) -> dict[str, float]:
        vehicles = obs.lane("vehicles")
        total = float(vehicles.sum())
        speed = float((obs.lane("speed") * vehicles).sum() / total) if total > 0 else 0.0
        return {
            "vehicles": total,
            "halting": float(obs.lane("halting").sum()),
            "mean_speed": round(speed, 3),
            "occupancy": round(float(obs.lane("occupancy").mean()), 4),
            "preemptions": guard.stats.max_red_preemptions,
            "deferred": guard.stats.deferred,
            "refused": guard.stats.refused,
            "violations": guard.stats.violations,
            "overrides": len(self._overrides),
            "pace": round(self.pace(), 2),
        }

    def _kpi_sample(self, guard: SafetyGuard, obs: Observation, now: float) -> dict[str, Any]:
        names = self._active_names()
        return {"at": time.time(), "episode": self._episode, "sim_time": now,
                "controller": names[0] if len(names) == 1 else "mixed", **self._kpis(guard, obs)}  # fmt: skip

    def _publish(self, guard: SafetyGuard, obs: Observation, now: float, sample: dict[str, Any] | None) -> None:
        last = self._live
        self._live = Live(
            step=self._steps,
            episode=self._episode,
            time=now,
            wall=time.time(),
            shown=tuple(guard.shown),
            green=guard.green.copy(),
            target=guard.target.copy(),
            time_in_phase=guard.time_in_phase(now),
            obs=obs,
            assignment=tuple(self.offered[i] for i in self._assign),
            overrides={self.layout.ids[k]: ov.public() for k, ov in self._overrides.items()},
            kpi=self._kpis(guard, obs),
            kpi_sample=sample if sample is not None else (last.kpi_sample if last else None),
            pace=self.pace(),
            capacity=self.capacity(),
            queue_fraction=np.minimum(1.0, obs.lane("halting") * JAM_SPACING_M / self._lane_length),
            priority=self._priority_view(obs),
            field=self._field_view(),
        )
        if self.on_publish is not None:
            self.on_publish(self._live)
        self._ready.set()

    def pace(self) -> float:
        """Achieved simulated seconds per wall-clock second over the last steps."""
        if len(self._pace) < 2:
            return 0.0
        (w0, s0), (w1, s1) = self._pace[0], self._pace[-1]
        return (s1 - s0) / (w1 - w0) if w1 > w0 else 0.0

    def capacity(self) -> float:
        """Simulated seconds per wall-clock second the loop could run (1 / mean step time)."""
        if not self._busy:
            return 0.0
        return 1.0 / max(1e-9, sum(self._busy) / len(self._busy))

    def _system(self, action: str, target: str, result: str, detail: dict[str, Any], now: float | None = None) -> None:
        self.recorder.record_later(EventIn("system", "system", action, target, result, detail, sim_time=now))

    # commands (API threads) ----------------------------------------------------------------
    @contextmanager
    def _command(self) -> Iterator[SafetyGuard]:
        with self._waiting_lock:
            self._waiting += 1
        try:
            with self._lock:
                if self._guard is None:
                    raise CommandError(503, self.error or "the twin is between episodes; retry in a moment")
                yield self._guard
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def intersection_index(self, inter_id: str) -> int:
        try:
            return self.index[inter_id]
        except KeyError:
            raise CommandError(404, f"unknown intersection '{inter_id}'") from None

    def set_override(self, inter_id: str, mode: OverrideMode, green: int | None, actor: str,
                     reason: str = "") -> dict[str, Any]:  # fmt: skip
        """Hold the current green, force a green, or return to automatic control ("auto")."""
        k = self.intersection_index(inter_id)
        inter = self.layout.intersections[k]
        with self._command() as guard:
            now = self._live.time if self._live else 0.0
            if mode == "auto":
                prev = self._overrides.pop(k, None)
                if prev is None:
                    return {"result": "no_override", "guard": "already under automatic control"}
                return {"result": "applied", "guard": f"back to {self.offered[self._assign[k]]}",
                        "previous": prev.public()}  # fmt: skip
            if mode == "hold":
                want = int(guard.green[k]) if guard.green[k] >= 0 else int(guard.target[k])
                if want < 0:
                    raise CommandError(409, f"{inter_id} shows no green and is not heading to one; retry")
            else:
                if green is None or not 0 <= green < len(inter.greens):
                    raise CommandError(
                        422, f"green {green} does not exist at {inter_id} (greens 0..{len(inter.greens) - 1})"
                    )
                want = green
            self._overrides[k] = Override(mode, want, actor, reason, now, time.time())
            result, outlook = self._outlook(guard, k, want, now)
            return {"result": result, "green": want, "state": inter.greens[want], "guard": outlook}

    def _outlook(self, guard: SafetyGuard, k: int, want: int, now: float) -> tuple[str, str]:
        """What the guard will do with the request at its next step, in words."""
        current = int(guard.green[k])
        if current == want:
            return "applied", f"green {want} is showing and is kept"
        if current < 0:
            if int(guard.target[k]) == want:
                return "applied", f"the running transition leads to green {want}"
            return "deferred", f"the guard finishes the running transition first, then goes to green {want}"
        left = float(self.layout.intersections[k].min_green[current]) - float(now - guard.since[k])
        if left > 0:
            return "deferred", f"min green: green {current} must run {left:.0f} s more, then yellow/all-red to {want}"
        return "applied", f"yellow/all-red now, then green {want}"

    def switch_controller(self, name: str, inter_ids: list[str] | None, actor: str) -> dict[str, Any]:
        """Assign controller `name` to the given intersections (None: city-wide)."""
        if name not in self._name_index:
            raise CommandError(422, f"controller '{name}' cannot be served; choose from: {', '.join(self.offered)}")
        ks = list(range(self.layout.n_intersections)) if inter_ids is None else [
            self.intersection_index(i) for i in inter_ids
        ]  # fmt: skip
        with self._command() as guard:
            before: dict[str, int] = {}
            for k in ks:
                old = self.offered[self._assign[k]]
                before[old] = before.get(old, 0) + 1
            if name not in self._controllers:
                now = self._live.time if self._live else 0.0
                position = guard_position(self.layout, guard, now)
                self._controllers[name] = self._fresh(name, position, self.config.seed + self._episode)
            self._assign[ks] = self._name_index[name]
            for old in [n for n in self._controllers if n not in self._active_names()]:
                del self._controllers[old]
            return {"result": "applied", "controller": name, "intersections": len(ks), "before": before}

    def detail(self, inter_id: str) -> dict[str, Any]:
        """Everything the intersection panel shows, including why the controller chose its phase."""
        k = self.intersection_index(inter_id)
        inter = self.layout.intersections[k]
        with self._command():
            name = self.offered[self._assign[k]]
            ctrl = self._controllers.get(name)
            try:
                why = ctrl.explain(k) if ctrl is not None else "controller starting"
            except Exception as exc:  # an explanation must never take the panel down
                why = f"no explanation available ({type(exc).__name__})"
            faulty = ctrl.faulty_lanes() if isinstance(ctrl, DetectorSupervisor) else {}
            ov = self._overrides.get(k)
            override = ov.public() if ov else None
        live = self._live
        assert live is not None
        halting, vehicles = live.obs.lane("halting"), live.obs.lane("vehicles")
        approaches = [
            {"edge": edge, "lanes": [self.layout.lanes[i] for i in idx],
             "halting": int(sum(halting[i] for i in idx)), "vehicles": int(sum(vehicles[i] for i in idx)),
             "faulty": {lane: faulty[lane] for lane in (self.layout.lanes[i] for i in idx) if lane in faulty}}
            for edge, idx in self.approaches[k]
        ]  # fmt: skip
        if override is not None:
            mode = "held" if override["mode"] == "hold" else "forced"
            why = f"operator override by {override['actor']}: green {override['green']} {mode}. Controller: {why}"
        return {
            "id": inter.id,
            "junctions": list(inter.junctions),
            "time": live.time,
            "controller": name,
            "explain": why,
            "override": override,
            "shown": live.shown[k],
            "green": int(live.green[k]),
            "target": int(live.target[k]),
            "time_in_phase": round(float(live.time_in_phase[k]), 1),
            "greens": [
                {"index": g, "state": s, "min_green": float(inter.min_green[g]), "max_green": float(inter.max_green[g])}
                for g, s in enumerate(inter.greens)
            ],
            "approaches": approaches,
            "upstream": list(inter.upstream),
            "downstream": list(inter.downstream),
        }
