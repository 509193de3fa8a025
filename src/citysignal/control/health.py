"""Detector plausibility and the per-intersection fallback, for any controller.

`DetectorHealth` judges each lane's readings from the readings themselves and from what the lanes around it
count, as SCATS and SCOOT loop-fault logic does. A lane is *faulty* while
- a reading is missing (NaN);
- a count is beyond what the lane can hold: vehicles or halting above `OVERFULL` times its standing
  capacity (length / 7.5 m) plus `OVERFULL_MARGIN` (vehicles that straddle the lane's ends, or shorter than
  SUMO's default car, count too: 7 were seen on a 41 m lane of cologne1). Not the occupancy: SUMO's is the
  vehicles' length over the lane's, 60 on a 0.2 m stub of ingolstadt7;
- the vehicle count jumps by more than `MAX_JUMP` in one step, or on a short lane by more than half of what
  it holds (at least 2): a lane gains or loses at most a vehicle or two a second (seen on healthy detectors:
  4 once in an hour of ingolstadt21, 2 at most on cologne8 and arterial4x4), a chattering or noisy loop jumps
  by many. Flagged for `LATCH_S` after the last such reading;
- it is *stuck*: its readings and its stop-line count stood still, not empty, for `STUCK_S`, or through
  `STUCK_GREEN_S` of greens serving one of its movements (a served queue moves within seconds; the longest
  still queue seen in a green on healthy detectors was 77 s, on arterial4x4's saturated arterial, where
  the lane ahead is full). A stuck reading inflates or hides a queue, and a controller misled by an
  inflated one keeps serving it, so the greens find it out long before the clock does;
- it is *silent*: it reads less than `SILENT_BELOW` of what it holds and nothing changed while
  `SILENT_COUNT` vehicles should have arrived on it, for at least `SILENT_MIN_S`. What should have arrived
  is weighed against a reference, by the lane's share of it learned while healthy: the vehicles the signals
  upstream counted into it (a vehicle counted at a stop line enters one of the lanes its lane's movements
  lead to, and any vehicle entering changes the lane's count at once); on an entry road, the vehicles that
  arrived on the road's other lanes (traffic comes in bursts, on all the lanes of a road at once); on an
  entry road of one lane, the clock (its share of its intersection's arrivals times their recent rate), and
  then only after `SILENT_CLOCK_S`. Only a lane that has seen traffic can be silent: a detector dead before
  its lane ever saw a vehicle cannot be told from a lane nobody uses (seen: 59 unused lanes on arterial4x4,
  where the upstream lanes' vehicles all took their other lanes), and is trusted. A lane that reads fuller
  and does not change is blocked (spill-back, a jam), which is what its detector says. Exits (lanes into no
  signal of ours) have no stop-line count and flow freely; only the `STUCK_S` check applies to them.
A lane that reads empty while `SUSPECT_COUNT` vehicles should have arrived is *suspect*: its readings still
reach the controller, but the safety guard no longer takes them for "nobody waits" (it serves a lane it
cannot see within its max red). A detector stuck at empty otherwise hides its queue from both, for as long
as it takes to find it silent.

`DetectorSupervisor` puts a controller behind it. Faulty lanes never reach the controller: each reads the
mean of its *twin lanes*, the healthy lanes of its edge that lead the same ways (SCATS's substitute
detector; a left-turn lane's queue is no through lane's); else, when it is faulty only for implausible
readings (jumps, beyond capacity), its lowest reading of the last `FILTER_S` s (a chattering loop adds
vehicles, rarely removes them; a noisy one reads low by a fifth); else a store-and-forward queue model (a
virtual detector). The model runs on every lane, reset to the halting count while the lane's detector shows
it alive (a reading or the count changed), so a lane found out after its readings stood still starts from
its last live reading and what arrived and left since. Vehicles arrive at the lane's share of its reference
now (platoons included); without a reference, at its share of its intersection's recent arrivals, never
below their mean (a lane modelled too empty is starved, one modelled too full only gets a green it did not
need). They leave while a green serves the lane, at the rate it discharged a queue in its greens while
healthy (the saturation flow before it has that history; a permissive turn discharges far slower), never
below 0 nor above what the lane holds; exits flow freely. Vehicles = halting = that queue, occupancy from it,
and the stop-line count grows by what leaves. The backlog is spread evenly over an edge's lanes: a faulty
lane's is its edge's healthy lanes', else its last live one. All rates are learned from healthy stretches
that end in a count: a stuck or silent detector reads healthy until it is found out, and what it read in
the meantime (greens without a count) would teach the model a lane that never discharges.
An intersection with more than half of its incoming lanes faulty is *in fallback*: it gets the fixed-time
program's request (`cycle.FixedTime`, the net's own plan) instead of the controller's. `explain` says which
lanes are faulty, why and what they read as, which are suspect, and whether the intersection is in fallback.
The safety guard sees faulty and suspect lanes as unknown (NaN halting and stop-line counts; see `guard`).
Controllers that SUMO runs itself (`sumo_program`) read SUMO's own detectors and are not supervised.

Where it breaks: a lane with no reference whose demand surges while its detector is dead is modelled at
its recent rate and under-served (cologne8's entry lanes); lanes that share an edge but lead different
ways have no stand-in but the model.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import deque
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.control.base import Controller
from citysignal.control.cycle import SATURATION_FLOW_VEH_S, FixedTime
from citysignal.network.layout import Layout
from citysignal.twin.faults import lane_capacity
from citysignal.twin.observation import JAM_SPACING_M, Observation, ProgramPosition

OVERFULL = 1.5
OVERFULL_MARGIN = 2.0
MAX_JUMP = 4.0
LATCH_S = 300.0
STUCK_S = 300.0
STUCK_GREEN_S = 90.0
SILENT_COUNT = 8.0
SILENT_MIN_S = 120.0
SILENT_CLOCK_S = 300.0
SUSPECT_COUNT = 2.0
SILENT_BELOW = 0.5
RATE_HISTORY_S = 120.0
SHARE_PRIOR = 10.0
TREND_S = 300.0
FILTER_S = 5
HEALTH_FIELDS = frozenset({"halting", "vehicles"})  # what the checks read, beside the controller's fields
READING_FIELDS = ("vehicles", "halting", "occupancy")
REASONS = ("", "missing", "beyond capacity", "implausible jumps", "stuck", "silent", "stuck through its greens")
ARRIVED, SECONDS, SERVED_COUNT, SERVED_SECONDS, GROUP_ARRIVED, REFERENCE = range(6)  # rows of what a lane has learned


class DetectorHealth:
    """Which lanes' readings are plausible, step by step, and a queue model that stands in for those that are not."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        n = len(layout.lanes)
        self.capacity = lane_capacity(layout)
        self._max_jump = np.minimum(MAX_JUMP, np.maximum(2.0, self.capacity / 2))
        self.faulty = np.zeros(n, dtype=bool)
        self.suspect = np.zeros(n, dtype=bool)  # not faulty yet, but no longer trusted to say nobody waits
        self.filtered = np.zeros(n, dtype=bool)  # faulty for implausible readings, read through `lowest`
        self._window: deque[NDArray[np.float64]] = deque(maxlen=FILTER_S)
        self.lowest: dict[str, NDArray[np.float64]] = {}  # per reading field: its lowest over the window
        self.reason = np.zeros(n, dtype=np.int64)  # index into REASONS of the last implausible reading
        self._bad_until = np.full(n, -np.inf)
        self._last: NDArray[np.float64] | None = None
        self._last_vehicles: NDArray[np.float64] | None = None
        self._last_passed: NDArray[np.float64] | None = None
        self._unchanged_since = np.zeros(n)
        self._stuck_green = np.zeros(n)  # seconds of green with its readings standing still, not empty
        self._unseen = np.zeros(n)  # vehicles expected to arrive since its readings last changed
        self._expected = np.zeros(n)  # vehicles expected to arrive in the coming second
        self.feeds = np.full(n, -1, dtype=np.int64)  # the intersection an incoming lane feeds, else -1
        self.feeds[layout.mov_in] = layout.mov_int
        edges: dict[str, int] = {}
        self.edge = np.array([edges.setdefault(lane.rsplit("_", 1)[0], len(edges)) for lane in layout.lanes])
        self.n_edges = len(edges)
        leads_to: list[set[int]] = [set() for _ in range(n)]
        for lane, out in zip(layout.mov_in.tolist(), layout.mov_out.tolist(), strict=True):
            leads_to[lane].add(int(self.edge[out]))
        alike: dict[tuple[int, tuple[int, ...]], int] = {}
        keys = [(int(e), tuple(sorted(d))) for e, d in zip(self.edge, leads_to, strict=True)]
        self.alike = np.array([alike.setdefault(key, len(alike)) for key in keys])  # same edge, same way on
        self.n_alike = len(alike)
        # A vehicle counted at a stop line enters one of the lanes its lane's movements lead to, which one its route
        # decides: each is sent an even part (a lane's learned share of what it is sent absorbs the real split).
        movements = np.bincount(layout.mov_in, minlength=n)
        self._mov_weight = 1.0 / np.maximum(movements[layout.mov_in], 1)
        self.fed = np.bincount(layout.mov_out, minlength=n) > 0  # some signal of ours sends vehicles to it
        lanes_on_edge = np.bincount(self.edge)[self.edge]
        # What a lane's arrivals are weighed against: what our signals send it; else what arrives on the other lanes
        # of its edge (traffic comes in bursts, on all the lanes of a road at once); else the clock.
        self._by_siblings = ~self.fed & (self.feeds >= 0) & (lanes_on_edge > 1)
        self._prior = np.where(self._by_siblings, 1.0 / np.maximum(lanes_on_edge - 1, 1), 1.0)
        self._group = np.where(self.feeds >= 0, self.feeds, layout.n_intersections)  # exit lanes: one group
        self._recent = np.zeros(layout.n_intersections + 1)  # per group: arrivals per lane and second, recently
        self._recent_weight = 0.0
        self._learned = np.zeros((6, n))  # rows ARRIVED ... REFERENCE, up to each lane's last count
        self._pending = np.zeros((6, n))  # the same since then
        self._last_halting = np.zeros(n)
        self._last_backlog = np.zeros(n)
        self._leave = np.zeros(n)  # the model's departures in the last step
        self._clock = np.ones(n, dtype=bool)  # lanes whose silence is judged by the clock
        self.queue = np.zeros(n)  # the queue model: the halting count while the lane's detector shows it alive
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
        vehicles = obs.lane("vehicles") if obs.vehicles is not None else obs.lane("halting")
        last = self._last_vehicles if self._last_vehicles is not None else vehicles
        jump = np.abs(vehicles - last) > self._max_jump
        self._last_vehicles = vehicles
        for code, bad in ((3, jump), (2, over), (1, missing)):  # the last one named wins
            self.reason[bad] = code
            self._bad_until[bad] = now + LATCH_S
        step = self._count_step(obs)
        arrived = np.nan_to_num(vehicles - last + step)  # what entered the lane: what it gained and what left it
        unchanged = np.zeros_like(missing)
        if self._last is not None and self._last.shape == readings.shape:
            unchanged = (readings == self._last).all(axis=0) & (step == 0)
        self._last = readings
        alive = ~unchanged & ~missing
        self._unchanged_since = np.where(unchanged, self._unchanged_since, now)
        still = now - self._unchanged_since
        self._unseen = np.where(alive, 0.0, self._unseen + self._expected)
        filled = unchanged & (readings > 0).any(axis=0)
        green = self._green(obs)
        self._stuck_green = np.where(filled & (self.feeds >= 0), self._stuck_green + green, 0.0)
        stuck = filled & (still >= STUCK_S)
        stuck_green = self._stuck_green >= STUCK_GREEN_S
        low = np.nan_to_num(obs.lane("halting"), nan=np.inf) < SILENT_BELOW * self.capacity
        # Vehicles seen sent to a lane are firmer evidence than its mean rate on the clock (traffic comes in bursts).
        long_enough = still >= np.where(self._clock, SILENT_CLOCK_S, SILENT_MIN_S)
        silent = low & long_enough & (self._unseen >= SILENT_COUNT)
        self.suspect = low & (self._unseen >= SUSPECT_COUNT)
        for code, bad in ((5, silent), (6, stuck_green), (4, stuck)):
            self.reason[bad] = code
        frozen = stuck | stuck_green | silent
        self.faulty = (now < self._bad_until) | frozen
        self._window.append(readings)
        with warnings.catch_warnings():  # a lane missing through the whole window: NaN, as it should be
            warnings.simplefilter("ignore", RuntimeWarning)
            lowest = np.nanmin(np.stack(self._window), axis=0)
        self.lowest = dict(zip(present, lowest, strict=True))
        self.filtered = self.faulty & ~frozen & ~missing
        self._model(obs, green, step, arrived, alive)

    def _green(self, obs: Observation) -> NDArray[np.float64]:
        """Per lane: 1 where the green shown serves one of its movements, or it leads into no signal of ours (a way
        out of the map, flowing freely), else 0."""
        lay = self.layout
        on = np.zeros(len(lay.mov_in))
        on[lay.serve_mov[obs.phase[self._pair_int] == self._pair_local]] = 1.0
        served = np.bincount(lay.mov_in, weights=on, minlength=len(lay.lanes)) > 0
        return np.where((self.feeds < 0) | served, 1.0, 0.0)

    def _count_step(self, obs: Observation) -> NDArray[np.float64]:
        """What each lane's stop-line count grew by since the last step (0 where unknown)."""
        if obs.passed is None:
            return np.zeros(len(self.layout.lanes))
        passed = obs.passed
        last = self._last_passed if self._last_passed is not None else passed
        self._last_passed = np.where(np.isnan(passed), last, passed)
        return np.nan_to_num(np.maximum(passed - last, 0.0))

    def _sent(self, departed: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per lane: the vehicles sent to it by lanes that `departed` that many in this step."""
        counted = departed[self.layout.mov_in] * self._mov_weight
        return np.asarray(np.bincount(self.layout.mov_out, weights=counted, minlength=len(departed)), dtype=float)

    def share(self) -> NDArray[np.float64]:
        """Per lane: what arrives on it for each vehicle that arrives in its reference (sent to it by our signals,
        or arriving on its edge's other lanes), learned while healthy, starting from an even share as if
        `SHARE_PRIOR` reference vehicles had been seen."""
        arrived, reference = self._learned[ARRIVED], self._learned[REFERENCE]
        return np.asarray((np.maximum(arrived, 0.0) + SHARE_PRIOR * self._prior) / (reference + SHARE_PRIOR))

    def discharge(self) -> NDArray[np.float64]:
        """Per lane: vehicles a second it discharges while a green serves it, learned while it had a queue and was
        healthy (at the saturation flow before `RATE_HISTORY_S` of that, and on exits, which flow freely)."""
        served, seconds = self._learned[SERVED_COUNT], self._learned[SERVED_SECONDS]
        measured = (seconds >= RATE_HISTORY_S) & (self.feeds >= 0)
        rate = np.divide(served, seconds, out=np.zeros_like(served), where=measured)
        return np.where(measured, np.minimum(rate, SATURATION_FLOW_VEH_S), SATURATION_FLOW_VEH_S)

    def _model(
        self,
        obs: Observation,
        green: NDArray[np.float64],
        step: NDArray[np.float64],
        arrived: NDArray[np.float64],
        alive: NDArray[np.bool_],
    ) -> None:
        """Learn each healthy lane's rates, and advance the queue model one step.

        The rates are learned from healthy stretches that end in a count: what a lane counted up to its last
        count is kept, the seconds since then wait for its next count and are dropped if it is found faulty
        first (a stuck or silent detector reads healthy until it is found out, and would teach the model a lane
        that never discharges). The model runs on every lane and is reset to the reading while the lane's
        detector shows it alive (a reading or the count changed): a lane found faulty after readings that
        stood still starts from its last live reading plus what the model says arrived and left in the
        meantime, not from the frozen value."""
        n = len(step)
        healthy = ~self.faulty & (~np.isnan(obs.passed) if obs.passed is not None else np.zeros(n, dtype=bool))
        groups = len(self._recent)
        lanes = np.bincount(self._group[healthy], minlength=groups)
        seen = lanes > 0
        total = np.bincount(self._group[healthy], weights=arrived[healthy], minlength=groups)
        per_lane = np.divide(total, lanes, out=np.zeros(groups), where=seen)
        self._recent_weight = min(self._recent_weight + 1.0, TREND_S)  # the plain mean over the first TREND_S
        self._recent = np.where(seen, self._recent + (per_lane - self._recent) / self._recent_weight, self._recent)
        # Sent by the upstream lanes: their counts where trusted, the model's departures where not.
        sent = self._sent(np.where(self.faulty, self._leave, step))
        trusted_sent = self._sent(np.where(self.faulty, 0.0, step))
        on_edge = np.where(healthy, np.maximum(arrived, 0.0), 0.0)
        siblings = np.bincount(self.edge, weights=on_edge, minlength=self.n_edges)[self.edge] - on_edge
        healthy_siblings = np.bincount(self.edge, weights=healthy, minlength=self.n_edges)[self.edge] - healthy > 0
        by_siblings = self._by_siblings & healthy_siblings
        reference = np.where(self.fed, trusted_sent, siblings)
        counted = healthy & (step > 0)
        serving = healthy & (green > 0) & (self._last_halting > 0)
        self._pending += np.where(
            healthy,
            np.stack([arrived, np.ones(n), np.where(serving, step, 0.0), serving, per_lane[self._group], reference]),
            0.0,
        )
        self._learned += np.where(counted, self._pending, 0.0)
        self._pending[:, counted | self.faulty] = 0.0
        learned = self._learned
        discharge = self.discharge()
        # Arrivals: a lane's share of its reference now (platoons and bursts included). A lane with no reference
        # (an entry road of one lane, or whose other lanes are faulty too): its share of its group's arrivals (the
        # lanes into its intersection), learned while healthy, times the group's recent arrivals (demand changes
        # within an hour, and a network that starts empty counts little in its first minutes; shares change less),
        # never below the group's recent mean (a lane modelled too empty is starved, one modelled too full only
        # gets a green it did not need).
        share = self.share()
        group_share = (np.maximum(learned[ARRIVED], 0.0) + SHARE_PRIOR) / (learned[GROUP_ARRIVED] + SHARE_PRIOR)
        recent = self._recent[self._group]
        self._clock = ~self.fed & ~by_siblings
        clock_rate = group_share * recent
        rate = np.where(self.fed, share * sent, np.where(by_siblings, share * siblings, np.maximum(clock_rate, recent)))
        # The evidence the silence check weighs, on lanes into our signals that have seen traffic (a lane nobody
        # uses is silent, and trusted): what arrived in the reference, else the clock.
        seen_traffic = (learned[SECONDS] >= RATE_HISTORY_S) & (learned[ARRIVED] >= 1.0)
        expected = np.where(self._clock, clock_rate, share * reference)
        self._expected = np.where((self.feeds >= 0) & seen_traffic, expected, 0.0)
        leave = np.minimum(self.queue + rate, green * discharge)
        modelled = np.clip(self.queue + rate - leave, 0.0, self.capacity)
        self._leave = leave
        halting = np.nan_to_num(obs.lane("halting"))
        live = np.where(self.filtered, self.lowest["halting"], halting)
        self.queue = np.where((healthy & alive) | self.filtered, live, modelled)
        self._last_halting = halting
        if obs.backlog is not None:
            self._last_backlog = np.where(healthy & alive, obs.backlog, self._last_backlog)
        passed = obs.passed if obs.passed is not None else np.full(n, np.nan)
        self.model_passed = np.where(self.faulty | np.isnan(passed), self.model_passed + leave, passed)

    def has_sibling(self) -> NDArray[np.bool_]:
        """Per lane: it has a healthy twin lane (on its edge, leading the same ways)."""
        return np.asarray(self._healthy_in(self.alike, self.n_alike)[self.alike] > 0)

    def _healthy_in(self, group: NDArray[np.int64], n: int) -> NDArray[np.float64]:
        return np.bincount(group, weights=(~self.faulty).astype(float), minlength=n).astype(np.float64)

    def _mean_healthy(self, values: NDArray[np.float64], group: NDArray[np.int64], n: int) -> NDArray[np.float64]:
        """Per lane: the mean of `values` over the healthy lanes of its group (0 where it has none)."""
        healthy = self._healthy_in(group, n)
        total = np.bincount(group, weights=np.where(self.faulty, 0.0, values), minlength=n)
        return np.divide(total, healthy, out=np.zeros(n), where=healthy > 0)[group]

    def clean(self, obs: Observation) -> Observation:
        """`obs` with every faulty lane's readings replaced (see the module docstring): by its twin lanes', else
        its lowest recent reading, else the queue model's (the stop-line count always by the model's)."""
        if not self.faulty.any():
            return obs
        sibling = self.has_sibling()
        edge_sibling = self._healthy_in(self.edge, self.n_edges)[self.edge] > 0
        model = {
            "vehicles": self.queue,
            "halting": self.queue,
            "occupancy": np.minimum(1.0, self.queue * JAM_SPACING_M / self.layout.lane_length),
        }
        changed: dict[str, Any] = {}
        for name, value in model.items():
            seen = getattr(obs, name)
            if seen is not None:
                value = np.where(self.filtered, self.lowest.get(name, value), value)
                value = np.where(sibling, self._mean_healthy(seen, self.alike, self.n_alike), value)
                changed[name] = np.where(self.faulty, value, seen)
        if obs.passed is not None:
            changed["passed"] = np.where(self.faulty, self.model_passed, obs.passed)
        if obs.backlog is not None:
            value = np.where(edge_sibling, self._mean_healthy(obs.backlog, self.edge, self.n_edges), self._last_backlog)
            changed["backlog"] = np.where(self.faulty, value, obs.backlog)
        return dataclasses.replace(obs, **changed)

    def read_as(self, lane: int) -> str:
        """What a faulty lane reads as, in words."""
        if self.has_sibling()[lane]:
            return "its healthy twin lanes (same edge, same way on)"
        if self.filtered[lane]:
            return f"its lowest reading of the last {FILTER_S} s"
        return "the queue model"

    def unknown(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Lane readings with the faulty and the suspect lanes marked unknown (NaN), for the safety guard: it
        serves a lane it cannot see within its max red."""
        return np.where(self.faulty | self.suspect, np.nan, values)


class DetectorSupervisor:
    """A controller behind `DetectorHealth`, with the fixed-time fallback per intersection."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.fallback_controller = FixedTime()
        self.requires = controller.requires | HEALTH_FIELDS | self.fallback_controller.requires
        self.health: DetectorHealth | None = None
        self.fallback = np.zeros(0, dtype=bool)
        self._fallback_steps = 0.0
        self._faulty_steps = 0.0  # the share of lanes judged faulty, summed over steps
        self._steps = 0

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.controller.reset(layout, position, seed)
        self.fallback_controller.reset(layout, position, seed)
        self.health = DetectorHealth(layout)
        self.fallback = np.zeros(layout.n_intersections, dtype=bool)
        self._fallback_steps = 0.0
        self._faulty_steps = 0.0  # the share of lanes judged faulty, summed over steps
        self._steps = 0

    @property
    def checked(self) -> DetectorHealth:
        if self.health is None:
            raise RuntimeError("DetectorSupervisor: reset() must be called before decide()")
        return self.health

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        health = self.checked
        obs = obs.gathered()  # the checks judge whole arrays
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
        self._faulty_steps += float(health.faulty.mean()) if len(health.faulty) else 0.0
        self._steps += 1
        return np.where(self.fallback, fixed, requests)

    def guard_inputs(self, obs: Observation) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Waiting (`Observation.waiting`) and stop-line counts for the guard, faulty lanes unknown."""
        health = self.checked
        obs = obs.gathered()
        passed = None if obs.passed is None else health.unknown(obs.passed)
        return health.unknown(obs.waiting()), passed

    def faulty_lanes(self) -> dict[str, str]:
        """Lane id -> why its detector is not trusted, for the lanes judged faulty now."""
        health = self.checked
        return {health.layout.lanes[i]: REASONS[health.reason[i]] for i in np.flatnonzero(health.faulty).tolist()}

    def explain(self, k: int) -> str:
        health = self.checked
        lay = health.layout
        own = np.zeros(len(lay.lanes), dtype=bool)
        own[lay.mov_in[lay.mov_int == k]] = True
        lanes = np.flatnonzero(own & health.faulty).tolist()
        named = ", ".join(
            f"{lay.lanes[i]} ({REASONS[health.reason[i]]}; read as {health.read_as(i)})" for i in lanes[:4]
        )
        if self.fallback[k]:
            return (
                f"fixed-time fallback: more than half of the approach lanes have faulty detectors: {named}; "
                f"{self.fallback_controller.explain(k)}"
            )
        text = self.controller.explain(k)
        if lanes:
            text += f"; faulty detectors: {named}"
        doubted = np.flatnonzero(own & health.suspect & ~health.faulty).tolist()
        if doubted:
            text += (
                f"; reading empty while vehicles were due: {', '.join(lay.lanes[i] for i in doubted[:4])} "
                "(the guard serves them within max red)"
            )
        return text

    def stats(self) -> dict[str, float]:
        health = self.checked
        return {
            **self.controller.stats(),
            "faulty_detectors": float(health.faulty.sum()),
            "faulty_share": round(self._faulty_steps / self._steps, 4) if self._steps else 0.0,
            "fallback_share": round(self._fallback_steps / self._steps, 4) if self._steps else 0.0,
        }
