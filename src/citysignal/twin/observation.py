"""What a controller sees: NumPy arrays for the whole city, indexed by the `Layout`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

JAM_SPACING_M = 7.5  # metres per queued vehicle: a 5 m car (SUMO default) and its 2.5 m minimum gap
BACKLOG_OFF_MAP_CAP = 2.0  # vehicles per lane
LANE_FIELDS = frozenset({"vehicles", "halting", "occupancy", "speed", "passed", "box", "backlog"})

LaneRows = Callable[[NDArray[np.int64]], NDArray[np.float64]]  # rows of one lane field -> their values now


class Deferred:
    """Lane fields a backend reads only when asked, at the instant of one observation: some rows
    (`rows`) or all of them (`full`), each row read once. At city scale most of a field is never needed at
    a step (the junction boxes only where a change is about to end, the stop-line counts only where a
    green shows, the AI's inputs only where an intersection decides): reading a lane through libsumo
    costs about a microsecond, and a 2,500-signal city has 20,000 lanes and 40,000 box lanes.
    `read(name, rows)` reads rows (None: all) of a field; `valid()` says whether the instant still holds
    (the backend has not stepped since); `sizes` gives each field's row count."""

    def __init__(
        self,
        sizes: dict[str, int],
        read: Callable[[str, NDArray[np.int64] | None], NDArray[np.float64]],
        valid: Callable[[], bool],
    ) -> None:
        self.names = frozenset(sizes)
        self._sizes = sizes
        self._read = read
        self._valid = valid
        self._seen: dict[str, tuple[NDArray[np.float64], NDArray[np.bool_]]] = {}  # values, read yet
        self._full: set[str] = set()

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise KeyError(f"observation field '{name}' was not gathered; declare it in `requires`")
        if not self._valid():
            raise RuntimeError(f"observation field '{name}' read after the backend stepped past its instant")

    @property
    def full_names(self) -> frozenset[str]:
        """The fields read in full so far."""
        return frozenset(self._full)

    def _memo(self, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        if name not in self._seen:
            n = self._sizes[name]
            self._seen[name] = np.full(n, np.nan), np.zeros(n, dtype=bool)
        return self._seen[name]

    def rows(self, name: str, rows: NDArray[np.int64]) -> NDArray[np.float64]:
        """The field at these rows (repeats allowed), each row read once, where not read yet."""
        values, known = self._memo(name)
        # each row once, in order: a mask over the field, not `np.unique` (numpy 2's hashing unique took
        # 0.7 ms for 2,000 of 20,400 rows, the mask 0.08 ms; for 10 rows 42 against 21 us)
        missing = np.zeros(len(known), dtype=bool)
        missing[rows[~known[rows]]] = True
        todo = np.flatnonzero(missing)
        if len(todo):
            self._check(name)
            values[todo] = self._read(name, todo)
            known[todo] = True
        return values[rows]

    def full(self, name: str) -> NDArray[np.float64]:
        values, known = self._memo(name)
        if name not in self._full:
            self._check(name)
            values[:] = self._read(name, None)
            known[:] = True
            self._full.add(name)
        return values

    def read_so_far(self) -> dict[str, NDArray[np.float64]]:
        """Per field asked for, its values where read (NaN elsewhere): what a consumer saw, to explain later."""
        return {name: values.copy() for name, (values, _) in self._seen.items()}


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
    - time_in_phase: seconds since that green (or transition) began;
    - deferred: fields the backend reads only when asked (`Deferred`); `lane` reads all of one,
      `rows` gives a reader of some rows (the safety guard's way to read the boxes and stop lines).
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
    deferred: Deferred | None = field(default=None, repr=False, compare=False)

    def lane(self, name: str) -> NDArray[np.float64]:
        value = getattr(self, name)
        if value is None:
            if self.deferred is None or name not in self.deferred.names:
                raise KeyError(f"observation field '{name}' was not gathered; declare it in `requires`")
            return self.deferred.full(name)
        return np.asarray(value)

    def gathered(self) -> Observation:
        """This observation with every deferred field read in full (for consumers of whole arrays)."""
        if self.deferred is None:
            return self
        values: dict[str, Any] = {name: self.deferred.full(name) for name in self.deferred.names}
        return replace(self, deferred=None, **values)

    def at(self, name: str, rows: NDArray[np.int64]) -> NDArray[np.float64]:
        """The field at these rows (repeats allowed): indexed if gathered, else only these rows read."""
        if getattr(self, name) is not None or self.deferred is None:
            return self.lane(name)[rows]
        return self.deferred.rows(name, rows)

    def as_read(self) -> Observation:
        """This observation as far as it was read: deferred fields hold what was read of them (NaN elsewhere),
        and nothing more is read. For explaining a decision after the backend moved on."""
        if self.deferred is None:
            return self
        values: dict[str, Any] = self.deferred.read_so_far()
        return replace(self, deferred=None, **values)

    def has(self, name: str) -> bool:
        """Whether `lane(name)` can be read (gathered, or deferred)."""
        return getattr(self, name) is not None or (self.deferred is not None and name in self.deferred.names)

    def rows(self, name: str) -> NDArray[np.float64] | LaneRows:
        """The field as it stands (an array) if gathered, else a reader of the rows asked for (deferred)."""
        value = getattr(self, name)
        if value is not None:
            return np.asarray(value)
        deferred = self.deferred
        if deferred is None or name not in deferred.names:
            raise KeyError(f"observation field '{name}' was not gathered; declare it in `requires`")
        return lambda rows: deferred.rows(name, rows)

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
