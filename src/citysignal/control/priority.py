"""Emergency-vehicle preemption and transit signal priority, carried out by the safety guard.

Priority vehicles call the signals they approach (`Observation.calls`: on the twin from vehicle
positions, in the field from a preemption input). Per intersection a call becomes a green to *hold*
(`SafetyGuard.apply(..., hold=...)`): it overrides the controller's request and the max-red
preemption, never a legal floor. The guard reaches that green by its shortest legal way (the running
green's min green, the transition's yellow and all-red, the clearance check) and keeps it while the
hold lasts; then the controller's requests count again.

- Preemption: the first emergency vehicle to call an intersection holds a green for it until it has
  passed (its call ends). Which green (`_preempt`): with no queue ahead of it, the one serving its
  signal; with vehicles halting ahead of it on its lane, one that shows every signal leaving that lane
  (on a shared lane the queue's head may go another way than the emergency vehicle: holding only the
  vehicle's own signal left it behind a head waiting at red, 4-8 s per vehicle on cologne8 and a 60 s
  hold that ran out); and when the held green has shown for `STALL_S` while the vehicle stood, the
  green serving most of the lane's signals the held one does not serve (the head waits at red, or as a
  permissive left turn for a gap in the opposing flow the lane-wide green lets go). A vehicle calls every
  signal along its route within reach; one further along is readied only while the vehicle's nearest
  signal shows it green (not while it waits at the one before). A preemption ends when its vehicle has
  not advanced for `PREEMPT_STUCK_S`, or after `PREEMPT_MAX_S`: a vehicle that does not get through is
  stuck behind something a green cannot clear (a queue into a full street), and holding on starves the
  rest of the junction into gridlock (measured on cologne8 under max-pressure: general traffic 27 ->
  112 s/vehicle with an unbounded hold); a vehicle that advances through a slow queue keeps its green
  (a fixed 60 s cap ended such holds 100 m before the stop line). A second one waits its turn (first
  come, first served, per intersection); one that the held green also serves passes with it.
- Transit priority: a bus that has lost more than `BUS_LATE_S` to traffic (the added buses carry no
  timetable, so a bus is behind schedule by any time it lost) gets the green serving it early, or
  kept, for at most `BUS_HOLD_S` once that green shows, and an intersection grants this at most once
  per `BUS_EVERY_S`; with a queue ahead of the bus, the green that empties its lane (as for an emergency
  vehicle: on cologne8 under the AI, bus delay with priority 35 -> 18 s/bus over seeds 23426-23428, 32 s
  without). A grant whose green does not show within `BUS_WAIT_S` lapses. (Measured on
  cologne8, 30 buses/h: with a 20 s lateness threshold few buses qualified and bus delay did not
  move; the cap and the rate limit bound what general traffic pays.)

Assumes a call names the signal (link index) the vehicle will cross and its distance along the route
(nearer means advancing); a signal that no green serves (see `Intersection.serve_signals`) cannot be
given priority and its call is ignored. Where a green serves several priority calls, the held one also
serves the others; nothing tries to combine greens. The queue ahead is judged from the halting count of
the vehicle's last lane before the stop line (at most its distance / `JAM_SPACING_M` vehicles): a queue
that reaches back beyond that lane is not seen until the vehicle is on it. What preemption cannot cut
(measured on cologne8, where 8 signals stand in a larger net): time lost at unsignalized junctions
(yielding, merging), behind slower cars and after the last signal: 7-10 s of the 10-15 s an emergency
vehicle still loses with preemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import HOLD
from citysignal.network.layout import Layout
from citysignal.twin.observation import JAM_SPACING_M, PriorityCall

REACH_M = 300.0  # an emergency vehicle calls this far from the stop line (GPS/optical preemption range)
BUS_REACH_M = 150.0  # a bus calls from here (a transit-priority detector's setback)
PREEMPT_STUCK_S = 30.0  # a preemption whose vehicle has not advanced for this long ends
PREEMPT_MAX_S = 120.0  # and any preemption after this long
STALL_S = 6.0  # a held green that shows this long while the emergency vehicle stands is swapped (`_preempt`)
ADVANCE_M = 1.0  # an emergency vehicle that came this much nearer is moving
BUS_LATE_S = 0.0
BUS_HOLD_S = 15.0
BUS_EVERY_S = 60.0
BUS_WAIT_S = 30.0


@dataclass
class _Preemption:
    vehicle: str
    since: float
    distance: float  # where the vehicle was when it last advanced
    moved_at: float  # when it last advanced
    queue_at: float | None = None  # when a queue last stood ahead of it
    unblock: int | None = None  # the green a stalled queue ahead was given (see `_preempt`)
    shown_at: float | None = None  # since when the held green shows


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
        # (intersection, signal) -> its incoming lane, and the signals leaving that lane (a shared lane)
        self._lane: dict[tuple[int, int], int] = {}
        by_lane: dict[int, set[int]] = {}
        for k, s, lane in zip(layout.mov_int.tolist(), layout.mov_signal.tolist(), layout.mov_in.tolist(), strict=True):
            self._lane.setdefault((k, s), lane)
            by_lane.setdefault(lane, set()).add(s)
        self._lane_signals = {lane: np.array(sorted(sig), dtype=np.int64) for lane, sig in by_lane.items()}
        self._first_call: dict[tuple[int, str], float] = {}  # (intersection, emergency vehicle) -> first call
        self._emergency: dict[int, _Preemption] = {}  # intersection -> the preemption in force
        self._expired: set[tuple[int, str]] = set()  # (intersection, vehicle) holds that ran out
        self._bus: dict[int, _Grant] = {}
        self._last_grant = np.full(n, -np.inf)
        self._held = np.full(n, HOLD, dtype=np.int64)  # the last `hold`
        self.counts = {"preemptions": 0, "bus_grants": 0}

    def hold(
        self, now: float, calls: tuple[PriorityCall, ...], green: NDArray[np.int64],
        halting: NDArray[np.float64] | None = None,
    ) -> NDArray[np.int64]:  # fmt: skip
        """Per intersection, the green the guard must reach and keep now, or HOLD (no priority). `halting`
        (vehicles halting per layout lane) tells whether a queue stands ahead of an emergency vehicle."""
        hold = np.full(self.layout.n_intersections, HOLD, dtype=np.int64)
        emergency = [c for c in calls if c.kind == "emergency"]
        calling = {(c.intersection, c.vehicle) for c in emergency}
        self._first_call = {kv: t for kv, t in self._first_call.items() if kv in calling}
        for kv in calling:
            self._first_call.setdefault(kv, now)
        if not self.enabled:
            return hold
        self._expired &= calling
        by_int: dict[int, PriorityCall] = {}
        for c in sorted(emergency, key=lambda c: (self._first_call[(c.intersection, c.vehicle)], c.distance)):
            if (c.intersection, c.vehicle) not in self._expired and self._on_its_way(c, emergency, green):
                by_int.setdefault(c.intersection, c)
        for k, c in by_int.items():
            p = self._emergency.get(k)
            if p is None or p.vehicle != c.vehicle:
                p = self._emergency[k] = _Preemption(c.vehicle, now, c.distance, now)
                self.counts["preemptions"] += 1
            if c.distance <= p.distance - ADVANCE_M:
                p.distance, p.moved_at = c.distance, now
            if now - p.moved_at > PREEMPT_STUCK_S or now - p.since > PREEMPT_MAX_S:
                self._expired.add((k, c.vehicle))
                continue
            hold[k] = self._preempt(k, c, p, now, int(green[k]), halting)
        self._emergency = {k: p for k, p in self._emergency.items() if k in by_int and hold[k] != HOLD}
        self._transit(now, calls, green, hold, halting)
        self._held = hold.copy()
        return hold

    def _transit(
        self, now: float, calls: tuple[PriorityCall, ...], green: NDArray[np.int64], hold: NDArray[np.int64],
        halting: NDArray[np.float64] | None,
    ) -> None:  # fmt: skip
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
            running = int(green[k])
            g = self._flushing(k, c.signal, running) if self._queue_ahead(k, c, halting) else HOLD
            if g == HOLD:
                g = self._serving(k, c.signal, running)
            if g != HOLD:
                self._bus[k] = _Grant(vehicle, g, now, now if green[k] == g else None)
                self._last_grant[k] = now
                self.counts["bus_grants"] += 1
        for k, grant in self._bus.items():
            hold[k] = grant.green

    def _queue_ahead(self, k: int, c: PriorityCall, halting: NDArray[np.float64] | None) -> bool:
        """Vehicles halt ahead of `c` on its lane: at least one of the lane's halting vehicles, and room for one
        between `c` and the stop line (a NaN count, a faulty detector: no queue known)."""
        lane = self._lane.get((k, c.signal))
        if halting is None or lane is None:
            return False
        return bool(min(float(halting[lane]), c.distance // JAM_SPACING_M) >= 1)

    def _on_its_way(self, c: PriorityCall, emergency: list[PriorityCall], green: NDArray[np.int64]) -> bool:
        """Whether `c` may preempt now: it is its vehicle's nearest signal, or that nearest signal shows it
        green (a signal further along the route is readied while the vehicle can reach it, not while it
        waits at the one before)."""
        nearest = min((e for e in emergency if e.vehicle == c.vehicle), key=lambda e: e.distance)
        if nearest is c:
            return True
        g = int(green[nearest.intersection])
        return g >= 0 and bool(self.layout.intersections[nearest.intersection].green_signals[g, nearest.signal])

    def _preempt(
        self, k: int, c: PriorityCall, p: _Preemption, now: float, running: int, halting: NDArray[np.float64] | None
    ) -> int:
        """The green to hold for emergency vehicle `c` at `k`. With no queue ahead of it, the one serving its
        signal. With a queue ahead, one that shows every signal leaving its lane (a shared lane's queue
        leaves whichever way its head goes); when the held green has shown for `STALL_S` while the vehicle
        stood, the queue's head waits for a signal that green does not serve (a red one, or a permissive
        left turn that finds no gap in the opposing flow the same green lets go), so the green serving most
        of the lane's signals it does not serve takes over, until the queue stalls again or is gone."""
        lane = self._lane.get((k, c.signal))
        if self._queue_ahead(k, c, halting):
            p.queue_at = now
        queue = p.queue_at is not None and now - p.queue_at < STALL_S  # a queue that flickers counts as one
        serve, flush = self._serving(k, c.signal, running), self._flushing(k, c.signal, running)
        if not queue:
            p.unblock = None
            g = serve if serve != HOLD else flush
        else:
            g = p.unblock if p.unblock is not None else flush if flush != HOLD else serve
        if g == HOLD or running != g:
            p.shown_at = None
            return g
        if p.shown_at is None:
            p.shown_at = now
        if queue and lane is not None and now - max(p.shown_at, p.moved_at) >= STALL_S:
            other = self._unblocking(k, lane, g)
            if other != HOLD:
                p.unblock, p.shown_at = other, None
                return other
        return g

    def _unblocking(self, k: int, lane: int, g: int) -> int:
        """The green serving most of the signals leaving `lane` that green `g` does not serve, HOLD if none."""
        serves = self.layout.intersections[k].serve_signals[:, self._lane_signals[lane]]
        score = serves[:, ~serves[g]].sum(axis=1)
        score[g] = 0
        best = int(np.argmax(score))
        return best if score[best] > 0 else HOLD

    def _flushing(self, k: int, signal: int, running: int) -> int:
        """A green that shows every signal leaving the lane of `signal` (a shared lane's queue can leave
        whatever its head's way): the running one if it does, else one that also serves `signal`, else the
        first; HOLD when no green shows the whole lane."""
        lane = self._lane.get((k, signal))
        if lane is None:
            return HOLD
        inter = self.layout.intersections[k]
        shows = np.all(inter.green_signals[:, self._lane_signals[lane]], axis=1)
        if not shows.any():
            return HOLD
        if 0 <= running < len(shows) and shows[running]:
            return running
        best = np.flatnonzero(shows & inter.serve_signals[:, signal])
        return int(best[0]) if best.size else int(np.flatnonzero(shows)[0])

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
            {"intersection": ids[k], "kind": "emergency", "vehicle": p.vehicle, "green": int(held[k]), "since": p.since}
            for k, p in sorted(self._emergency.items())
        ]
        rows += [{"intersection": ids[k], "kind": "bus", "vehicle": g.vehicle, "green": g.green, "since": g.start}
                 for k, g in sorted(self._bus.items())]  # fmt: skip
        return rows
