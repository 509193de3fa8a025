"""Detector faults: what real detectors do wrong, applied to what controllers see, never to the metrics.

A fault belongs to a lane: its detectors (the lane reading and the stop-line loop) fail together. A given
fraction of the layout's lanes (incoming and outgoing, chosen with the fault seed) is faulty; each fault
starts at a random time between `ONSET_FROM_S` and `ONSET_TO_S` after the begin and lasts to the end: a
detector fails in service, not in the first minutes of a simulation that starts with empty streets (a
detector dead before its lane ever saw a vehicle cannot be told from one on an unused lane). Kinds:

- stuck: the lane reports, unchanged, the readings it had at the onset (a frozen loop or controller card;
  a lane empty at the onset reads empty from then on);
- missing: NaN (a dead loop, a lost link);
- noisy: every reading times (1 + e), e uniform in +-`NOISE` (the stop-line count by its increments, so it
  still only grows), counts at least 0, occupancy at most 1;
- chattering: in each step with probability `CHATTER_P` the loop double-triggers: the lane reads a full
  lane's worth of vehicles more than it holds (length / `JAM_SPACING_M`), occupancy 1, and one spurious
  stop-line count;
- mixed: each faulty lane gets one of the four at random.

The faulty fields are `FAULT_FIELDS` (lane readings a controller or the guard may use); the junction-box
readings and speeds are left alone. Assumes one `apply` per observed step, in time order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.errors import UserError
from citysignal.network.layout import Layout
from citysignal.twin.observation import JAM_SPACING_M, Observation

KINDS = ("stuck", "missing", "noisy", "chattering")
FAULT_KINDS = (*KINDS, "mixed")
FAULT_FIELDS = ("vehicles", "halting", "occupancy", "passed", "backlog")
COUNT_FIELDS = ("vehicles", "halting")
ONSET_FROM_S = 300.0
ONSET_TO_S = 1200.0
NOISE = 0.3
CHATTER_P = 0.5


def lane_capacity(layout: Layout) -> NDArray[np.float64]:
    """Vehicles a lane holds standing, at least one."""
    return np.maximum(1.0, np.floor(layout.lane_length / JAM_SPACING_M))


@dataclass(frozen=True)
class FaultSpec:
    """`fraction` of the lanes faulty, of `kind` (one of `FAULT_KINDS`), drawn with `seed`."""

    fraction: float
    kind: str = "mixed"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:  # also refuses NaN
            raise UserError(f"--detector-faults must be a fraction between 0 and 1, not {self.fraction}")
        if self.kind not in FAULT_KINDS:
            raise UserError(f"unknown --fault-kind '{self.kind}' (choose from: {', '.join(FAULT_KINDS)})")

    @property
    def label(self) -> str:
        return f"{self.fraction:.0%} {self.kind} faults, seed {self.seed}"


class DetectorFaults:
    """The faulty lanes of one run and the readings they give."""

    def __init__(self, spec: FaultSpec, layout: Layout, begin: float) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        n = len(layout.lanes)
        self.lanes = np.sort(rng.choice(n, size=round(spec.fraction * n), replace=False)).astype(np.int64)
        m = len(self.lanes)
        picks = rng.integers(0, len(KINDS), size=m) if spec.kind == "mixed" else np.full(m, KINDS.index(spec.kind))
        self.kind = np.array([KINDS[i] for i in picks], dtype=object)
        self.onset = begin + rng.uniform(ONSET_FROM_S, ONSET_TO_S, size=m)
        self._full = lane_capacity(layout)[self.lanes]
        self._rng = rng
        self._frozen: dict[str, NDArray[np.float64]] = {f: np.full(m, np.nan) for f in FAULT_FIELDS}
        self._passed_true: NDArray[np.float64] | None = None
        self._passed_seen = np.zeros(m)

    def by_lane(self, layout: Layout) -> dict[str, str]:
        """Lane id -> fault kind, for the faulty lanes."""
        return {layout.lanes[i]: str(k) for i, k in zip(self.lanes.tolist(), self.kind, strict=True)}

    def apply(self, obs: Observation) -> Observation:
        """The observation as the faulty detectors report it (a new object; `obs` is left as it is)."""
        obs = obs.gathered()  # deferred fields read in full: every faulty lane is spoiled
        active = self.onset <= obs.time
        mask = {k: active & (self.kind == k) for k in KINDS}
        noise = 1.0 + self._rng.uniform(-NOISE, NOISE, size=len(self.lanes))
        chatter = mask["chattering"] & (self._rng.random(len(self.lanes)) < CHATTER_P)
        changed: dict[str, Any] = {}
        for name in FAULT_FIELDS:
            true = getattr(obs, name)
            if true is None:
                continue
            values = np.array(true, dtype=np.float64)
            own = values[self.lanes]
            if name == "passed":
                seen = self._passed(own, active, noise, chatter, mask)
            else:
                seen = np.where(mask["noisy"], own * noise, own)
                if name in COUNT_FIELDS:
                    seen = np.where(chatter, seen + self._full, seen)
                elif name == "occupancy":
                    seen = np.minimum(np.where(chatter, 1.0, seen), 1.0)
            frozen = self._frozen[name]
            start = mask["stuck"] & np.isnan(frozen)
            frozen[start] = own[start]
            seen = np.where(mask["stuck"], frozen, seen)
            seen = np.where(mask["missing"], np.nan, np.maximum(seen, 0.0))
            values[self.lanes] = seen
            changed[name] = values
        return dataclasses.replace(obs, **changed)

    def _passed(
        self,
        true: NDArray[np.float64],
        active: NDArray[np.bool_],
        noise: NDArray[np.float64],
        chatter: NDArray[np.bool_],
        mask: dict[str, NDArray[np.bool_]],
    ) -> NDArray[np.float64]:
        """The cumulative stop-line count as reported: before the onset the true count, then noisy or spurious
        increments on top of what was reported so far."""
        step = true - self._passed_true if self._passed_true is not None else np.zeros_like(true)
        self._passed_true = true.copy()
        step = np.where(mask["noisy"], step * noise, step) + chatter
        self._passed_seen = np.where(active, self._passed_seen + step, true)
        return self._passed_seen
