"""Emergency-vehicle preemption and transit signal priority, carried out by the safety guard.

Priority vehicles call the signals they approach (`Observation.calls`: on the twin from vehicle
positions, in the field from a preemption input). Per intersection a call becomes a green to *hold*
(`SafetyGuard.apply(..., hold=...)`): it overrides the controller's request and the max-red
preemption, never a legal floor. The guard reaches that green by its shortest legal way (the running
green's min green, the transition's yellow and all-red, the clearance check) and keeps it while the
hold lasts; then the controller's requests count again.

- Preemption: the first emergency vehicle to call an intersection holds the green serving its signal
  until it has passed (its call ends), for at most `PREEMPT_MAX_S`: a vehicle that does not get through
  in that time is stuck behind something a green cannot clear (a queue into a full street), and
  holding on starves the rest of the junction into gridlock (measured on cologne8 under max-pressure:
  general traffic 27 -> 112 s/vehicle with an unbounded hold). A second one waits its turn (first come,
  first served); one that the held green also serves passes with it.
- Transit priority: a bus that has lost more than `BUS_LATE_S` to traffic (the added buses carry no
  timetable, so a bus is behind schedule by any time it lost) gets the green serving it early, or
  kept, for at most `BUS_HOLD_S` once that green shows, and an intersection grants this at most once
  per `BUS_EVERY_S`. A grant whose green does not show within `BUS_WAIT_S` lapses. (Measured on
  cologne8, 30 buses/h: with a 20 s lateness threshold few buses qualified and bus delay did not
  move; the cap and the rate limit bound what general traffic pays.)

Assumes a call names the signal (link index) the vehicle will cross; a signal that no green serves
(see `Intersection.serve_signals`) cannot be given priority and its call is ignored. Where a green
serves several priority calls, the held one also serves the others; nothing tries to combine greens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import HOLD
from citysignal.network.layout import Layout
from citysignal.twin.observation import PriorityCall

REACH_M = 300.0  # an emergency vehicle calls this far from the stop line (GPS/optical preemption range)
BUS_REACH_M = 150.0  # a bus calls from here (a transit-priority detector's setback)
PREEMPT_MAX_S = 60.0
BUS_LATE_S = 0.0
BUS_HOLD_S = 15.0
BUS_EVERY_S = 60.0
BUS_WAIT_S = 30.0


@dataclass
class _Grant:
    vehicle: str
    green: int
    start: float
    shown_at: float | None = None


class Priority:
    """Turns priority calls into greens for the guard to hold; `enabled=False` only watches (the
    `--no-priority` baseline: the same vehicles, no preemption or priority)."""

    def __init__(self, layout: Layout, enabled: bool = True) -> None:
        self.layout = layout
        self.enabled = enabled
        n = layout.n_intersections
        self._first_call: dict[str, float] = {}  # emergency vehicle -> when it first called
        self._emergency: dict[int, tuple[str, float]] = {}  # intersection -> vehicle it serves, since when
        self._expired: set[tuple[int, str]] = set()  # (intersection, vehicle) holds that ran out
        self._bus: dict[int, _Grant] = {}
        self._last_grant = np.full(n, -np.inf)
        self._held = np.full(n, HOLD, dtype=np.int64)  # the last `hold`
        self.counts = {"preemptions": 0, "bus_grants": 0}

    def hold(self, now: float, calls: tuple[PriorityCall, ...], green: NDArray[np.int64]) -> NDArray[np.int64]:
        """Per intersection, the green the guard must reach and keep now, or HOLD (no priority)."""
        hold = np.full(self.layout.n_intersections, HOLD, dtype=np.int64)
        emergency = [c for c in calls if c.kind == "emergency"]
        calling = {c.vehicle for c in emergency}
        self._first_call = {v: t for v, t in self._first_call.items() if v in calling}
        for c in emergency:
            self._first_call.setdefault(c.vehicle, now)
        if not self.enabled:
            return hold
        self._expired = {(k, v) for k, v in self._expired if v in calling}
        by_int: dict[int, PriorityCall] = {}
        for c in sorted(emergency, key=lambda c: (self._first_call[c.vehicle], c.distance)):
            if (c.intersection, c.vehicle) not in self._expired:
                by_int.setdefault(c.intersection, c)
        for k, c in by_int.items():
            g = self._serving(k, c.signal, int(green[k]))
            if g == HOLD:
                continue
            vehicle, since = self._emergency.get(k, ("", now))
            if vehicle != c.vehicle:
                self.counts["preemptions"] += 1
                self._emergency[k] = (c.vehicle, now)
            elif now - since > PREEMPT_MAX_S:
                self._expired.add((k, c.vehicle))
                continue
            hold[k] = g
        self._emergency = {k: v for k, v in self._emergency.items() if k in by_int and hold[k] != HOLD}
        self._transit(now, calls, green, hold)
        self._held = hold.copy()
        return hold

    def _transit(
        self, now: float, calls: tuple[PriorityCall, ...], green: NDArray[np.int64], hold: NDArray[np.int64]
    ) -> None:
        late = {
            (c.intersection, c.vehicle): c
            for c in calls
            if c.kind == "bus" and c.time_lost > BUS_LATE_S and c.distance <= BUS_REACH_M
        }
        for k, grant in list(self._bus.items()):
            if grant.shown_at is None and green[k] == grant.green:
                grant.shown_at = now
            lapsed = (now - grant.start > BUS_WAIT_S) if grant.shown_at is None else (now - grant.shown_at > BUS_HOLD_S)
            if (k, grant.vehicle) not in late or lapsed or hold[k] != HOLD:
                del self._bus[k]
        for (k, vehicle), c in sorted(late.items(), key=lambda item: item[1].distance):
            if k in self._bus or hold[k] != HOLD or now - self._last_grant[k] < BUS_EVERY_S:
                continue
            g = self._serving(k, c.signal, int(green[k]))
            if g != HOLD:
                self._bus[k] = _Grant(vehicle, g, now, now if green[k] == g else None)
                self._last_grant[k] = now
                self.counts["bus_grants"] += 1
        for k, grant in self._bus.items():
            hold[k] = grant.green

    def _serving(self, k: int, signal: int, running: int) -> int:
        """The running green if it serves `signal`, else the first green that does, else HOLD."""
        serves = self.layout.intersections[k].serve_signals
        if not 0 <= signal < serves.shape[1]:
            return HOLD
        if 0 <= running < len(serves) and serves[running, signal]:
            return running
        options = np.flatnonzero(serves[:, signal])
        return int(options[0]) if options.size else HOLD

    def active(self) -> list[dict[str, Any]]:
        """The preemptions and bus priority grants in force, for the dashboard and the audit log: the
        intersection (id), kind ("emergency" or "bus"), vehicle, the green held and since when (s)."""
        ids, held = self.layout.ids, self._held
        rows: list[dict[str, Any]] = [
            {"intersection": ids[k], "kind": "emergency", "vehicle": v, "green": int(held[k]), "since": since}
            for k, (v, since) in sorted(self._emergency.items())
        ]
        rows += [{"intersection": ids[k], "kind": "bus", "vehicle": g.vehicle, "green": g.green, "since": g.start}
                 for k, g in sorted(self._bus.items())]  # fmt: skip
        return rows
