"""Detector plausibility and the per-intersection fallback, for any controller.

`DetectorHealth` judges each lane's readings from the readings alone, as SCATS and SCOOT loop-fault logic
does. A lane is *faulty* while
- a reading is missing (NaN);
- a count is beyond what the lane can hold: vehicles or halting above `OVERFULL` times its standing
  capacity (length / 7.5 m) plus `OVERFULL_MARGIN` (vehicles that straddle the lane's ends, or shorter than
  SUMO's default car, count too: 7 were seen on a 41 m lane of cologne1), or the occupancy above 1;
- the vehicle count jumps by more than `MAX_JUMP` in one step (a lane gains or loses at most a vehicle or
  two a second; a chattering or noisy loop jumps by many), flagged for `LATCH_S` after the last such reading;
- its readings stayed exactly the same, and not empty, for `STUCK_S` (a queue that is served changes; one
  that stands that long behind a red is preempted by the guard's max red first). A frozen *empty* reading
  cannot be told from an empty lane this way and is not caught.

`DetectorSupervisor` puts a controller behind it. Faulty lanes never reach the controller: each is replaced
by the mean of the healthy lanes of its edge (SCATS's substitute detector); where an edge has no healthy
lane, the lane reads 0 and an intersection fed by it is *in fallback*: it gets the fixed-time program's
request (`cycle.FixedTime`, the net's own plan) instead of the controller's, and `explain` says why. The
safety guard sees faulty lanes as unknown (NaN halting and stop-line counts; see `guard`). Controllers that
SUMO runs itself (`sumo_program`) read SUMO's own detectors and are not supervised.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.base import Controller
from citysignal.control.cycle import FixedTime
from citysignal.network.layout import Layout
from citysignal.twin.faults import FAULT_FIELDS, lane_capacity
from citysignal.twin.observation import Observation, ProgramPosition

STUCK_S = 300.0
OVERFULL = 1.5
OVERFULL_MARGIN = 2.0
MAX_JUMP = 4.0
LATCH_S = 300.0
HEALTH_FIELDS = frozenset({"halting", "vehicles"})  # what the checks read, beside the controller's fields
READING_FIELDS = ("vehicles", "halting", "occupancy")
REASONS = ("", "missing", "beyond capacity", "implausible jumps", "stuck")
CLEAN_FIELDS = (*FAULT_FIELDS, "speed")


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
        edges: dict[str, int] = {}
        self.edge = np.array([edges.setdefault(lane.rsplit("_", 1)[0], len(edges)) for lane in layout.lanes])
        self.n_edges = len(edges)

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
        self.faulty = (now < self._bad_until) | stuck

    def substitutes(self) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """Per lane: whether its edge has a healthy lane; per edge: how many healthy lanes it has."""
        healthy = np.bincount(self.edge, weights=(~self.faulty).astype(float), minlength=self.n_edges)
        return np.asarray(healthy[self.edge] > 0), np.asarray(healthy, dtype=np.float64)

    def clean(self, obs: Observation) -> Observation:
        """`obs` with every faulty lane replaced by the mean of its edge's healthy lanes, else 0."""
        if not self.faulty.any():
            return obs
        _, healthy = self.substitutes()
        ok = ~self.faulty
        changed: dict[str, Any] = {}
        for name in CLEAN_FIELDS:
            values = getattr(obs, name)
            if values is None:
                continue
            total = np.bincount(self.edge, weights=np.where(ok, values, 0.0), minlength=self.n_edges)
            mean = np.divide(total, healthy, out=np.zeros(self.n_edges), where=healthy > 0)
            changed[name] = np.where(ok, values, mean[self.edge])
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
        has_substitute, _ = health.substitutes()
        blind = health.faulty & ~has_substitute
        lay = health.layout
        self.fallback = np.bincount(lay.mov_int, weights=blind[lay.mov_in], minlength=lay.n_intersections) > 0
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
        return {
            health.layout.lanes[i]: REASONS[health.reason[i]] for i in np.flatnonzero(health.faulty).tolist()
        }

    def explain(self, k: int) -> str:
        health = self.checked
        lay = health.layout
        lanes = sorted({int(i) for i in lay.mov_in[lay.mov_int == k] if health.faulty[i]})
        if not lanes:
            return self.controller.explain(k)
        named = ", ".join(f"{lay.lanes[i]} ({REASONS[health.reason[i]]})" for i in lanes[:4])
        if self.fallback[k]:
            return (
                f"fixed-time fallback: no trusted detector on an approach, faulty: {named}; "
                f"{self.fallback_controller.explain(k)}"
            )
        return f"{self.controller.explain(k)}; faulty detectors replaced by their edge's healthy lanes: {named}"

    def stats(self) -> dict[str, float]:
        health = self.checked
        return {
            **self.controller.stats(),
            "faulty_detectors": float(health.faulty.sum()),
            "fallback_share": round(self._fallback_steps / self._steps, 4) if self._steps else 0.0,
        }
