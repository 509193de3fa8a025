"""The NTCIP 1202 objects a central system uses, and how a network's intersections map onto them.

Both sides of the field link use this module: the simulated controller (`field.sim`) publishes these
objects, the field backend (`field.backend`) reads and writes them. One SNMP context per intersection
(layout index `k`, context name `str(k)`; with SNMP v1/v2c the community `COMMUNITY@k` selects it).

The mapping, and what it assumes:
- phases: NTCIP phase `g + 1` is the intersection's green `g` (`Intersection.greens`), one ring, the
  greens in any order the commands ask for. A green is a whole signal state, so two NTCIP phases never
  time together; overlaps are not used. A transition (yellow, all-red) shows its green leaving as the
  phase in yellow (its yellow time) and every phase red (its red clearance);
- channels: NTCIP channel `i + 1` is signal `i` (SUMO link index `i`) of the intersection; channel
  status groups report red, yellow or green per channel. NTCIP cannot tell a protected green from a
  permissive one (SUMO `G` / `g`), so `StateBook` reads a reported pattern back as the one state of the
  model with that pattern (greens and transitions); a pattern the model never shows is read with every
  green major, the strictest reading;
- commands: the phase control groups (hold, force-off, omit, vehicle call). Asking for green `g` is
  hold `g`, call `g`, omit and force off every other phase (`command_groups`); the controller then ends
  the running green no earlier than its own minimum and runs its own clearance to `g`;
- detectors: NTCIP vehicle detector `d + 1` of an intersection is its `d`-th lane in `DetectorMap`:
  its incoming lanes and the lanes leaving the network from it. `detectorVolume` / `detectorOccupancy`
  carry the standard counts (volume per period, occupancy in 0.5 % steps); what NTCIP has no object for
  (queues, vehicles present, mean speed, a cumulative stop-line count, the queue beyond the lane, the
  vehicles waiting inside the junction) comes in `EXTRA` objects, one OCTET STRING per quantity with a
  32-bit value per detector ("block" objects, as NTCIP's own ascBlock), under an unregistered
  manufacturer-specific arc (`nema.private` 1206.3). A real controller with video or radar detection
  offers the same through its vendor's objects;
- unit: `unitControlStatus` is systemControl (2) while central commands arrive, backupMode (4) while
  the controller runs its local plan; `unitBackupTime` is the command timeout (s);
- time: NTCIP 1201 `globalTime` carries the controller's clock in whole seconds (the scenario's time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from citysignal.network import signals
from citysignal.network.layout import Layout
from citysignal.network.model import Intersection

OID = tuple[int, ...]

ASC: OID = (1, 3, 6, 1, 4, 1, 1206, 4, 2, 1)  # NTCIP 1202 actuated signal controller
MAX_PHASES: OID = (*ASC, 1, 1, 0)
MAX_PHASE_GROUPS: OID = (*ASC, 1, 3, 0)
PHASE_STATUS: OID = (*ASC, 1, 4, 1)  # phaseStatusGroupEntry: .2 reds, .3 yellows, .4 greens; index: group
PHASE_CONTROL: OID = (*ASC, 1, 5, 1)  # phaseControlGroupEntry; index: group
STATUS_REDS, STATUS_YELLOWS, STATUS_GREENS = 2, 3, 4
CONTROL_OMIT, CONTROL_HOLD, CONTROL_FORCE_OFF, CONTROL_CALL = 2, 4, 5, 6  # veh omit, hold, force-off, veh call
CONTROL_COLUMNS = (CONTROL_OMIT, CONTROL_HOLD, CONTROL_FORCE_OFF, CONTROL_CALL)
MAX_DETECTORS: OID = (*ASC, 2, 1, 0)
VOLUME_SEQUENCE: OID = (*ASC, 2, 5, 1, 0)
VOLUME_PERIOD: OID = (*ASC, 2, 5, 2, 0)
ACTIVE_DETECTORS: OID = (*ASC, 2, 5, 3, 0)
VOLUME_OCCUPANCY: OID = (*ASC, 2, 5, 4, 1)  # volumeOccupancyEntry: .1 volume, .2 occupancy; index: detector
DETECTOR_VOLUME, DETECTOR_OCCUPANCY = 1, 2
UNIT_BACKUP_TIME: OID = (*ASC, 3, 3, 0)
UNIT_CONTROL_STATUS: OID = (*ASC, 3, 5, 0)
UNIT_FLASH_STATUS: OID = (*ASC, 3, 6, 0)
UNIT_ALARM_STATUS_2: OID = (*ASC, 3, 7, 0)
UNIT_ALARM_STATUS_1: OID = (*ASC, 3, 8, 0)
SHORT_ALARM_STATUS: OID = (*ASC, 3, 9, 0)
MAX_CHANNELS: OID = (*ASC, 8, 1, 0)
MAX_CHANNEL_GROUPS: OID = (*ASC, 8, 3, 0)
CHANNEL_STATUS: OID = (*ASC, 8, 4, 1)  # channelStatusGroupEntry: .2 reds, .3 yellows, .4 greens; index: group
GLOBAL_TIME: OID = (1, 3, 6, 1, 4, 1, 1206, 4, 2, 6, 3, 1, 0)  # NTCIP 1201 globalTime

SYSTEM_CONTROL, BACKUP_MODE = 2, 4  # unitControlStatus values
FLASH_NONE = 2  # unitFlashStatus: notFlash
OCCUPANCY_STEPS = 200  # detectorOccupancy 0..200: 0.5 % steps

EXTRA: OID = (1, 3, 6, 1, 4, 1, 1206, 3, 99, 1)  # unregistered manufacturer-specific arc (see the docstring)
EXTRA_ID: OID = (*EXTRA, 1, 0)  # the intersection's id in the network (OCTET STRING)
EXTRA_FIELDS = {"halting": 2, "vehicles": 3, "passed": 4, "backlog": 5, "speed": 6, "box": 7}
EXTRA_SCALE = {"halting": 1.0, "vehicles": 1.0, "passed": 1.0, "backlog": 100.0, "speed": 100.0, "box": 1.0}
MISSING = 0xFFFFFFFF  # a block value nobody measured


def extra_oid(name: str) -> OID:
    return (*EXTRA, EXTRA_FIELDS[name], 0)


def groups(n: int) -> int:
    """Groups of 8 (phases, channels) that hold `n` items."""
    return max(1, (n + 7) // 8)


def bits(mask: NDArray[np.bool_]) -> list[int]:
    """One 8-bit value per group of 8 (bit b of group j: item 8 j + b)."""
    padded = np.zeros(groups(len(mask)) * 8, dtype=np.int64)
    padded[: len(mask)] = mask
    return [int(v) for v in (padded.reshape(-1, 8) << np.arange(8)).sum(axis=1)]


def unbits(values: list[int], n: int) -> NDArray[np.bool_]:
    out = np.array([(v >> b) & 1 for v in values for b in range(8)], dtype=bool)
    return out[:n]


def pack(values: NDArray[np.float64], scale: float) -> bytes:
    """A block object: big-endian 32-bit values, NaN as `MISSING`."""
    scaled = np.where(np.isnan(values), MISSING, np.clip(np.rint(values * scale), 0, MISSING - 1))
    return scaled.astype(">u4").tobytes()


def unpack(block: bytes, scale: float) -> NDArray[np.float64]:
    raw = np.frombuffer(block, dtype=">u4").astype(np.float64)
    return np.where(raw == MISSING, np.nan, raw / scale)


def channel_groups(state: str) -> tuple[list[int], list[int], list[int]]:
    """Channel status groups (reds, yellows, greens) of a signal state."""
    green = signals.green_mask(state)
    yellow = signals.yellow_mask(state)
    return bits(~green & ~yellow), bits(yellow), bits(green)


def command_groups(target: int, n_phases: int) -> dict[int, list[int]]:
    """Phase control groups that ask for green `target` (HOLD: no command, the controller keeps what runs)."""
    mine = np.zeros(n_phases, dtype=bool)
    if target >= 0:
        mine[target] = True
    others = ~mine if target >= 0 else np.zeros(n_phases, dtype=bool)
    return {CONTROL_HOLD: bits(mine), CONTROL_CALL: bits(mine), CONTROL_OMIT: bits(others),
            CONTROL_FORCE_OFF: bits(others)}  # fmt: skip


def requested_phase(control: dict[int, list[int]], n_phases: int, green: int) -> int:
    """What phase control groups ask of a controller showing `green` (-1: in a transition): the held,
    called, not omitted phase; else, when the running green is forced off, the next called and not
    omitted phase after it; else -1 (keep what runs)."""
    hold = unbits(control[CONTROL_HOLD], n_phases)
    call = unbits(control[CONTROL_CALL], n_phases)
    omit = unbits(control[CONTROL_OMIT], n_phases)
    force = unbits(control[CONTROL_FORCE_OFF], n_phases)
    wanted = np.flatnonzero(hold & call & ~omit)
    if wanted.size:
        return int(wanted[0])
    if green >= 0 and force[green]:
        order = (green + 1 + np.arange(n_phases)) % n_phases
        callable_ = order[(call & ~omit)[order]]
        if callable_.size:
            return int(callable_[0])
    return -1


class StateBook:
    """Reads a controller's reported channel colours back as the model's signal state (module docstring)."""

    def __init__(self, inter: Intersection) -> None:
        self.inter = inter

    @cached_property
    def _by_pattern(self) -> dict[str, str]:
        inter = self.inter
        states = list(inter.greens) + [p.state for p in inter.program]
        states += [s for a in range(len(inter.greens)) for b in range(len(inter.greens)) if a != b
                   for s, _ in inter.transition(a, b)]  # fmt: skip
        book: dict[str, str] = {}
        for state in states:  # the first state with a pattern wins: greens before transitions
            book.setdefault(pattern(state), state)
        return book

    def state(self, reds: list[int], yellows: list[int], greens: list[int], phase: int) -> str:
        n = self.inter.n_signals
        green, yellow = unbits(greens, n), unbits(yellows, n)
        seen = "".join("G" if g else "y" if y else "r" for g, y in zip(green, yellow, strict=True))
        if 0 <= phase < len(self.inter.greens) and pattern(self.inter.greens[phase]) == seen:
            return self.inter.greens[phase]
        return self._by_pattern.get(seen, seen)


def pattern(state: str) -> str:
    """A state as NTCIP channels see it: G (any green), y (any yellow) or r."""
    return "".join("G" if c in signals.GREEN_CHARS else "y" if c in signals.YELLOW_CHARS else "r" for c in state)


@dataclass(frozen=True)
class DetectorMap:
    """Which controller measures which layout lane: its detectors, in order, and its junction's box lanes."""

    lanes: tuple[NDArray[np.int64], ...]  # per intersection: layout lane indices, detector d + 1 = lanes[k][d]
    box: tuple[NDArray[np.int64], ...]  # per intersection: indices into `Layout.box_lanes`

    @classmethod
    def of(cls, layout: Layout) -> DetectorMap:
        n = layout.n_intersections
        owner = np.full(len(layout.lanes), -1, dtype=np.int64)
        owner[layout.mov_in] = layout.mov_int  # a lane enters one junction
        leaving = owner[layout.mov_out] < 0
        owner[layout.mov_out[leaving]] = layout.mov_int[leaving]  # lanes leaving the network: the junction before
        box_owner = np.full(len(layout.box_lanes), -1, dtype=np.int64)
        has_box = layout.mov_box >= 0
        box_owner[layout.mov_box[has_box]] = layout.mov_int[has_box]
        return cls(
            tuple(np.flatnonzero(owner == k) for k in range(n)),
            tuple(np.flatnonzero(box_owner == k) for k in range(n)),
        )
