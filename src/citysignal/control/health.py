"""Detector plausibility and the per-intersection fallback, for any controller.

`DetectorHealth` judges each lane's readings from the readings alone, as SCATS and SCOOT loop-fault logic
does. A lane is *faulty* while
- a reading is missing (NaN);
- a count is beyond what the lane can hold: vehicles or halting above `OVERFULL` times its standing
  capacity (length / 7.5 m) plus `OVERFULL_MARGIN` (vehicles that straddle the lane's ends, or shorter than
  SUMO's default car, count too: 7 were seen on a 41 m lane of cologne1), or the occupancy above 1;
- the vehicle count jumps by more than `MAX_JUMP` in one step (a lane gains or loses at most a vehicle or
  two a second; a chattering or noisy loop jumps by many), flagged for `LATCH_S` after the last such reading;
- its readings stayed exactly the same, and not empty, for `STUCK_S` (a queue that is served moves; one
  that stands that long behind a red is preempted by the guard's max red first);
- it is *silent*: its stop-line count has not grown for `SILENT_MIN_S` and more, in which, at the rate it
  grew before (after at least `SILENT_HISTORY_S` with counts), `SILENT_COUNT` vehicles should have
  crossed. By the clock, not by its greens: a controller misled by a detector stuck at empty never gives
  its lane a green, and an empty lane counts nothing in its greens either; the guard's max red serves a
  lane with vehicles waiting well within `SILENT_MIN_S`. This catches a detector stuck at any value, empty
  included, as long as the lane had traffic before. Only a lane that reads less than `SILENT_BELOW`
  of what it holds can be silent: one that reads fuller and does not discharge is blocked (spill-back from
  downstream, a jam), which is what its detector says. A detector dead before its lane ever counted a
  vehicle cannot be told from a lane nobody uses (seen: 59 unused lanes on arterial4x4), and is trusted.

`DetectorSupervisor` puts a controller behind it. Faulty lanes never reach the controller: each reads the
mean of the healthy lanes of its edge (SCATS's substitute detector), or where the edge has none a
store-and-forward queue model (a virtual detector): from its last trusted halting count, plus what
arrived unseen during the silence that gave it away, vehicles arrive at the lane's own mean rate measured
while it was healthy (never below the mean of its intersection's lanes: a lane modelled too empty is
starved, one modelled too full only gets a green it did not need) and leave while a green serves the lane at
the rate it discharged a queue in its greens while healthy (at the saturation flow before it has such a
history; a permissive turn discharges far slower), never below 0 nor above what the lane holds (a lane into
no signal of ours flows freely); vehicles = halting = that queue, occupancy from it, and the stop-line count
grows by what leaves.
An intersection with more than half of its incoming lanes faulty is *in fallback*: it gets the fixed-time
program's request (`cycle.FixedTime`, the net's own plan) instead of the controller's. `explain` says which
it is and why. The safety guard sees faulty lanes as unknown (NaN halting and stop-line counts; see
`guard`). Controllers that SUMO runs itself (`sumo_program`) read SUMO's own detectors and are not
supervised.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.base import Controller
from citysignal.control.cycle import SATURATION_FLOW_VEH_S, FixedTime
from citysignal.network.layout import Layout
from citysignal.twin.faults import lane_capacity
from citysignal.twin.observation import JAM_SPACING_M, Observation, ProgramPosition

STUCK_S = 300.0
SILENT_COUNT = 8.0
SILENT_HISTORY_S = 60.0
SILENT_BELOW = 0.5
SILENT_MIN_S = 300.0
RATE_HISTORY_S = 120.0
OVERFULL = 1.5
OVERFULL_MARGIN = 2.0
MAX_JUMP = 4.0
LATCH_S = 300.0
HEALTH_FIELDS = frozenset({"halting", "vehicles"})  # what the checks read, beside the controller's fields
READING_FIELDS = ("vehicles", "halting", "occupancy")
REASONS = ("", "missing", "beyond capacity", "implausible jumps", "stuck", "silent")


class DetectorHealth:
    """Which lanes' readings are plausible, step by step."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        n = len(layout.lanes)
        self.capacity = lane_capacity(layout)
        self.faulty = np.zeros(n, dtype=bool)
        self.reason = np.zeros(n, dtype=np.int64)  # index into REASONS of the last implausible reading
        self._bad_until = np.full(n, -np.inf)
        self._last: NDArray[np.float64] | None = None
        self._last_vehicles: NDArray[np.float64] | None = None
        self._same_since = np.zeros(n)
        self._last_passed: NDArray[np.float64] | None = None
        self._counted = np.zeros(n)  # stop-line counts, and the seconds up to the last one
        self._counted_time = np.zeros(n)
        self._dry = np.zeros(n)  # seconds since the count last grew
        self.feeds = np.full(n, -1, dtype=np.int64)  # the intersection an incoming lane feeds, else -1
        self.feeds[layout.mov_in] = layout.mov_int
        edges: dict[str, int] = {}
        self.edge = np.array([edges.setdefault(lane.rsplit("_", 1)[0], len(edges)) for lane in layout.lanes])
        self.n_edges = len(edges)
        self._rate_count = np.zeros(n)  # stop-line counts while healthy, and the seconds they took
        self._rate_time = np.zeros(n)
        self._discharge_count = np.zeros(n)  # counts in greens with a queue while healthy, and their seconds
        self._discharge_time = np.zeros(n)
        self.queue = np.zeros(n)  # the queue model: the halting count, a model one for faulty lanes
        self.model_passed = np.zeros(n)  # the stop-line count, a model one for faulty lanes
        self._pair_int = layout.mov_int[layout.serve_mov]  # (green, movement) pairs: whose green
        self._pair_local = layout.serve_green - layout.green_start[self._pair_int]

    def update(self, obs: Observation) -> None:
        now = obs.time
        present = [f for f in READING_FIELDS if getattr(obs, f) is not None]
        readings = np.stack([obs.lane(f) for f in present])
        missing = np.isnan(readings).any(axis=0)
        if obs.passed is not None:
            missing |= np.isnan(obs.passed)
        over = np.zeros_like(missing)
        for name in ("vehicles", "halting"):
            if getattr(obs, name) is not None:
                over |= obs.lane(name) > OVERFULL * self.capacity + OVERFULL_MARGIN
        if obs.occupancy is not None:
            over |= obs.occupancy > 1.0
        vehicles = obs.lane("vehicles") if obs.vehicles is not None else obs.lane("halting")
        jump = np.zeros_like(missing)
        if self._last_vehicles is not None:
            jump = np.abs(vehicles - self._last_vehicles) > MAX_JUMP
        self._last_vehicles = vehicles
        for code, bad in ((3, jump), (2, over), (1, missing)):  # the last one named wins
            self.reason[bad] = code
            self._bad_until[bad] = now + LATCH_S
        same = np.zeros_like(missing)
        if self._last is not None and self._last.shape == readings.shape:
            same = (readings == self._last).all(axis=0) & (readings > 0).any(axis=0)
        self._last = readings
        self._same_since = np.where(same, self._same_since, now)
        stuck = now - self._same_since >= STUCK_S
        self.reason[stuck] = 4
        lay = self.layout
        green = np.zeros(len(lay.lanes))
        green[lay.mov_in[lay.serve_mov[obs.phase[self._pair_int] == self._pair_local]]] = 1.0
        green[self.feeds < 0] = 1.0  # a lane into no signal of ours (a way out of the map) flows freely
        low = np.nan_to_num(obs.lane("halting"), nan=np.inf) < SILENT_BELOW * self.capacity
        silent = low & self._silent(obs) if obs.passed is not None else np.zeros_like(missing)
        self.reason[silent] = 5
        was_faulty = self.faulty
        self.faulty = (now < self._bad_until) | stuck | silent
        self._model(obs, green, was_faulty)

    def _model(self, obs: Observation, green: NDArray[np.float64], was_faulty: NDArray[np.bool_]) -> None:
        """Advance the queue model one step; a healthy lane's model is its reading."""
        passed = obs.passed if obs.passed is not None else np.full(len(self.queue), np.nan)
        counted = ~was_faulty & ~self.faulty & ~np.isnan(passed)
        crossed = np.where(counted, np.maximum(passed - self.model_passed, 0.0), 0.0)
        self._rate_count += crossed
        self._rate_time += counted
        serving = counted & (green > 0) & (self.queue > 0)
        self._discharge_count += np.where(serving, crossed, 0.0)
        self._discharge_time += serving
        measured = self._discharge_time >= RATE_HISTORY_S
        discharge = np.divide(
            self._discharge_count, self._discharge_time, out=np.zeros(len(self.queue)), where=measured
        )
        discharge = np.where(measured, np.minimum(discharge, SATURATION_FLOW_VEH_S), SATURATION_FLOW_VEH_S)
        known = self._rate_time >= RATE_HISTORY_S
        rate = np.divide(self._rate_count, self._rate_time, out=np.zeros_like(self.queue), where=known)
        # Never below the mean of the intersection's lanes: a lane modelled too empty is starved, one modelled
        # too full only gets a green it did not need.
        n_int = self.layout.n_intersections
        fed = known & (self.feeds >= 0)
        lanes = np.bincount(self.feeds[fed], minlength=n_int)
        mean = np.bincount(self.feeds[fed], weights=rate[fed], minlength=n_int)
        city = rate[known].mean() if known.any() else 0.0
        mean = np.append(np.divide(mean, lanes, out=np.zeros(n_int), where=lanes > 0), city)
        rate = np.maximum(rate, mean[self.feeds])  # feeds -1 (exit lanes): the city's mean
        # A lane found faulty after a silence has gathered its arrivals since its last count, unseen.
        start = np.where(self.faulty & ~was_faulty, self.queue + rate * self._dry, self.queue)
        leave = np.minimum(start + rate, green * np.where(self.feeds >= 0, discharge, SATURATION_FLOW_VEH_S))
        modelled = np.clip(start + rate - leave, 0.0, self.capacity)
        self.queue = np.where(self.faulty, modelled, np.nan_to_num(obs.lane("halting")))
        self.model_passed = np.where(self.faulty | np.isnan(passed), self.model_passed + leave, passed)

    def _silent(self, obs: Observation) -> NDArray[np.bool_]:
        passed = obs.lane("passed")
        last = self._last_passed if self._last_passed is not None else passed
        step = passed - last
        known = ~np.isnan(step)
        grew = np.where(known, step, 0.0) > 0
        self._last_passed = np.where(np.isnan(passed), last, passed)
        self._counted += np.where(grew, step, 0.0)
        dry = np.where(grew | ~known, 0.0, self._dry + 1.0)  # 1 s steps
        self._counted_time += np.where(grew, self._dry + 1.0, 0.0)
        self._dry = dry
        history = self._counted_time >= SILENT_HISTORY_S
        rate = np.divide(self._counted, self._counted_time, out=np.zeros_like(dry), where=history)
        return np.asarray(history & (dry >= SILENT_MIN_S) & (rate * dry >= SILENT_COUNT))

    def has_sibling(self) -> NDArray[np.bool_]:
        """Per lane: its edge has a healthy lane."""
        healthy = np.bincount(self.edge, weights=(~self.faulty).astype(float), minlength=self.n_edges)
        return np.asarray(healthy[self.edge] > 0)

    def clean(self, obs: Observation) -> Observation:
        """`obs` with every faulty lane's readings replaced: by the mean of its edge's healthy lanes, else by the
        queue model (the stop-line count always by the model's)."""
        if not self.faulty.any():
            return obs
        ok = ~self.faulty
        healthy = np.bincount(self.edge, weights=ok.astype(float), minlength=self.n_edges)
        sibling = self.has_sibling()
        model = {
            "vehicles": self.queue,
            "halting": self.queue,
            "occupancy": np.minimum(1.0, self.queue * JAM_SPACING_M / self.layout.lane_length),
            "passed": self.model_passed,
            "backlog": np.zeros_like(self.queue),
        }
        changed: dict[str, Any] = {}
        for name, value in model.items():
            seen = getattr(obs, name)
            if seen is None:
                continue
            if name != "passed":
                total = np.bincount(self.edge, weights=np.where(ok, seen, 0.0), minlength=self.n_edges)
                mean = np.divide(total, healthy, out=np.zeros(self.n_edges), where=healthy > 0)
                value = np.where(sibling, mean[self.edge], value)
            changed[name] = np.where(ok, seen, value)
        return dataclasses.replace(obs, **changed)

    def unknown(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Lane readings with the faulty lanes marked unknown (NaN), for the safety guard."""
        return np.where(self.faulty, np.nan, values)


class DetectorSupervisor:
    """A controller behind `DetectorHealth`, with the fixed-time fallback per intersection."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.fallback_controller = FixedTime()
        self.requires = controller.requires | HEALTH_FIELDS | self.fallback_controller.requires
        self.health: DetectorHealth | None = None
        self.fallback = np.zeros(0, dtype=bool)
        self._fallback_steps = 0.0
        self._steps = 0

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.controller.reset(layout, position, seed)
        self.fallback_controller.reset(layout, position, seed)
        self.health = DetectorHealth(layout)
        self.fallback = np.zeros(layout.n_intersections, dtype=bool)
        self._fallback_steps = 0.0
        self._steps = 0

    @property
    def checked(self) -> DetectorHealth:
        if self.health is None:
            raise RuntimeError("DetectorSupervisor: reset() must be called before decide()")
        return self.health

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        health = self.checked
        health.update(obs)
        clean = health.clean(obs)
        requests = self.controller.decide(clean)
        fixed = self.fallback_controller.decide(clean)  # every step: it follows the cycle it would run
        lay = health.layout
        incoming = health.feeds >= 0
        blind = np.bincount(health.feeds[incoming], weights=health.faulty[incoming], minlength=lay.n_intersections)
        lanes = np.bincount(health.feeds[incoming], minlength=lay.n_intersections)
        self.fallback = 2.0 * blind > lanes
        self._fallback_steps += float(self.fallback.mean()) if len(self.fallback) else 0.0
        self._steps += 1
        return np.where(self.fallback, fixed, requests)

    def guard_inputs(self, obs: Observation) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Halting and stop-line counts for the guard, faulty lanes unknown."""
        health = self.checked
        passed = None if obs.passed is None else health.unknown(obs.passed)
        return health.unknown(obs.lane("halting")), passed

    def faulty_lanes(self) -> dict[str, str]:
        """Lane id -> why its detector is not trusted, for the lanes judged faulty now."""
        health = self.checked
        return {health.layout.lanes[i]: REASONS[health.reason[i]] for i in np.flatnonzero(health.faulty).tolist()}

    def explain(self, k: int) -> str:
        health = self.checked
        lay = health.layout
        lanes = sorted({int(i) for i in lay.mov_in[lay.mov_int == k] if health.faulty[i]})
        if not lanes:
            return self.controller.explain(k)
        sibling = health.has_sibling()
        how = {True: "its edge's healthy lanes", False: "the queue model"}
        named = ", ".join(
            f"{lay.lanes[i]} ({REASONS[health.reason[i]]}; read as {how[bool(sibling[i])]})" for i in lanes[:4]
        )
        if self.fallback[k]:
            return (
                f"fixed-time fallback: more than half of the approach lanes have faulty detectors: {named}; "
                f"{self.fallback_controller.explain(k)}"
            )
        return f"{self.controller.explain(k)}; faulty detectors: {named}"

    def stats(self) -> dict[str, float]:
        health = self.checked
        return {
            **self.controller.stats(),
            "faulty_detectors": float(health.faulty.sum()),
            "fallback_share": round(self._fallback_steps / self._steps, 4) if self._steps else 0.0,
        }
