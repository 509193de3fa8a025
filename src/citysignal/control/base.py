"""The controller interface: city-wide, vectorized, seeded, explainable, and SUMO-free.

`decide(obs)` returns one request per intersection: the index of a green in that intersection's
`greens`, or `HOLD` (keep what runs). Requests go to the safety guard, never to the signals. A
controller may instead name a SUMO program type (`sumo_program`, e.g. "actuated") that SUMO runs as a
reference; the guard then monitors what SUMO shows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import HOLD
from citysignal.network.layout import Layout
from citysignal.twin.observation import Observation, ProgramPosition


class Controller(ABC):
    """A control rule for a whole city at once: one request per intersection and step (see the module docstring).

    Lifecycle: `reset(layout, position, seed)` whenever it takes over (an episode's start, a controller switch,
    a resumed snapshot; `position` says where the greens stand), then `decide(obs)` once per step (1 s) with
    that step's observation; `explain(k)` and `stats()` at any time after. Class attributes:
    - `name`: its registry name (`make_controller(name)`);
    - `requires`: the lane fields (`twin.observation.LANE_FIELDS`) `decide` reads; the loop gathers them;
    - `by_rows`: of `requires`, the fields `decide` reads only at some rows (`Observation.at`: the lanes of the
      intersections deciding), which a loop may defer (`Observation.deferred`) rather than read in full;
    - `sumo_program`: a SUMO program type run instead of deciding (e.g. "actuated"), or None.

    It keeps its own state between steps (cycle clocks, last decisions), draws randomness only from `rng`
    (seeded by `reset`, so an episode is reproducible), never imports SUMO and never writes a signal: its
    requests go to the `SafetyGuard`.
    """

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset({"halting"})
    by_rows: ClassVar[frozenset[str]] = frozenset()
    sumo_program: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.rng = np.random.default_rng(0)

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        """Start an episode on `layout`, whose programs stand at `position`."""
        self.layout = layout
        self.rng = np.random.default_rng(seed)

    @property
    def lay(self) -> Layout:
        if self.layout is None:
            raise RuntimeError(f"{self.name}: reset() must be called before decide()")
        return self.layout

    @abstractmethod
    def decide(self, obs: Observation) -> NDArray[np.int64]:
        """One request per intersection: a green index or HOLD."""

    @abstractmethod
    def explain(self, k: int) -> str:
        """Why intersection `k` got its last request, in words an operator can act on.

        Built on demand from the last decision's arrays, so deciding stays free of per-intersection
        string work."""

    def prefetch(self, obs: Observation) -> None:
        """Read now the rows of the `by_rows` fields the next `decide(obs)` will read (a loop calls it while
        observing, so that reading counts as observing and deciding stays computing). Default: none."""
        return None

    def stats(self) -> dict[str, float]:
        """Episode counters worth reporting beside the metrics (e.g. how often a fallback took over)."""
        return {}

    def hold_all(self) -> NDArray[np.int64]:
        return np.full(self.lay.n_intersections, HOLD, dtype=np.int64)
