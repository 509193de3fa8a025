"""The control loop's backend for signal controllers in the field, over NTCIP 1202 (`field.ntcip`).

What the loop sees through it (`citysignal.loop.Backend`):
- `time`: the controllers' clock (NTCIP 1201 globalTime), never running backwards; while none answers,
  the last time known (after `GIVE_UP_S` of wall time without an answer, a run ends with an error);
- `step()`: sends this second's commands, waits until the controllers' clock has moved on by a second
  (at most `step_wait_s`), then polls every controller once (one GET per intersection, all at once):
  what it shows (phase and channel status, read back as signal states by `ntcip.StateBook`), its unit
  status and its detectors;
- `observe()`: the last poll as an `Observation`. Its `phase` and `time_in_phase` are what the
  controllers report, not the guard's (in the field the controller runs the sequences): the green
  showing, and since when: a controller's report at time T tells the state it showed over the second
  before T, so a green first reported at T began at T - 1 (after missed polls, the latest it can have
  begun; at the first poll, T: the controllers' history is unknown);
- `write(changes)`: takes the field guard's commands (a green to go to, as its state string); `step`
  sends them as phase control groups (`ntcip.command_groups`), every intersection's current command
  once a second (a refresh: a controller falls back to its local plan when its commands stop);
- `states()`: what the controllers showed at the last poll.

Loss of communication: a poll with no answer in time is a missed poll. After `missed_polls` in a row
an intersection is in comm loss (an event, `events`): its readings stay the last ones, it is sent no
command (so its controller runs its local plan once its backup time passes) and the guard asks nothing
new of it. The first answer after that is a comm restored event: the controller's command becomes
"keep what shows", and the guard takes what it shows as a fresh start (it did not see how it got there:
a green's clock starts again, unless the same green showed before and after at most
`CONTINUOUS_GAP_S` unseen seconds, too short to leave it and come back), so control resumes from the
controller's state without cutting a green it did not see begin.

Assumes the controllers' clocks agree (one clock is read) and that intersection `k` of the layout is
context `k` (checked once against each controller's id and its numbers of phases, channels and detectors).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import HOLD
from citysignal.errors import UserError
from citysignal.field import ntcip
from citysignal.field.client import FieldAddress, Manager
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition

DEFAULT_MISSED_POLLS = 3
CONTINUOUS_GAP_S = 5.0  # a green seen before and after at most this many unseen seconds showed all along
GIVE_UP_S = 120.0  # a run ends when no controller has answered for this long (wall clock)
CONNECT_WAIT_S = 30.0  # how long the controllers may take to answer first
EXTRA_NAMES = ("halting", "vehicles", "passed", "backlog", "speed")
FIELD_FIELDS = frozenset({*EXTRA_NAMES, "occupancy", "box"})  # lane fields a controller reports


@dataclass(frozen=True)
class CommEvent:
    time: float
    intersection: str
    kind: str  # "comm_loss" or "comm_restored"


class FieldBackend:
    """Street controllers behind one SNMP address, as a `Backend` of the control loop (module docstring)."""

    def __init__(
        self,
        layout: Layout,
        address: FieldAddress,
        end: float,
        fields: frozenset[str],
        *,
        missed_polls: int = DEFAULT_MISSED_POLLS,
        step_wait_s: float = 1.5,
    ) -> None:
        unknown = set(fields) - FIELD_FIELDS
        if unknown:
            raise UserError(f"field controllers do not report {sorted(unknown)}")
        self.layout = layout
        self.address = address
        self.end = end
        self.fields = fields
        self.missed_polls = missed_polls
        self.step_wait_s = step_wait_s
        n = layout.n_intersections
        self.books = [ntcip.StateBook(i) for i in layout.intersections]
        self.detectors = ntcip.DetectorMap.of(layout)
        self.n_phases = [len(i.greens) for i in layout.intersections]
        self.reported: list[str] = [i.program[0].state for i in layout.intersections]
        self.green = np.full(n, HOLD, dtype=np.int64)
        self.since = np.zeros(n)
        self.missed = np.zeros(n, dtype=np.int64)
        self.lost = np.zeros(n, dtype=bool)
        self.answered = np.zeros(n, dtype=bool)  # answered the last poll
        self.jumped = np.ones(n, dtype=bool)  # the last answer is not the second after the one before
        self.seen_at = np.full(n, -np.inf)  # the controller's clock at its last answer
        self.backup = np.zeros(n, dtype=bool)  # the controller reports running its local plan
        self.commanded = np.full(n, HOLD, dtype=np.int64)
        self.events: list[CommEvent] = []
        self.polls = self.missed_total = 0
        self.lanes = {name: np.zeros(len(layout.lanes)) for name in fields if name != "box"}
        self.box = np.zeros(len(layout.box_lanes))
        self._oids = [self._poll_oids(k) for k in range(n)]
        self._time = -np.inf
        self._answered_wall = time.monotonic()
        self.manager = Manager(address, n)
        try:
            self._connect()
            self._poll()
        except BaseException:
            self.manager.close()
            raise

    def close(self) -> None:
        self.manager.close()

    # connecting and polling ---------------------------------------------------------------
    def _connect(self) -> None:
        lay = self.layout
        oids = [ntcip.EXTRA_ID, ntcip.MAX_PHASES, ntcip.MAX_CHANNELS, ntcip.MAX_DETECTORS]
        answers: dict[int, list[Any]] = {}
        deadline = time.monotonic() + CONNECT_WAIT_S
        while time.monotonic() < deadline:  # a controller starting up, a lossy link: try again
            missing = [k for k in range(lay.n_intersections) if k not in answers]
            if not missing:
                break
            for k, values in self.manager.get(dict.fromkeys(missing, oids)).items():
                if values is not None:
                    answers[k] = values
        if len(answers) < lay.n_intersections:
            raise UserError(f"no field controller answers at {self.address} for intersection(s) "
                            f"{sorted(set(range(lay.n_intersections)) - set(answers))[:5]}")  # fmt: skip
        for k, (ident, phases, channels, detectors) in sorted(answers.items()):
            inter = lay.intersections[k]
            have = (bytes(ident).decode(errors="replace"), int(phases), int(channels), int(detectors))
            want = (inter.id, len(inter.greens), inter.n_signals, len(self.detectors.lanes[k]))
            if have != want:
                raise UserError(f"field controller {k} at {self.address} is {have[0]!r} with {have[1]} phases, "
                                f"{have[2]} channels, {have[3]} detectors; the network's is {want[0]!r} with "
                                f"{want[1]}, {want[2]}, {want[3]}")  # fmt: skip

    def _poll_oids(self, k: int) -> list[ntcip.OID]:
        groups = ntcip.groups(self.n_phases[k])
        channel_groups = ntcip.groups(self.layout.intersections[k].n_signals)
        oids = [ntcip.GLOBAL_TIME, ntcip.UNIT_CONTROL_STATUS]
        oids += [(*ntcip.PHASE_STATUS, ntcip.STATUS_GREENS, g) for g in range(1, groups + 1)]
        for column in (ntcip.STATUS_REDS, ntcip.STATUS_YELLOWS, ntcip.STATUS_GREENS):
            oids += [(*ntcip.CHANNEL_STATUS, column, g) for g in range(1, channel_groups + 1)]
        if "occupancy" in self.fields:
            n_det = len(self.detectors.lanes[k])
            oids += [(*ntcip.VOLUME_OCCUPANCY, ntcip.DETECTOR_OCCUPANCY, d) for d in range(1, n_det + 1)]
        oids += [ntcip.extra_oid(name) for name in EXTRA_NAMES if name in self.fields]
        if "box" in self.fields:
            oids.append(ntcip.extra_oid("box"))
        return oids

    def _poll(self) -> None:
        """One GET per intersection; updates the reports, the readings and the comm state."""
        n = self.layout.n_intersections
        answers = self.manager.get({k: self._oids[k] for k in range(n)})
        self.polls += 1
        clock = [int(v[0]) for v in answers.values() if v is not None]
        if clock:
            self._time = max(self._time, max(clock))
            self._answered_wall = time.monotonic()
        elif time.monotonic() - self._answered_wall > GIVE_UP_S:
            raise UserError(f"no field controller at {self.address} has answered for {GIVE_UP_S:g} s")
        now = self._time  # with no answer, the time stays the last one known
        for k, values in answers.items():
            self.answered[k] = values is not None
            if values is None:
                self.missed[k] += 1
                self.missed_total += 1
                if self.missed[k] >= self.missed_polls and not self.lost[k]:
                    self.lost[k] = True
                    self.events.append(CommEvent(now, self.layout.ids[k], "comm_loss"))
                continue
            self.missed[k] = 0
            if self.lost[k]:
                self.lost[k] = False
                self.events.append(CommEvent(now, self.layout.ids[k], "comm_restored"))
                self.commanded[k] = HOLD  # keep what shows until the guard asks for more
            self._read(k, values)

    def _read(self, k: int, values: list[Any]) -> None:
        it = iter(values)
        clock, previous = float(next(it)), float(self.seen_at[k])
        self.jumped[k] = clock - previous > 1.0  # seconds went by unseen (missed polls, a slow centre)
        first = previous == -np.inf
        self.seen_at[k] = clock
        self.backup[k] = int(next(it)) == ntcip.BACKUP_MODE
        if self.backup[k]:  # on its local plan: when commands reach it again, it keeps what shows
            self.commanded[k] = HOLD
        groups = ntcip.groups(self.n_phases[k])
        channel_groups = ntcip.groups(self.layout.intersections[k].n_signals)
        phase_greens = ntcip.unbits([int(next(it)) for _ in range(groups)], self.n_phases[k])
        colours = [[int(next(it)) for _ in range(channel_groups)] for _ in range(3)]
        shown = np.flatnonzero(phase_greens)
        green = int(shown[0]) if shown.size == 1 else HOLD
        self.reported[k] = self.books[k].state(colours[0], colours[1], colours[2], green)
        if green >= 0 and self.reported[k] != self.layout.intersections[k].greens[green]:
            green = HOLD  # the phase says green, the channels disagree: trust no green
        gone = self.jumped[k] and (green < 0 or clock - previous > CONTINUOUS_GAP_S)
        if green != self.green[k] or gone:
            self.green[k] = green
            # a report at T tells the second before T; the first report, what starts at T
            self.since[k] = clock - (not first)
        mine, box = self.detectors.lanes[k], self.detectors.box[k]
        if "occupancy" in self.fields:
            occupancy = np.array([_number(next(it)) for _ in mine])
            valid = occupancy <= ntcip.OCCUPANCY_STEPS  # 210 and up are the detector's fault codes
            self.lanes["occupancy"][mine] = np.where(valid, occupancy / ntcip.OCCUPANCY_STEPS, np.nan)
        for name in EXTRA_NAMES:
            if name in self.fields:
                self.lanes[name][mine] = _block(next(it), len(mine), ntcip.EXTRA_SCALE[name])
        if "box" in self.fields:
            self.box[box] = _block(next(it), len(box), 1.0)

    # the loop's backend ---------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self._time)

    @property
    def done(self) -> bool:
        return self._time >= self.end

    def program_position(self) -> ProgramPosition:
        """The greens showing as program positions (a transition: the program's first phase), just begun."""
        inters = self.layout.intersections
        phase = np.array([i.program_green_index.index(int(g)) if g >= 0 else 0
                          for i, g in zip(inters, self.green, strict=True)], dtype=np.int64)  # fmt: skip
        return ProgramPosition(phase, np.zeros(len(phase)))

    def observe(self, phase: NDArray[np.int64], time_in_phase: NDArray[np.float64]) -> Observation:
        """The last poll; `phase` and `time_in_phase` are the controllers' (see the module docstring)."""
        lanes = {name: v.copy() for name, v in self.lanes.items()}
        box = self.box.copy() if "box" in self.fields else None
        return Observation(time=self.time, phase=self.green.copy(), time_in_phase=self.time - self.since,
                           vehicles=lanes.get("vehicles"), halting=lanes.get("halting"),
                           occupancy=lanes.get("occupancy"), speed=lanes.get("speed"), passed=lanes.get("passed"),
                           box=box, backlog=lanes.get("backlog"))  # fmt: skip

    def states(self) -> list[str]:
        return list(self.reported)

    def write(self, changes: dict[int, str]) -> None:
        """Take the guard's commands; `step` sends them (with every other intersection's, a refresh)."""
        for k, state in changes.items():
            greens = self.layout.intersections[k].greens
            self.commanded[k] = greens.index(state) if state in greens else HOLD

    def _send_commands(self) -> None:
        """Every reachable intersection's command; one in comm loss gets none, so that it falls back to its
        local plan when its backup time passes instead of holding a command given before the loss."""
        writes = {}
        for k, target in enumerate(self.commanded):
            if self.lost[k]:
                continue
            control = ntcip.command_groups(int(target), self.n_phases[k])
            writes[k] = [((*ntcip.PHASE_CONTROL, c, g), v) for c, vals in control.items()
                         for g, v in enumerate(vals, start=1)]  # fmt: skip
        self.manager.set(writes)

    def step(self) -> None:
        """Send this second's commands, wait for the controllers' next second, then poll them."""
        self._send_commands()
        target = self._time + 1.0
        deadline = time.monotonic() + self.step_wait_s
        reachable = np.flatnonzero(~self.lost)
        while reachable.size and time.monotonic() < deadline:
            k = int(reachable[0])
            answer = self.manager.get({k: [ntcip.GLOBAL_TIME]})[k]
            if answer is None or int(answer[0]) >= target:
                break
            time.sleep(0.005)
        self._poll()


def _number(value: Any) -> float:
    """An INTEGER reading; NaN (unknown) when the controller has no such object."""
    try:
        return float(int(value))
    except (TypeError, ValueError):
        return float("nan")


def _block(value: Any, n: int, scale: float) -> NDArray[np.float64]:
    """A block object's readings; all unknown (NaN) when the controller has none of the right size (a
    controller without the extra objects: the guard then treats the readings as unknown)."""
    raw = bytes(value) if isinstance(value, bytes | bytearray) or hasattr(value, "asOctets") else b""
    return ntcip.unpack(raw, scale) if len(raw) == 4 * n else np.full(n, np.nan)
