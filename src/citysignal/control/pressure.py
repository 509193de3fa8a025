"""Movement pressure, in one place, for every pressure-based controller and the AI's features.

Pressure (Varaiya 2013) of a movement: vehicles queued on its incoming lane minus those queued on its
outgoing lane. Counting *queued* (halting) vehicles only is Wu et al.'s "efficient pressure".

`aware=True` adds what the textbook pressure cannot see and where gridlock starts:
- the backlog (`Observation.backlog`): the queue that continues upstream beyond the incoming lane, on
  the edges that lead only to it (a 1 m signalized stub behind a 40 m road, as in ingolstadt7, holds
  one vehicle of a long queue) and off the map, where SUMO could not insert vehicles yet (capped at
  the lanes' jam capacity: counted in full, an endless entry queue starves the rest of the city);
- spill-back: a movement whose outgoing lane is (nearly) full of queued vehicles cannot discharge;
  a green for it only blocks the junction box, so its pressure counts as zero
  (Gregoire et al. 2013, capacity-aware back-pressure, in its simplest on/off form).

Assumes queued vehicles stand `JAM_SPACING_M` apart; a lane counts as full once its queued vehicles take
`FULL_FRACTION` of its length, and a lane shorter than one such spacing as long as one (so one queued
vehicle fills a lane of up to 9.4 m, and ingolstadt21's 12.1 m links need two).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from citysignal.network.layout import Layout
from citysignal.twin.observation import JAM_SPACING_M, Observation

FloatArray = NDArray[np.float64]
FULL_FRACTION = 0.8  # an outgoing lane this full of queued vehicles blocks its movements


def spillback(layout: Layout, halting: FloatArray, rows: NDArray[np.int64] | slice = slice(None)) -> NDArray[np.bool_]:
    """Per movement (of `rows`, default all): its outgoing lane is full of queued vehicles."""
    out = layout.mov_out[rows]
    room = np.maximum(layout.lane_length[out], JAM_SPACING_M)
    return np.asarray(halting[out] * JAM_SPACING_M >= FULL_FRACTION * room)


def movement_pressure(layout: Layout, obs: Observation, aware: bool = False) -> FloatArray:
    """Per movement: queued in minus queued out (see the module docstring for `aware`)."""
    halting = obs.lane("halting")
    queued_in = halting[layout.mov_in]
    if not aware:
        return np.asarray(queued_in - halting[layout.mov_out], dtype=np.float64)
    if obs.has("backlog"):
        queued_in = queued_in + obs.lane("backlog")[layout.mov_in]
    pressure = queued_in - halting[layout.mov_out]
    return np.asarray(np.where(spillback(layout, halting), np.minimum(pressure, 0.0), pressure), dtype=np.float64)
