"""Flat array indexing of a network for city-wide vectorized control.

Every controllable intersection, lane, vehicle movement and green (phase) gets a global index, so a
controller's decision for thousands of intersections is a handful of NumPy operations:
movement -> (intersection, incoming lane, outgoing lane, signal), green -> intersection, and a
sparse (green, movement) incidence for "which movements does this green serve".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from citysignal.network.model import Intersection, Network

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
SHORT_LINK_M = 25.0  # a road that ends within this at a junction where vehicles may stop is a short link
STUB_M = 1.0  # lanes shorter than this are stubs that continue into a longer road, not short links


@dataclass(frozen=True, eq=False)
class Layout:
    """A network's controllable intersections as flat global indices, built by `from_network`; read-only.

    Index spaces: intersections (`intersections`, `ids`); lanes (every incoming and outgoing lane of a
    vehicle movement, once); movements (a vehicle movement: from an incoming lane to an outgoing lane,
    under one signal); greens (every intersection's `greens`, one intersection after another); signals
    (every intersection's signals, i.e. the characters of its state string, one intersection after another).

    Glossary of the fields:
    - `intersections`: the controllable intersections (`Network.controllable`), in index order;
    - `lanes`: lane ids, the incoming and outgoing lanes of the movements, first seen first;
    - `lane_length`: per lane, its length (m);
    - `lane_run`: per lane, the length of road it begins up to the next junction where vehicles may stop
      (m): its own length, longer where its edge continues through pass-through junctions (`Network.runs`);
    - `mov_int`: per movement, its intersection;
    - `mov_in`, `mov_out`: per movement, its incoming and its outgoing lane (into `lanes`);
    - `mov_signal`: per movement, its signal (link index) within its intersection's state string;
    - `green_int`: per green, its intersection;
    - `green_start`: per intersection, its first green: local green g of intersection k is global
      green `green_start[k] + g`;
    - `serve_green`, `serve_mov`: the (green, movement) pairs in which the green serves the movement
      (`Intersection.serve_signals`), as two parallel arrays (a sparse incidence; see `per_green`);
    - `signal_start`: per intersection, its first global signal;
    - `n_signals_total`: the signals of all intersections;
    - `box_lanes`: lanes inside junctions, each movement's first internal lane (`Movement.via`), once;
    - `mov_box`: per movement, its lane in `box_lanes`, -1 when it has none;
    - `feed_lanes`: feeder lanes (`Network.feeders`): lanes upstream whose queue continues onto the edge
      of an incoming lane;
    - `feed_to`, `feed_from`, `feed_weight`: parallel arrays of (layout lane, feeder lane, weight) pairs:
      a layout lane gets `feed_weight` (1 / the lanes of its edge) of a feeder lane's quantity
      (`from_feeders`).
    """

    intersections: tuple[Intersection, ...]
    lanes: tuple[str, ...]
    lane_length: FloatArray
    lane_run: FloatArray
    mov_int: IntArray
    mov_in: IntArray
    mov_out: IntArray
    mov_signal: IntArray
    green_int: IntArray
    green_start: IntArray  # first global green of each intersection
    serve_green: IntArray  # (green, movement) pairs: green serves movement
    serve_mov: IntArray
    signal_start: IntArray  # first global signal of each intersection
    n_signals_total: int
    box_lanes: tuple[str, ...] = ()  # lanes inside junctions: each movement's first internal lane
    mov_box: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # into box_lanes, -1 none
    # feeders (`Network.feeders`): lanes upstream whose queue continues onto an incoming lane's edge;
    # each (feed_to, feed_from) pair adds feed_weight (1 / lanes of the fed edge) of a feeder lane's
    # queue to a layout lane
    feed_lanes: tuple[str, ...] = ()
    feed_to: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    feed_from: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    feed_weight: FloatArray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_network(cls, network: Network) -> Layout:
        inters = network.controllable
        lanes: dict[str, int] = {}
        mov_int: list[int] = []
        mov_in: list[int] = []
        mov_out: list[int] = []
        mov_signal: list[int] = []
        box: dict[str, int] = {}
        mov_box: list[int] = []
        green_int: list[int] = []
        green_start: list[int] = []
        signal_start: list[int] = []
        serve_green: list[int] = []
        serve_mov: list[int] = []
        n_green = n_signal = 0
        for k, inter in enumerate(inters):
            green_start.append(n_green)
            signal_start.append(n_signal)
            first_mov = len(mov_int)
            for m in inter.vehicle_movements:
                mov_int.append(k)
                mov_in.append(lanes.setdefault(m.from_lane, len(lanes)))
                mov_out.append(lanes.setdefault(m.to_lane, len(lanes)))
                mov_signal.append(m.signal)
                mov_box.append(box.setdefault(m.via, len(box)) if m.via else -1)
            serves = inter.serve_signals
            for g in range(len(inter.greens)):
                for j, m in enumerate(inter.vehicle_movements):
                    if serves[g, m.signal]:
                        serve_green.append(n_green + g)
                        serve_mov.append(first_mov + j)
                green_int.append(k)
            n_green += len(inter.greens)
            n_signal += inter.n_signals
        lane_objs = [network.lanes[name] for name in lanes]
        feed = _feed_pairs(network, list(lanes), sorted(set(mov_in)))
        return cls(
            intersections=inters,
            lanes=tuple(lanes),
            lane_length=np.array([ln.length for ln in lane_objs], dtype=float),
            lane_run=np.array([max(ln.length, network.runs.get(ln.edge, 0.0)) for ln in lane_objs], dtype=float),
            mov_int=np.array(mov_int, dtype=np.int64),
            mov_in=np.array(mov_in, dtype=np.int64),
            mov_out=np.array(mov_out, dtype=np.int64),
            mov_signal=np.array(mov_signal, dtype=np.int64),
            green_int=np.array(green_int, dtype=np.int64),
            green_start=np.array(green_start, dtype=np.int64),
            serve_green=np.array(serve_green, dtype=np.int64),
            serve_mov=np.array(serve_mov, dtype=np.int64),
            signal_start=np.array(signal_start, dtype=np.int64),
            n_signals_total=n_signal,
            box_lanes=tuple(box),
            mov_box=np.array(mov_box, dtype=np.int64),
            feed_lanes=feed[0],
            feed_to=np.array(feed[1], dtype=np.int64),
            feed_from=np.array(feed[2], dtype=np.int64),
            feed_weight=np.array(feed[3], dtype=float),
        )

    @property
    def n_intersections(self) -> int:
        return len(self.intersections)

    @property
    def n_greens(self) -> int:
        return len(self.green_int)

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.intersections)

    @cached_property
    def incoming_lanes(self) -> IntArray:
        return np.unique(self.mov_in)

    @cached_property
    def always_served(self) -> NDArray[np.bool_]:
        """Per movement: whether every green of its intersection serves it (`served_by_every_green`)."""
        return served_by_every_green(self.serve_mov, self.green_int, self.mov_int, self.n_intersections)

    def short_links(self, limit: float = SHORT_LINK_M) -> NDArray[np.bool_]:
        """Per lane: whether it is a short link, a lane of `STUB_M` or more whose road (`lane_run`) ends within
        `limit` m at the next junction where vehicles may stop (a link between two closely spaced junctions:
        a vehicle that no longer fits stands across the junction before it)."""
        short: NDArray[np.bool_] = (self.lane_length >= STUB_M) & (self.lane_run < limit)
        return short

    @cached_property
    def _own_lanes(self) -> tuple[IntArray, IntArray]:
        pairs = np.unique(self.mov_int * len(self.lanes) + self.mov_in)
        owner, lane = np.divmod(pairs, len(self.lanes))
        return owner, lane

    def queue_per_intersection(self, halting: FloatArray) -> FloatArray:
        """Vehicles halting on each intersection's incoming lanes (each lane counted once)."""
        owner, lane = self._own_lanes
        return np.bincount(owner, weights=halting[lane], minlength=self.n_intersections).astype(np.float64)

    def from_feeders(self, per_feed_lane: FloatArray) -> FloatArray:
        """Per layout lane: its share of a quantity on the feeder lanes upstream of its edge."""
        weights = per_feed_lane[self.feed_from] * self.feed_weight
        return np.bincount(self.feed_to, weights=weights, minlength=len(self.lanes)).astype(np.float64)

    def per_green(self, per_movement: FloatArray) -> FloatArray:
        """Sum a per-movement quantity over the movements each green serves."""
        return np.bincount(self.serve_green, weights=per_movement[self.serve_mov], minlength=self.n_greens).astype(
            np.float64
        )

    def per_intersection(self, per_movement: FloatArray) -> FloatArray:
        return np.bincount(self.mov_int, weights=per_movement, minlength=self.n_intersections).astype(np.float64)

    def argmax_green(self, score: FloatArray) -> IntArray:
        """Per intersection, the local index of its highest-scoring green (first on ties)."""
        order = np.lexsort((-np.arange(self.n_greens), score, self.green_int))
        last = np.r_[self.green_start[1:], self.n_greens] - 1
        best: IntArray = order[last] - self.green_start
        return best


def served_by_every_green(
    serve_mov: IntArray, green_int: IntArray, mov_int: IntArray, n_intersections: int
) -> NDArray[np.bool_]:
    """Per movement: whether every green of its intersection serves it, as permanent right turns do in
    CityFlow conversions and on Manhattan's grid. No choice of green changes how such a movement flows, so
    its vehicles are no reason to keep a green (each (green, movement) pair is listed once)."""
    greens = np.bincount(green_int, minlength=n_intersections)[mov_int]
    served: NDArray[np.bool_] = (np.bincount(serve_mov, minlength=len(mov_int)) == greens) & (greens > 1)
    return served


def _feed_pairs(
    network: Network, lanes: list[str], incoming: list[int]
) -> tuple[tuple[str, ...], list[int], list[int], list[float]]:
    """Feeder lanes of the incoming lanes' edges, and (layout lane, feeder lane, weight) pairs."""
    by_edge: dict[str, list[str]] = {}
    for lane in network.lanes.values():
        by_edge.setdefault(lane.edge, []).append(lane.id)
    feed: dict[str, int] = {}
    to: list[int] = []
    src: list[int] = []
    weight: list[float] = []
    for row in incoming:
        edge = network.lanes[lanes[row]].edge
        for upstream in network.feeders.get(edge, ()):
            for name in by_edge.get(upstream, ()):
                to.append(row)
                src.append(feed.setdefault(name, len(feed)))
                weight.append(1.0 / len(by_edge[edge]))
    return tuple(feed), to, src, weight
