"""A simulated field controller: the SUMO twin behind NTCIP 1202 over SNMP, for a central system to drive.

Every intersection behaves like a street controller (`field.ntcip` says how the network maps onto NTCIP):
- it runs its own sequences: its own `SafetyGuard` turns what it is asked for into legal signal states
  (min green, yellow, all-red, clearance), so no command can shorten them;
- it is asked by the central system's phase control groups while their writes arrive within the backup
  time (`unitBackupTime`, in the controller's seconds), and by its local plan (a citysignal controller
  that needs no SUMO program, by default `fixed`: the net's own program) while they do not. Its
  `unitControlStatus` says which;
- it publishes, every second, what it shows (phase and channel status), its detectors and its clock.

The twin, the guard and the deciding run through the one control loop (`citysignal.loop`); the decider
is `CommandDecider`. The link in front of the agent (`agent.LossyLink`) drops and delays datagrams
(`loss`, `latency_s`) and cuts them all during `outages` (controller seconds).

Pacing: with `speed` > 0 the clock runs at `speed` controller seconds per wall second from the first
request on (1: real time); with `speed` 0 (lockstep) each second waits for the central's commands (a
central refreshes them every second, all intersections at once): for the first write at most
`step_timeout_s` of wall time, then for the other intersections' at most `LOCKSTEP_GRACE_S` (a
lost one does not come). Commands then act in the second they were decided for, as on the direct
twin, and a central that says nothing sees the clock run at one second per timeout. A
controller's clock starts at the scenario's begin once the first request arrives, and it answers for
`linger_s` after its window ends, so that a central sees the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pysnmp.proto import rfc1902

from citysignal.control import SafetyGuard, make_controller
from citysignal.control.base import Controller
from citysignal.control.guard import HOLD
from citysignal.errors import UserError
from citysignal.field import ntcip
from citysignal.field.agent import LossyLink, Objects, V3User, Value, start_agent
from citysignal.loop import ControlLoop
from citysignal.network import load_network, signals
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.twin import Twin
from citysignal.twin.observation import LANE_FIELDS, Observation, ProgramPosition
from citysignal.twin.session import DEFAULT_SEED

DEFAULT_BACKUP_S = 5
LOCKSTEP_GRACE_S = 0.25  # after the first command write of a second, how long the others may take (a loaded
# machine can space a centre's writes by tens of ms; a second run without one lags that intersection by a second)


@dataclass(frozen=True)
class SimOptions:
    """How the simulated controllers run and are reached (see the module docstring)."""

    port: int
    host: str = "127.0.0.1"
    loss: float = 0.0
    latency_s: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()  # [from, to) in controller seconds
    speed: float = 1.0
    step_timeout_s: float = 1.0
    backup_s: int = DEFAULT_BACKUP_S
    local_plan: str = "fixed"
    community: str = "public"
    user: V3User | None = None
    seed: int = DEFAULT_SEED
    linger_s: float = 3.0
    out: Path | None = None  # tripinfo.xml and summary.json go here


@dataclass
class SimSummary:
    """What happened in the field, as the controllers saw it."""

    scenario: str
    begin: float
    end: float
    steps: int = 0
    violations: int = 0  # states shown that failed the controllers' own guard (never expected)
    prevented: int = 0
    backup_s: dict[str, int] = field(default_factory=dict)  # per intersection: seconds run on the local plan
    datagrams_dropped: int = 0
    datagrams_carried: int = 0
    uncommanded: dict[str, int] = field(default_factory=dict)  # lockstep: seconds run without this second's command
    wall_s: float = 0.0


class CommandDecider:
    """The controllers' decisions: the central's phase control groups where they are fresh (written
    within the backup time), the local plan elsewhere. The local plan decides every second, so it takes
    over from where the signals stand."""

    def __init__(self, layout: Layout, local: Controller, backup_s: int) -> None:
        self.local = local
        self.requires = local.requires
        self.backup_s = backup_s
        n = layout.n_intersections
        self.n_phases = [len(i.greens) for i in layout.intersections]
        self.control = [dict.fromkeys(ntcip.CONTROL_COLUMNS, [0] * ntcip.groups(p)) for p in self.n_phases]
        self.last_command = np.full(n, -np.inf)
        self.backup = np.zeros(n, dtype=bool)
        self.backup_steps = np.zeros(n, dtype=np.int64)

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.local.reset(layout, position, seed)

    def command(self, k: int, column: int, group: int, value: int, now: float) -> bool:
        """A write of one phase control group (`column`: hold, force-off, omit or call); False if out of range."""
        if not (0 <= value <= 255 and 1 <= group <= ntcip.groups(self.n_phases[k])):
            return False
        values = list(self.control[k][column])
        values[group - 1] = value
        self.control[k][column] = values
        self.last_command[k] = now
        return True

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        local = self.local.decide(obs)
        self.backup = obs.time - self.last_command > self.backup_s
        self.backup_steps += self.backup
        asked = zip(self.control, self.n_phases, obs.phase, strict=True)
        central = np.array([ntcip.requested_phase(c, p, int(g)) for c, p, g in asked], dtype=np.int64)
        return np.where(self.backup, local, central)


class FieldSim:
    """The simulated controllers of one scenario: `asyncio.run(FieldSim(...).run())`."""

    def __init__(self, scenario: Scenario, options: SimOptions) -> None:
        local = make_controller(options.local_plan)
        if local.sumo_program is not None:
            raise UserError(f"'{options.local_plan}' is SUMO's own program: choose a local plan citysignal runs")
        if not 0.0 <= options.loss < 1.0:
            raise UserError(f"--loss must be in [0, 1), got {options.loss:g}")
        self.scenario = scenario
        self.options = options
        self.layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
        self.detectors = ntcip.DetectorMap.of(self.layout)
        self.decider = CommandDecider(self.layout, local, options.backup_s)
        self.guard = SafetyGuard(self.layout)
        self.summary = SimSummary(scenario.name, scenario.begin, scenario.end)
        self.now = scenario.begin
        n = self.layout.n_intersections
        self.leaving = np.full(n, HOLD, dtype=np.int64)  # the green a running transition leaves
        self._written = np.zeros(n, dtype=bool)
        self._uncommanded = np.zeros(n, dtype=np.int64)
        self._first_written = asyncio.Event()
        self._all_written = asyncio.Event()
        self._contact = asyncio.Event()
        self._last_passed: NDArray[np.float64] | None = None
        self._sequence = 0
        self.objects = [self._context(k) for k in range(n)]

    def _context(self, k: int) -> Objects:
        groups = ntcip.groups(len(self.layout.intersections[k].greens))
        writable = {(*ntcip.PHASE_CONTROL, c, g) for c in ntcip.CONTROL_COLUMNS for g in range(1, groups + 1)}
        writable.add(ntcip.UNIT_BACKUP_TIME)

        def on_write(oid: ntcip.OID, value: int) -> bool:
            self._contact.set()
            if oid == ntcip.UNIT_BACKUP_TIME:
                if not 0 <= value <= 65535:
                    return False
                self.decider.backup_s = value
                return True
            accepted = self.decider.command(k, oid[-2], oid[-1], value, self.now)
            self._written[k] |= accepted
            self._first_written.set()
            if self._written.all():
                self._all_written.set()
            return accepted

        return Objects(frozenset(writable), on_write, on_access=self._contact.set)

    # publishing ---------------------------------------------------------------------------
    def _publish(self, obs: Observation) -> None:
        """Refresh every context's objects from the observation and the guard (once a second)."""
        passed = obs.lane("passed")
        volume = passed - (self._last_passed if self._last_passed is not None else passed)
        self._last_passed = passed
        self._sequence = (self._sequence + 1) % 256
        self.leaving = np.where(self.guard.green >= 0, self.guard.green, self.leaving)
        for k in range(self.layout.n_intersections):
            values = self._unit(k, obs.time)
            values.update(self._signals(k))
            values.update(self._detectors(k, obs, volume))
            self.objects[k].update(values)

    def _unit(self, k: int, now: float) -> dict[ntcip.OID, Value]:
        inter = self.layout.intersections[k]
        n_phases, n_detectors = len(inter.greens), len(self.detectors.lanes[k])
        mode = ntcip.BACKUP_MODE if self.decider.backup[k] else ntcip.SYSTEM_CONTROL
        values = {
            ntcip.GLOBAL_TIME: rfc1902.Counter32(int(now)),
            ntcip.EXTRA_ID: rfc1902.OctetString(inter.id),
            ntcip.MAX_PHASES: n_phases, ntcip.MAX_PHASE_GROUPS: ntcip.groups(n_phases),
            ntcip.MAX_CHANNELS: inter.n_signals, ntcip.MAX_CHANNEL_GROUPS: ntcip.groups(inter.n_signals),
            ntcip.MAX_DETECTORS: n_detectors, ntcip.ACTIVE_DETECTORS: n_detectors,
            ntcip.VOLUME_SEQUENCE: self._sequence, ntcip.VOLUME_PERIOD: 1,
            ntcip.UNIT_BACKUP_TIME: self.decider.backup_s, ntcip.UNIT_CONTROL_STATUS: mode,
            ntcip.UNIT_FLASH_STATUS: ntcip.FLASH_NONE,
            ntcip.UNIT_ALARM_STATUS_1: 0, ntcip.UNIT_ALARM_STATUS_2: 0, ntcip.SHORT_ALARM_STATUS: 0,
        }  # fmt: skip
        return {oid: rfc1902.Integer32(v) if isinstance(v, int) else v for oid, v in values.items()}

    def _signals(self, k: int) -> dict[ntcip.OID, Value]:
        """Phase status (the green showing, or the one a transition leaves while it shows yellow), channel
        status (each signal's colour) and the phase control groups in force."""
        guard = self.guard
        n_phases = len(self.layout.intersections[k].greens)
        green = np.zeros(n_phases, dtype=bool)
        yellow = np.zeros(n_phases, dtype=bool)
        if guard.green[k] >= 0:
            green[guard.green[k]] = True
        elif self.leaving[k] >= 0 and signals.yellow_mask(guard.shown[k]).any():
            yellow[self.leaving[k]] = True
        values: dict[ntcip.OID, Value] = {}
        colours = (ntcip.STATUS_REDS, ntcip.STATUS_YELLOWS, ntcip.STATUS_GREENS)
        phases = (ntcip.bits(~green & ~yellow), ntcip.bits(yellow), ntcip.bits(green))
        for column, phase_groups, channel_groups in zip(colours, phases, ntcip.channel_groups(guard.shown[k]),
                                                        strict=True):  # fmt: skip
            _put_groups(values, ntcip.PHASE_STATUS, column, phase_groups)
            _put_groups(values, ntcip.CHANNEL_STATUS, column, channel_groups)
        for column, control_groups in self.decider.control[k].items():
            _put_groups(values, ntcip.PHASE_CONTROL, column, control_groups)
        return values

    def _detectors(self, k: int, obs: Observation, volume: NDArray[np.float64]) -> dict[ntcip.OID, Value]:
        """NTCIP volume and occupancy per detector, and the block objects (`ntcip.EXTRA`)."""
        mine = self.detectors.lanes[k]
        values: dict[ntcip.OID, Value] = {}
        occupancy = np.clip(np.rint(obs.lane("occupancy")[mine] * ntcip.OCCUPANCY_STEPS), 0, ntcip.OCCUPANCY_STEPS)
        for d, (vol, occ) in enumerate(zip(np.clip(volume[mine], 0, 254), occupancy, strict=True), start=1):
            values[(*ntcip.VOLUME_OCCUPANCY, ntcip.DETECTOR_VOLUME, d)] = rfc1902.Integer32(int(vol))
            values[(*ntcip.VOLUME_OCCUPANCY, ntcip.DETECTOR_OCCUPANCY, d)] = rfc1902.Integer32(int(occ))
        for name, scale in ntcip.EXTRA_SCALE.items():
            rows = self.detectors.box[k] if name == "box" else mine
            values[ntcip.extra_oid(name)] = rfc1902.OctetString(ntcip.pack(obs.lane(name)[rows], scale))
        return values

    # running ------------------------------------------------------------------------------
    def _down(self) -> bool:
        return any(a <= self.now < b for a, b in self.options.outages)

    async def _pace(self, started: float) -> None:
        opts = self.options
        if opts.speed > 0:
            due = started + (self.now + 1 - self.scenario.begin) / opts.speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            return
        with contextlib.suppress(TimeoutError):  # no command at all: the second runs without
            await asyncio.wait_for(self._first_written.wait(), opts.step_timeout_s)
            with contextlib.suppress(TimeoutError):  # the others were lost on the way
                await asyncio.wait_for(self._all_written.wait(), LOCKSTEP_GRACE_S)
        self._uncommanded += ~self._written
        self._first_written.clear()
        self._all_written.clear()
        self._written[:] = False

    async def run(self) -> SimSummary:
        """Serve the scenario's window once, then stop; writes `out` (tripinfo and summary) if set."""
        opts, sc = self.options, self.scenario
        loop = asyncio.get_running_loop()
        out = opts.out
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        tripinfo = out / "tripinfo.xml" if out is not None else None
        with Twin(sc, self.layout, seed=opts.seed, fields=LANE_FIELDS, tripinfo=tripinfo) as twin:
            control = ControlLoop(twin, self.guard, self.decider)
            control.start(opts.seed)
            self.now = twin.time
            self._publish(control.observe())
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))  # the agent, reached only through the link
            inner = start_agent(sock, self.objects, opts.community, opts.user)
            link = LossyLink(sock.getsockname(), opts.loss, opts.latency_s, self._down, seed=opts.seed)
            try:
                await loop.create_datagram_endpoint(lambda: link, local_addr=(opts.host, opts.port))
            except OSError as exc:
                inner.close_dispatcher()
                raise UserError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror}") from exc
            try:
                await self._contact.wait()
                started = time.monotonic()
                while not control.done:
                    await self._pace(started)
                    control.tick()
                    self.now = twin.time
                    self._publish(control.observe())
                await asyncio.sleep(opts.linger_s)
            finally:
                link.close()
                timer = inner.transport_dispatcher.loopingcall  # held: pysnmp drops it while it is cancelled
                inner.close_dispatcher()
                if timer is not None:
                    await asyncio.gather(timer, return_exceptions=True)
            summary = self.summary
            summary.steps = control.steps
            summary.wall_s = round(time.monotonic() - started, 3)
        summary.violations = self.guard.stats.violations
        summary.prevented = self.guard.stats.prevented
        summary.backup_s = {i: int(s) for i, s in zip(self.layout.ids, self.decider.backup_steps, strict=True)}
        summary.datagrams_dropped, summary.datagrams_carried = link.dropped, link.carried
        summary.uncommanded = {i: int(c) for i, c in zip(self.layout.ids, self._uncommanded, strict=True)}
        if out is not None:
            (out / "summary.json").write_text(json.dumps(asdict(summary), indent=1) + "\n")
        return summary


def _put_groups(values: dict[ntcip.OID, Value], entry: ntcip.OID, column: int, groups: list[int]) -> None:
    """A group table's column: group `g` (from 1) under `entry.column.g`."""
    for g, v in enumerate(groups, start=1):
        values[(*entry, column, g)] = rfc1902.Integer32(v)
