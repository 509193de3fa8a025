"""One SUMO session: lifecycle, seeding, 1 s stepping, vectorized observation, signal writes.

libsumo (SUMO in-process, about 20x faster than TraCI over a socket) allows one simulation per
process, so a `Twin` is a context manager and parallel runs use one process each (see `bench`).
TraCI is used only when sumo-gui is wanted. The twin decides nothing: signal states reach it only
from the safety guard (`write`), or, for SUMO's own programs, it reports what SUMO shows (`states`).

Per-lane getters are the fastest measured way to read lanes through libsumo (faster than
subscriptions, see shared anchors), and only the fields some consumer declared are read; the fields
in `defer` only at the rows a consumer asks for (`Observation.deferred`).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.errors import UserError
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario
from citysignal.sumo_home import binary
from citysignal.twin.observation import (
    BACKLOG_OFF_MAP_CAP,
    LANE_FIELDS,
    Deferred,
    Observation,
    PriorityCall,
    ProgramPosition,
)

PRIORITY_CLASSES = {"emergency": "emergency", "bus": "bus"}  # SUMO vClass -> priority call kind
BOX_CLEAR_SPEED_MS = 2.0  # slower than this inside a junction, a vehicle still blocks the box
DEFAULT_SEED = 23423  # SUMO's own default: a bench run with seed 23423 reproduces a plain `sumo` run
DETECTOR_PERIOD_S = 86400.0  # the stop-line detectors' interval: their counts restart at the end of each
DETECTION_EPS_S = 1e-6  # slack on a detector's last detection time (SUMO reports it as a difference of floats)


LANE_GETTERS = {
    "vehicles": "getLastStepVehicleNumber",
    "halting": "getLastStepHaltingNumber",
    "occupancy": "getLastStepOccupancy",
    "speed": "getLastStepMeanSpeed",
}


def _read_all(getter: Callable[[str], float], ids: Sequence[str]) -> NDArray[np.float64]:
    """One getter over many ids (a list through `map`: the fastest way measured, faster than a generator)."""
    return np.array(list(map(getter, ids)), dtype=np.float64).reshape(len(ids))


def _detectors_file(layout: Layout, path: Path) -> Path:
    rows = []
    for k in layout.incoming_lanes:
        lane = layout.lanes[k]
        pos = max(0.0, float(layout.lane_length[k]) - 1.0)
        rows.append(
            f'    <e1Detector id="cs_{k}" lane="{lane}" pos="{pos:.2f}" period="{DETECTOR_PERIOD_S:g}" '
            f'file="/dev/null" friendlyPos="true"/>'
        )
    path.write_text("<additional>\n" + "\n".join(rows) + "\n</additional>\n")
    return path


class Twin:
    """A running SUMO scenario. Use as `with Twin(...) as twin:`."""

    def __init__(
        self,
        scenario: Scenario,
        layout: Layout,
        *,
        seed: int = DEFAULT_SEED,
        fields: frozenset[str] = frozenset({"halting"}),
        tripinfo: Path | None = None,
        extra_additional: tuple[Path, ...] = (),
        gui: bool = False,
        priority_reach: float | None = None,
        defer: frozenset[str] = frozenset(),
    ) -> None:
        unknown = set(fields) - LANE_FIELDS
        if unknown:
            raise ValueError(f"unknown observation fields: {sorted(unknown)}")
        if not defer <= fields:
            raise ValueError(f"deferred fields must be observed: {sorted(defer - fields)}")
        self.scenario = scenario
        self.layout = layout
        self.seed = seed
        self.fields = frozenset(fields)
        self.tripinfo = tripinfo
        self.extra_additional = extra_additional
        self.gui = gui
        self.priority_reach = priority_reach
        self.defer = frozenset(defer)  # read only when asked (`Observation.deferred`)
        self._steps = 0
        self._priority: dict[str, str] = {}  # priority vehicles on the road -> "emergency" or "bus"
        self._api: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # ids as object arrays: a read by rows takes its ids with one `take` (a third of a list comprehension's
        # time, and at city scale a step reads some 10,000 rows several times)
        self._lane_ids = np.array(layout.lanes, dtype=object)
        self._box_ids = np.array(layout.box_lanes, dtype=object)
        self._detector_of = np.zeros(0, dtype=object)  # per layout lane: its stop-line detector, "" if it has none
        self._has_detector = np.zeros(0, dtype=bool)
        self._passed_at = np.zeros(0, dtype=np.int64)  # the lanes with a detector
        self._passed_count = np.zeros(0)  # per layout lane: its detector's count when last read
        self._passed_clear_at = np.zeros(0)  # when that read found the detector empty; -inf: read it again
        self._passed_origin = scenario.begin  # where the detectors' intervals (`DETECTOR_PERIOD_S`) count from
        self._passed_interval = -1.0  # the interval the remembered counts were read in
        self._detection_times = False  # whether SUMO gives the detectors' time since detection (not in meso)
        self._entry_edge: dict[str, str] = {}  # per vehicle pending insertion: the edge it waits on

    # lifecycle -----------------------------------------------------------------------------
    def _command(self, tmp: Path) -> list[str]:
        sc = self.scenario
        cmd = [
            binary("sumo-gui" if self.gui else "sumo"),
            "-c", str(sc.sumocfg),
            "--begin", f"{sc.begin:.3f}",  # not :g, which rounds times past 10^6 s
            "--end", f"{sc.end:.3f}",
            "--seed", str(self.seed),
            "--step-length", "1",
            "--time-to-teleport", "-1",
            "--no-step-log", "true",
            "--no-warnings", "true",
        ]  # fmt: skip
        adds = list(sc.additional_files) + list(self.extra_additional)
        if "passed" in self.fields:
            adds.append(_detectors_file(self.layout, tmp / "citysignal_detectors.add.xml"))
        if adds:
            cmd += ["--additional-files", ",".join(str(a) for a in adds)]
        if self.tripinfo is not None:
            cmd += [
                "--tripinfo-output", str(self.tripinfo),
                "--tripinfo-output.write-unfinished", "true",
                "--tripinfo-output.write-undeparted", "true",
            ]  # fmt: skip
        if self.gui:
            cmd += ["--start", "true"]
        return cmd

    def __enter__(self) -> Twin:
        self._tmp = tempfile.TemporaryDirectory(prefix="citysignal-")
        api: ModuleType = importlib.import_module("traci" if self.gui else "libsumo")
        # libsumo raises a generic error ("Process Error") and prints the reason on this process's stderr
        # (fd 2, from C++), so fd 2 goes to a file while SUMO loads; sumo-gui is a child process that
        # would keep the file for its lifetime, and shows its errors itself.
        log = Path(self._tmp.name) / "sumo-start.log"
        failure: Exception | None = None
        sys.stderr.flush()
        saved = None if self.gui else os.dup(2)
        try:
            if saved is not None:
                with log.open("wb") as fh:
                    os.dup2(fh.fileno(), 2)
            api.start(self._command(Path(self._tmp.name)))
        except Exception as exc:  # SUMO reports bad input as a generic error
            failure = exc
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
        said = log.read_text(errors="replace") if log.is_file() else ""
        if failure is not None:
            errors = [line.removeprefix("Error:") for line in said.splitlines() if line.startswith("Error:")]
            reason = " ".join((errors[0] if errors else str(failure) or type(failure).__name__).split())
            self._tmp.cleanup()
            raise UserError(f"SUMO could not load {self.scenario.sumocfg}: {reason[:400]}") from failure
        sys.stderr.write(said)  # whatever SUMO said while loading, back where it belongs
        self._api = api
        if "passed" in self.fields:
            self._detector_of = np.full(len(self.layout.lanes), "", dtype=object)
            for k in self.layout.incoming_lanes:
                self._detector_of[k] = f"cs_{k}"
            self._has_detector = np.zeros(len(self.layout.lanes), dtype=bool)
            self._has_detector[self.layout.incoming_lanes] = True
            self._passed_at = np.flatnonzero(self._has_detector)
            self._passed_count = np.zeros(len(self.layout.lanes))
            self._passed_clear_at = np.full(len(self.layout.lanes), -np.inf)
            self._detection_times = self._knows_detection_times()
        return self

    def _knows_detection_times(self) -> bool:
        """Whether SUMO gives the stop-line detectors' time since detection: the mesoscopic model's
        detectors count vehicles but refuse it ("Induction loop ... is not known", SUMO 1.28)."""
        if not self._passed_at.size:
            return False
        probe = self._binding("inductionloop", "getTimeSinceDetection")
        try:
            probe(self._detector_of[int(self._passed_at[0])])
        except self._api.TraCIException:
            return False
        return True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # stepping ------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self._api.simulation.getTime())

    @property
    def done(self) -> bool:
        return self.time >= self.scenario.end

    def step(self) -> None:
        self._api.simulationStep()
        self._steps += 1

    # observation ---------------------------------------------------------------------------
    def program_position(self) -> ProgramPosition:
        tls = self._api.trafficlight
        now = self.time
        phase = np.empty(self.layout.n_intersections, dtype=np.int64)
        elapsed = np.empty(self.layout.n_intersections, dtype=np.float64)
        for k, inter in enumerate(self.layout.intersections):
            phase[k] = tls.getPhase(inter.id)
            remaining = tls.getNextSwitch(inter.id) - now
            elapsed[k] = max(0.0, inter.program[phase[k]].duration - remaining)
        return ProgramPosition(phase, elapsed)

    def observe(self, phase: NDArray[np.int64], time_in_phase: NDArray[np.float64]) -> Observation:
        """The lanes now: the fields in `fields`, those in `defer` read only when asked (`Deferred`)."""
        values = {name: self._read(name, None) for name in sorted(self.fields - self.defer)}
        deferred = None
        if self.defer:
            step = self._steps
            sizes = {name: len(self.layout.box_lanes if name == "box" else self.layout.lanes) for name in self.defer}
            deferred = Deferred(sizes, self._read, lambda: self._steps == step)
        calls = self._calls() if self.priority_reach is not None else ()
        return Observation(
            time=self.time, phase=phase, time_in_phase=time_in_phase, calls=calls, deferred=deferred, **values
        )

    def _read(self, name: str, rows: NDArray[np.int64] | None) -> NDArray[np.float64]:
        """One lane field now, at `rows` (None: all; the rows of `Layout.box_lanes` for `box`, else of
        `Layout.lanes`)."""
        if name == "box":
            return self._box(self.layout.box_lanes if rows is None else self._box_ids[rows].tolist())
        if name == "backlog":  # from the feeders and pending vehicles of whole edges: all, then the rows
            backlog = self._backlog()
            return backlog if rows is None else backlog[rows]
        if name == "passed":  # stop-line detectors stand on the incoming lanes only: 0 elsewhere
            passed = np.zeros(len(self.layout.lanes) if rows is None else len(rows))
            at = self._passed_at if rows is None else np.flatnonzero(self._has_detector[rows])
            passed[at] = self._passed(at if rows is None else rows[at])
            return passed
        names = self.layout.lanes if rows is None else self._lane_ids[rows].tolist()
        return _read_all(self._binding("lane", LANE_GETTERS[name]), names)

    def _passed(self, lanes: NDArray[np.int64]) -> NDArray[np.float64]:
        """The stop-line counts of these lanes (each with a detector), as SUMO's `getIntervalVehicleNumber`
        gives them now. That call walks every vehicle the detector saw in its interval (a day), so it costs
        more the longer a run goes; a count changes only when a vehicle reaches the detector (or one leaves it
        early, sideways) or the interval restarts (every `DETECTOR_PERIOD_S` from the run's begin, or from
        where a state was loaded). So a detector is read again only where `getTimeSinceDetection`
        (constant cost) says a vehicle stands on it or left it since the last read that found it empty, or
        the interval may have restarted since (within a second of a restart, every detector, every time)."""
        now = self.time
        interval, offset = divmod(now - self._passed_origin, DETECTOR_PERIOD_S)
        settled = 1.0 < offset < DETECTOR_PERIOD_S - 1.0
        if not settled or interval != self._passed_interval:
            self._passed_clear_at[:] = -np.inf
            self._passed_interval = interval
        detectors = self._detector_of[lanes].tolist()
        count = self._binding("inductionloop", "getIntervalVehicleNumber")
        if not self._detection_times:  # nothing tells which counts moved: read them all
            return _read_all(count, detectors)
        since = _read_all(self._binding("inductionloop", "getTimeSinceDetection"), detectors)
        stale = since <= now - self._passed_clear_at[lanes] + DETECTION_EPS_S  # on it, or left since: read again
        todo = lanes[stale]
        if todo.size:
            self._passed_count[todo] = _read_all(count, self._detector_of[todo].tolist())
            self._passed_clear_at[todo] = np.where((since[stale] > 0.0) & settled, now, -np.inf)
        return self._passed_count[lanes]

    def _binding(self, domain: str, name: str) -> Callable[..., Any]:
        """libsumo's function without its Python wrapper (the binding itself, about a third faster per call,
        measured) where this libsumo has one, else the public function (TraCI under sumo-gui)."""
        raw = getattr(getattr(self._api, "_libsumo", None), f"{domain}_{name}", None)
        function: Callable[..., Any] = raw if callable(raw) else getattr(getattr(self._api, domain), name)
        return function

    def _box(self, lanes: Sequence[str]) -> NDArray[np.float64]:
        """Vehicles inside each of these box lanes that have not yet cleared it: all of them while they move
        slower than `BOX_CLEAR_SPEED_MS` on average (a left-turner that just found its gap is still in the way
        of the next green), none while they pass at speed."""
        count = _read_all(self._binding("lane", "getLastStepVehicleNumber"), lanes)
        speed = self._binding("lane", "getLastStepMeanSpeed")
        for i in np.flatnonzero(count).tolist():
            if speed(lanes[i]) >= BOX_CLEAR_SPEED_MS:
                count[i] = 0.0
        return count

    def _calls(self) -> tuple[PriorityCall, ...]:
        """Priority vehicles (SUMO vClass emergency or bus) within `priority_reach` of the stop line of a
        signal of the layout, as calls on the signal (link) they will cross: every such signal along the
        route, not only the next (closely spaced signals would otherwise get no warning)."""
        sim, veh = self._api.simulation, self._api.vehicle
        for v in sim.getDepartedIDList():
            kind = PRIORITY_CLASSES.get(veh.getVehicleClass(v))
            if kind is not None:
                self._priority[v] = kind
        for v in sim.getArrivedIDList():
            self._priority.pop(v, None)
        calls = []
        reach = float(self.priority_reach or 0.0)
        for v, kind in self._priority.items():
            called: set[int] = set()
            for tls, link, distance, _ in veh.getNextTLS(v):  # along its route, nearest first
                if distance > reach:
                    break
                k = self._index_of.get(tls)
                if k is not None and k not in called:
                    called.add(k)
                    calls.append(PriorityCall(k, int(link), kind, v, float(distance), float(veh.getTimeLoss(v))))
        return tuple(sorted(calls, key=lambda c: (c.intersection, c.distance)))

    @cached_property
    def _index_of(self) -> dict[str, int]:
        return {tls: k for k, tls in enumerate(self.layout.ids)}

    def _backlog(self) -> NDArray[np.float64]:
        layout = self.layout
        feeders = _read_all(self._binding("lane", "getLastStepHaltingNumber"), layout.feed_lanes)
        own = np.zeros(len(layout.lanes))
        for edge, waiting in self._pending_by_edge().items():
            for on_layout, rows in self._rows_by_edge.get(edge, []):
                (own if on_layout else feeders)[rows] += np.minimum(waiting / len(rows), BACKLOG_OFF_MAP_CAP)
        return own + layout.from_feeders(feeders)

    def _pending_by_edge(self) -> Counter[str]:
        """Vehicles due to depart that SUMO could not insert yet, per edge they enter on. Usually none (one
        call); while fewer are pending than edges are watched, each is asked for its route (whose first edge
        it waits on; a route given a later `departEdge` is not supported), else each edge for its queue."""
        pending = self._api.simulation.getPendingVehicles()
        if len(pending) < len(self._rows_by_edge):
            # a vehicle waits on the same edge until inserted: its route is asked once, not every step
            known, route = self._entry_edge, self._binding("vehicle", "getRoute")
            self._entry_edge = {v: known[v] if v in known else route(v)[0] for v in pending}
            return Counter(self._entry_edge.values())
        self._entry_edge = {}
        get = self._api.edge.getPendingVehicles
        return Counter({edge: len(get(edge)) for edge in self._rows_by_edge})

    @cached_property
    def _rows_by_edge(self) -> dict[str, list[tuple[bool, NDArray[np.int64]]]]:
        """Per edge: its rows among the layout lanes (True) and among the feeder lanes (False)."""
        out: dict[str, list[tuple[bool, NDArray[np.int64]]]] = {}
        for on_layout, names in ((True, self.layout.lanes), (False, self.layout.feed_lanes)):
            rows_of: dict[str, list[int]] = {}
            for row, name in enumerate(names):
                rows_of.setdefault(name.rsplit("_", 1)[0], []).append(row)
            for edge, rows in rows_of.items():
                out.setdefault(edge, []).append((on_layout, np.array(rows, dtype=np.int64)))
        return out

    def states(self) -> list[str]:
        """The signal state SUMO shows at each intersection (for programs SUMO runs itself)."""
        get = self._api.trafficlight.getRedYellowGreenState
        return [get(i) for i in self.layout.ids]

    def write(self, changes: dict[int, str]) -> None:
        """Show new signal states; only the safety guard calls this."""
        set_state = self._binding("trafficlight", "setRedYellowGreenState")
        for k, state in changes.items():
            set_state(self.layout.ids[k], state)

    # city-level readings for reports --------------------------------------------------------
    def teleports_started(self) -> int:
        """Vehicles that started teleporting in the last step (0 with teleporting off, unless jammed)."""
        return int(self._api.simulation.getStartingTeleportNumber())

    # snapshots -----------------------------------------------------------------------------
    def save_state(self) -> bytes:
        """SUMO's whole simulation state now (vehicles, routes, detectors, programs), gzip-compressed XML."""
        assert self._tmp is not None
        path = Path(self._tmp.name) / "state.xml.gz"  # SUMO compresses by the file name
        self._api.simulation.saveState(str(path))
        return path.read_bytes()

    def load_state(self, state: bytes) -> None:
        """Jump to a state from `save_state` of the same scenario. SUMO does not restore signal states set
        from outside (its "online" programs): the caller writes them again before the next step."""
        assert self._tmp is not None
        path = Path(self._tmp.name) / "state.xml.gz"
        path.write_bytes(state)
        loaded_at = self.time
        self._api.simulation.loadState(str(path))
        self._entry_edge = {}
        # SUMO closes the detectors' running interval where the state is loaded, and clears their counts
        self._passed_origin = loaded_at
        self._passed_clear_at[:] = -np.inf
