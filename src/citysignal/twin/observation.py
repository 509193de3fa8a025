"""What a controller sees: NumPy arrays for the whole city, indexed by the `Layout`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

JAM_SPACING_M = 7.5  # metres per queued vehicle: a 5 m car (SUMO default) and its 2.5 m minimum gap
BACKLOG_OFF_MAP_CAP = 2.0  # vehicles per lane
LANE_FIELDS = frozenset({"vehicles", "halting", "occupancy", "speed", "passed", "box", "backlog"})


@dataclass(frozen=True)
class PriorityCall:
    """A priority vehicle approaching a signal: which intersection (layout index) and signal (link
    index) it will cross, what it is ("emergency" or "bus"), how far from the stop line it is (m), and
    the time it has lost to traffic so far (s)."""

    intersection: int
    signal: int
    kind: str
    vehicle: str
    distance: float
    time_lost: float


@dataclass(frozen=True)
class Observation:
    """One instant of the city. Lane arrays are absent (None) when no consumer asked for them.

    - vehicles, halting: counts per lane; occupancy: the fraction of the lane occupied by vehicles,
      in [0, 1] (libsumo's `lane.getLastStepOccupancy`); speed: mean m/s (the lane's limit when
      empty); passed: vehicles that crossed the stop line since the start (cumulative, from a
      detector at the end of each incoming lane);
    - backlog: the queue that continues upstream beyond the lane's start, spread evenly over its edge's
      lanes: vehicles halting on the edge's feeders (`Network.feeders`: the edges leading only to it)
      plus those due to depart on the edge or a feeder that SUMO could not insert yet (the queue
      off the map), the latter at most `BACKLOG_OFF_MAP_CAP` per lane: a detector at the city's edge
      sees that the queue reaches past it, not how far (counted in full, endless entry queues pull
      every green to the city's edge: Advanced-MP on arterial4x4 1371 s, capped 850 s);
    - box: vehicles *inside* junctions that have not cleared them, per `Layout.box_lanes` (each
      movement's first internal lane): standing or crawling (a lane's mean speed below the twin's
      `BOX_CLEAR_SPEED_MS`), e.g. left-turners waiting for a gap or just setting off through it;
    - calls: priority vehicles (emergency vehicles, buses) approaching a signal within reach (in the
      field: a preemption or transit-priority input), nearest first per intersection;
    - phase: current green per intersection (-1 while in a transition);
    - time_in_phase: seconds since that green (or transition) began.
    """

    time: float
    phase: NDArray[np.int64]
    time_in_phase: NDArray[np.float64]
    vehicles: NDArray[np.float64] | None = None
    halting: NDArray[np.float64] | None = None
    occupancy: NDArray[np.float64] | None = None
    speed: NDArray[np.float64] | None = None
    passed: NDArray[np.float64] | None = None
    box: NDArray[np.float64] | None = None
    backlog: NDArray[np.float64] | None = None
    calls: tuple[PriorityCall, ...] = ()

    def lane(self, name: str) -> NDArray[np.float64]:
        value = getattr(self, name)
        if value is None:
            raise KeyError(f"observation field '{name}' was not gathered; declare it in `requires`")
        return np.asarray(value)

    def waiting(self) -> NDArray[np.float64]:
        """Per lane, the vehicles waiting for its signal, as the guard's max-red rule counts them: those
        halting on it and its `backlog` (the queue behind a stub approach, vehicles waiting to enter)."""
        halting = self.lane("halting")
        return halting if self.backlog is None else halting + self.backlog


@dataclass(frozen=True)
class ProgramPosition:
    """Where each intersection's own program stands when a session starts (phase index, seconds in)."""

    phase: NDArray[np.int64]
    elapsed: NDArray[np.float64]
