"""The AI controller: one shared learned policy for every intersection of any city, in NumPy.

Representation (in the spirit of FRAP / MPLight): a policy never sees "intersection 7" or "phase 3",
only *movements* and the *greens* that serve them, so one set of weights fits 3-, 4- and 5-way
junctions with 2-8 greens and any lane count:

- per movement m: queue on its incoming lane, moving (approaching) vehicles there, queue on its
  outgoing lane, occupancy of its outgoing lane (spill-back; libsumo gives a fraction in [0, 1]),
  all scaled to O(1);
- a shared movement encoder phi (2-layer MLP) maps each movement to an embedding; a green's embedding
  is the sum over the movements it serves (order-free, any count);
- a shared green head scores each green from its embedding, whether it is the current green and
  how long it has run; plus a learned multiple of the green's max-pressure (the skip connection makes
  the untrained policy a soft max-pressure and lets learning be a correction to it);
- per intersection, a masked softmax over its own greens: the whole city is one batched pass.

Robustness by design (published learners are unstable, e.g. RESCO's MPLight on cologne3 reached 84 s
in its best and 747 s in its last episode):
- every request goes through the safety guard (min green, transitions, conflicts, max-red bound);
- out-of-distribution inputs (a movement feature beyond `ood_factor` x the largest seen in training,
  or anything non-finite) make that intersection fall back to the anchor rule, Advanced-MP
  (`adaptive.AdvancedMaxPressure`, the strongest classic rule here), for that decision;
- a trust region around the anchor: the policy may pick any green whose (insertion- and
  spill-back-aware) pressure is at least `trust` x the largest pressure at that intersection, or
  keep the running green while the vehicles approaching on it reach that share; a choice outside it
  (a learned policy starving the most loaded movements, the way published learners gridlock) is
  replaced by the anchor's choice. `trust=0` lets the policy choose freely. How often each takes
  over is counted (`stats()`), and training validates with exactly this rule (`deployed_choice`);
- the policy picks a pressure, the anchor's order picks the green (`anchor_order`): among greens of
  equal pressure, the first, as Advanced-MP would. A learned score has nothing to go on there, and
  such flips alone cost cologne8 a third more delay;
- decisions are greedy (argmax) at run time, on Advanced-MP's clock per intersection (`DecisionClock`:
  once a green has run `MIN_GREEN_S`, then every `interval` seconds) but every `DECISION_INTERVAL_S` =
  2 s rather than Advanced-MP's 10: a green ends about when its queue has cleared, not up to 10 s
  later (the anchor alone on that clock: grid4x4 46.6 s against Advanced-MP's 52.8, cologne8 22.2
  against 23.8, 3 seeds). Deciding every second locked cologne3 until the guard's clearance also
  waited for vehicles crawling through the box;
- on a saturated junction a green first runs its "variable initial" (`InitialGreen`, NEMA actuated
  control's added initial): 2 s per vehicle on the longest queue it found, up to 60 s, before the policy
  may end it. Without it the AI ended greens as soon as the pressures turned and paid an intergreen each
  time: arterial4x4 784 s against SOTL's 672, bologna_joined 272 against fixed-time's 219 (its plans'
  intergreens are 5-10 s); with it, 647 and 209 (the shipped weights, trained without it). Not on greens
  that feed a short link between two junctions (see `InitialGreen`);
- an isolated junction (no signal within 1 km) decides on that 2 s clock only at a gap, where nothing
  approaches on its running green any more, and otherwise every 10 s (`GapOut`, actuated control's
  gap-out): cologne1 21.4 s against 24.5 on the 2 s clock and Advanced-MP's 22.3 (5 seeds);
- two signals joined by short links run as one, in turns (`control.pairs`): the policy picks the greens of the
  side whose turn it is, the other side clears the links. Vehicles stopped on ingolstadt21's 12.1 m links
  locked its pair of junctions for good at one seed in five (and at two of three with faulty detectors).

At run time (`AiController`) only the intersections deciding at a step are scored, and the learned part
runs in float32; a proven bound on its rounding error sends every near tie back to float64 (then, if
even float64 cannot separate it, to the full-city pass), so decisions are exactly those of the float64
full-city reference (`forward`, which `learn.model` mirrors and training uses). It reads its inputs only
at the intersections deciding (`prefetch`, `Controller.by_rows`): between decisions, none.

Weights live in a small `.npz` (see `learn.export`); torch is needed only to train.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from citysignal.control.adaptive import reach_fraction
from citysignal.control.base import Controller
from citysignal.control.pairs import ShortLinkPairs
from citysignal.control.pressure import spillback
from citysignal.errors import UserError
from citysignal.network.layout import SHORT_LINK_M, Layout, served_by_every_green
from citysignal.twin.faults import lane_capacity
from citysignal.twin.observation import Observation, ProgramPosition

FloatArray = NDArray[np.float64]
FloatT = TypeVar("FloatT", np.float32, np.float64)
MOVEMENT_FEATURES = 6
GREEN_FEATURES = 2
QUEUE_SCALE = 10.0
TRUST = 0.5  # the trust region: greens scoring at least this share of the anchor's best
OOD_FACTOR = 1.5  # inputs beyond this multiple of the largest seen in training fall back to the anchor
# Ties (in features: vehicles / QUEUE_SCALE, so one vehicle is 0.1): keeping the running green beats
# an equal pressure, and among equal pressures the first green wins, as in Advanced-MP; both far below
# one vehicle, and ORDER_TIE x the most greens (8) below KEEP_TIE.
KEEP_TIE = 1e-2
ORDER_TIE = 1e-3
ANCHOR_DECIMALS = 6
MIN_GREEN_S = 10.0  # the policy leaves a green alone this long (the guard's min green may be shorter)
DECISION_INTERVAL_S = 2.0  # then it decides every this many seconds, each intersection on its own clock
INITIAL_PER_VEHICLE_S = 2.0  # a saturated junction's green runs this long per vehicle it found queued
INITIAL_CAP_S = 60.0
SATURATED = 0.1  # the share of its jam capacity a junction's incoming lanes hold halting to count as saturated
REVIEW_S = 10.0  # an isolated junction's full reviews (Advanced-MP's clock); in between it decides at a gap
REACH_M = 167.0  # Advanced-MP's detection range for vehicles approaching a green
TIME_SCALE = 60.0
BOUND_FLOOR = 0.25  # the smallest input cap the error bound is worked out for (`_error_bounds`)
CHUNK_ROWS = 2048  # movements per pass through the two movement layers: their activations stay in cache
PARAM_NAMES = ("w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4", "alpha", "wv1", "bv1", "wv2", "bv2")


def default_policy_path() -> Path:
    return Path(str(resources.files("citysignal.control") / "policies" / "ai_default.npz"))


def _run_starts(sorted_ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Where each run of equal values starts in a sorted array."""
    change = np.ones(len(sorted_ids), dtype=bool)
    change[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return np.flatnonzero(change)


def _concat_ranges(offsets: NDArray[np.int64], rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], ...]:
    """The ranges `offsets[r]:offsets[r + 1]` of the `rows`, one after another; and per row, how far its
    range moves down in the result (its shift) and its length."""
    begin = offsets[rows]
    count = offsets[rows + 1] - begin
    moved = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(count, out=moved[1:])
    shift = begin - moved[:-1]
    return np.arange(moved[-1]) + np.repeat(shift, count), shift, count


@dataclass(frozen=True)
class CityIndex:
    """Per-layout index arrays the policy needs (built once per network)."""

    serve_green: NDArray[np.int64]  # sorted: the layout lists each green's movements together
    serve_mov: NDArray[np.int64]
    green_int: NDArray[np.int64]  # sorted
    slots: NDArray[np.int64]  # (intersections x max greens) global green index, -1 = padding
    n_greens: int
    n_intersections: int
    mov_int: NDArray[np.int64]  # intersection of each movement
    local: NDArray[np.int64]  # each green's index within its intersection
    # `served_by_count` and `always_served` where known already (a subset takes its city's, filtered)
    groups: list[tuple[NDArray[np.int64], NDArray[np.int64]]] | None = field(default=None, repr=False, compare=False)
    served_always: NDArray[np.bool_] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _segments(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Greens that serve something, and where their run of serve pairs starts (`serve_green` is sorted,
        so the runs are found in one pass, not by `np.unique`'s sort)."""
        starts = _run_starts(self.serve_green)
        return self.serve_green[starts], starts

    def sum_per_green(self, per_pair: NDArray[FloatT]) -> NDArray[FloatT]:
        """Sum rows of a per-serve-pair array into one row per green (np.add.reduceat, not np.add.at:
        the pairs are grouped by green, and reduceat is an order of magnitude faster), in its dtype."""
        greens, starts = self._segments
        out = np.zeros((self.n_greens, *per_pair.shape[1:]), dtype=per_pair.dtype)
        if len(starts):
            out[greens] = np.add.reduceat(per_pair, starts, axis=0)
        return out

    @cached_property
    def always_served(self) -> NDArray[np.bool_]:
        """Per movement: whether every green of its intersection serves it (no reason to keep a green)."""
        if self.served_always is not None:
            return self.served_always
        return served_by_every_green(self.serve_mov, self.green_int, self.mov_int, self.n_intersections)

    @cached_property
    def served_by_count(self) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """The greens grouped by how many movements they serve: per group, the greens and their
        movements (count x greens: the greens' first movements, their second ones, ...)."""
        if self.groups is not None:
            return self.groups
        greens, starts = self._segments
        counts = np.diff(np.r_[starts, len(self.serve_green)])
        groups = []
        for c in np.unique(counts):
            rows = np.flatnonzero(counts == c)
            groups.append((greens[rows], self.serve_mov[starts[rows] + np.arange(c)[:, None]]))
        return groups

    def gather_sum_per_green(self, per_mov: NDArray[FloatT]) -> NDArray[FloatT]:
        """Per green, the sum of the rows of the movements it serves: `sum_per_green(per_mov[serve_mov])`
        but for rounding (another summation order), several times faster at city scale: per group of
        greens serving equally many movements, their k-th movements are gathered into one buffer and
        added, with no array per serve pair."""
        out = np.zeros((self.n_greens, *per_mov.shape[1:]), dtype=per_mov.dtype)
        for greens, movs in self.served_by_count:
            total = np.take(per_mov, movs[0], axis=0)
            row = np.empty_like(total)
            for k_th in movs[1:]:
                np.take(per_mov, k_th, axis=0, out=row)
                total += row
            out[greens] = total
        return out

    @cached_property
    def _green_starts(self) -> NDArray[np.int64]:
        return _run_starts(self.green_int)

    @cached_property
    def most_served(self) -> int:
        """The most movements any green serves."""
        return max((len(movs) for _, movs in self.served_by_count), default=1)

    @cached_property
    def _offsets(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Where each intersection's movements, greens and serve pairs start (one more entry: the ends).
        A layout lists them intersection by intersection (`Layout.from_network`), so each intersection owns
        one contiguous range of each, and the movements a green serves lie in its intersection's range."""
        n = self.n_intersections

        def starts(owner: NDArray[np.int64]) -> NDArray[np.int64]:
            out = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(owner, minlength=n), out=out[1:])
            return out

        return starts(self.mov_int), starts(self.green_int), starts(self.green_int[self.serve_green])

    @cached_property
    def _group_int(self) -> list[NDArray[np.int64]]:
        """Per group of `served_by_count`, the intersection of each green."""
        return [self.green_int[greens] for greens, _ in self.served_by_count]

    def subset(self, chosen: NDArray[np.bool_]) -> tuple[CityIndex, NDArray[np.int64], NDArray[np.int64]]:
        """The index of the `chosen` intersections alone, and the rows of their movements and of their
        greens in the city's arrays. Everything the rule computes is per intersection (an intersection's
        scores, trust region and fallback read its own movements and greens only), so a subset decides
        as the whole city would.

        Built from the chosen intersections' ranges (`_offsets`), in time proportional to the subset: a
        kept movement or green moves down by the same shift as the rest of its intersection's (at 2,500
        signals, 0.2 ms instead of the 0.3 that masks and prefix sums over the whole city took)."""
        rows = np.flatnonzero(chosen)
        mov_off, green_off, pair_off = self._offsets
        movs, mov_shift, mov_count = _concat_ranges(mov_off, rows)
        greens, green_shift, green_count = _concat_ranges(green_off, rows)
        pairs, _, pair_count = _concat_ranges(pair_off, rows)
        slots = self.slots[rows]
        new = np.arange(len(rows))
        # each intersection's shifts, for the greens of `served_by_count` (grouped across intersections)
        green_by_int, mov_by_int = np.zeros((2, self.n_intersections), dtype=np.int64)
        green_by_int[rows], mov_by_int[rows] = green_shift, mov_shift
        groups = []
        for (group_greens, group_movs), owner in zip(self.served_by_count, self._group_int, strict=True):
            kept = np.flatnonzero(chosen[owner])
            if len(kept):
                at = owner[kept]
                groups.append((group_greens[kept] - green_by_int[at], group_movs[:, kept] - mov_by_int[at]))
        sub = CityIndex(
            self.serve_green[pairs] - np.repeat(green_shift, pair_count),
            self.serve_mov[pairs] - np.repeat(mov_shift, pair_count),
            np.repeat(new, green_count),
            np.where(slots >= 0, slots - green_shift[:, None], -1),
            len(greens),
            len(rows),
            np.repeat(new, mov_count),
            self.local[greens],
            groups,
            self.always_served[movs],  # a subset keeps whole intersections: every green of each
        )
        return sub, movs, greens

    def mean_per_intersection(self, per_green: FloatArray) -> FloatArray:
        counts = np.diff(np.r_[self._green_starts, len(self.green_int)])
        return np.asarray(np.add.reduceat(per_green, self._green_starts, axis=0) / counts[:, None], dtype=np.float64)

    @classmethod
    def from_layout(cls, layout: Layout) -> CityIndex:
        counts = np.bincount(layout.green_int, minlength=layout.n_intersections)
        width = max(1, int(counts.max()))
        slots = np.full((layout.n_intersections, width), -1, dtype=np.int64)
        local = np.arange(layout.n_greens) - layout.green_start[layout.green_int]
        slots[layout.green_int, local] = np.arange(layout.n_greens)
        return cls(
            layout.serve_green,
            layout.serve_mov,
            layout.green_int,
            slots,
            layout.n_greens,
            layout.n_intersections,
            layout.mov_int,
            local,
        )


def movement_features(layout: Layout, obs: Observation, rows: NDArray[np.int64] | None = None) -> FloatArray:
    """(movements x 6) inputs of the movement encoder, each O(1):

    0 queued on the incoming lane, 1 moving towards the stop line within `REACH_M`, 2 queued on the
    outgoing lane (all / `QUEUE_SCALE`), 3 occupancy of the outgoing lane (a fraction, clipped to 1:
    SUMO counts the whole length of a vehicle that sticks out of a very short lane), 4 the queue
    continuing upstream beyond the incoming lane (`Observation.backlog`, / `QUEUE_SCALE`), 5 the
    outgoing lane is full of queued vehicles (spill-back, 0 or 1).

    `rows`: only these movements, in this order (the rows of the whole city's array, computed alone)."""
    picked = slice(None) if rows is None else rows
    mov_in, mov_out = layout.mov_in[picked], layout.mov_out[picked]
    halting = obs.lane("halting")
    moving = (obs.at("vehicles", mov_in) - halting[mov_in]) * np.minimum(1.0, reach_fraction(layout, REACH_M, picked))
    backlog = obs.lane("backlog")[mov_in] if obs.has("backlog") else np.zeros(len(mov_in))
    return np.stack(
        [
            halting[mov_in] / QUEUE_SCALE,
            moving / QUEUE_SCALE,
            halting[mov_out] / QUEUE_SCALE,
            np.minimum(obs.at("occupancy", mov_out), 1.0),
            backlog / QUEUE_SCALE,
            spillback(layout, halting, picked).astype(np.float64),
        ],
        axis=-1,
    )


@dataclass(frozen=True)
class Anchor:
    """Per green, Advanced-MP's readings from the movement features (`of`): its insertion- and
    spill-back-aware efficient pressure (rounded, so that equal sums compare equal whatever the summation
    order); whether it is the running green that keeps going because the vehicles still moving towards its
    stop lines (on movements that not every green serves) reach the best pressure; and its score, whose
    highest value is exactly Advanced-MP's choice: the running green, just above the best pressure, while it
    keeps going; else the first green of highest pressure (`KEEP_TIE`, `ORDER_TIE`). The skip connection of
    the policy, and the trust region around it."""

    pressure: FloatArray
    keep: NDArray[np.bool_]
    scores: FloatArray

    @classmethod
    def of(cls, index: CityIndex, mov: FloatArray, green: FloatArray) -> Anchor:
        full = mov[:, 5] > 0.5
        pressure = mov[:, 0] + mov[:, 4] - mov[:, 2]
        pressure = np.where(full, np.minimum(pressure, 0.0), pressure)
        running = np.where(full | index.always_served, 0.0, mov[:, 1])
        per_green = index.sum_per_green(np.stack([pressure[index.serve_mov], running[index.serve_mov]], axis=-1))
        per_green = np.round(per_green, ANCHOR_DECIMALS)
        p, r = per_green[:, 0], per_green[:, 1]
        top = masked_logits(index, p).max(axis=1)[index.green_int]
        keep = (green[:, 0] > 0) & (r >= top)
        scores = np.where(keep, top + KEEP_TIE, p) - ORDER_TIE * index.local
        return cls(np.asarray(p), np.asarray(keep), np.asarray(scores))

    def subset(self, greens: NDArray[np.int64]) -> Anchor:
        return Anchor(self.pressure[greens], self.keep[greens], self.scores[greens])


def anchor_scores(index: CityIndex, mov: FloatArray, green: FloatArray) -> FloatArray:
    """Per green, Advanced-MP's score (`Anchor`)."""
    return Anchor.of(index, mov, green).scores


def anchor_order(index: CityIndex, anchor: Anchor, choice: NDArray[np.int64],
                 allowed: NDArray[np.bool_]) -> NDArray[np.int64]:  # fmt: skip
    """The policy picks a pressure, Advanced-MP's order picks the green: per intersection, the first of the
    `allowed` greens whose pressure equals that of `choice` (the running green where it keeps going). A
    learned score breaks no ties between greens the anchor cannot tell apart: on cologne8 every deviation
    of the v4 policy from its anchor was such a flip between equally pressed greens (331 of 11,449
    decisions), and they cost 30.2 s against the anchor's 22.2."""
    rows = np.arange(len(choice))
    pressure = masked_logits(index, anchor.pressure)
    kept = masked_logits(index, anchor.keep.astype(np.float64)) > 0
    same = allowed & ~kept & (pressure == pressure[rows, choice][:, None])
    return np.where(kept[rows, choice] | ~same.any(axis=1), choice, np.argmax(same, axis=1)).astype(np.int64)


def green_features(layout: Layout, obs: Observation) -> FloatArray:
    """(greens x 2): is it the current green, and for how long it has run (0 if not current)."""
    local = np.arange(layout.n_greens) - layout.green_start[layout.green_int]
    current = (obs.phase[layout.green_int] == local).astype(float)
    return np.stack([current, current * np.minimum(obs.time_in_phase[layout.green_int], 120.0) / TIME_SCALE], axis=-1)


def _dense_relu(x: NDArray[FloatT], w: NDArray[FloatT], b: NDArray[FloatT]) -> NDArray[FloatT]:
    """relu(x @ w + b), in place: at city scale these arrays are megabytes, and memory traffic,
    not arithmetic, is what an extra temporary costs."""
    out: NDArray[FloatT] = x @ w
    out += b
    np.maximum(out, 0.0, out=out)
    return out


def _head(
    params: dict[str, FloatArray], index: CityIndex, mov: FloatArray, green: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The learned part of each green's score, and the greens' embeddings (float64, the reference)."""
    h = _dense_relu(_dense_relu(mov, params["w1"], params["b1"]), params["w2"], params["b2"])
    emb = index.sum_per_green(h[index.serve_mov])
    z = _dense_relu(np.concatenate([emb, green], axis=-1), params["w3"], params["b3"])
    return z @ params["w4"][:, 0] + params["b4"][0], emb


@dataclass(frozen=True)
class Float32Head:
    """`_head`'s scores in float32, for the run-time controller.

    - The two movement layers take their bias inside the matrix product (an input column of ones, and
      an output of the first layer that stays 1 for the second), and run `CHUNK_ROWS` rows at a time so
      that the activations stay in cache (SUMO's step evicts everything between decisions).
    - The greens' sums take the fastest order.
    - relu is a maximum against an array of zeros, not against the scalar 0: NumPy (2.4) vectorises
      `maximum` for two arrays but not for an array and a broadcast scalar, 4x slower at these sizes
      (0.3 of the 1.4 ms of the movement layers at 2,500 signals went to each relu).

    `head_error_bound` holds throughout: each output is one rounded sum of the same products and bias.
    (Scoring equal movement rows once, found by sorting a key, cost more than it saved once only the
    deciding intersections are scored: at 2,500 signals, about 6,000 rows a step, the sort took 0.8 ms and
    both layers over every row 0.6 ms.)"""

    w1: NDArray[np.float32]  # (features + 1) x (hidden + 1): [w1 | 0; b1 | 1]
    w2: NDArray[np.float32]  # (hidden + 1) x hidden: [w2; b2]
    w3: NDArray[np.float32]
    b3: NDArray[np.float32]
    w4: NDArray[np.float32]  # hidden
    b4: np.float32
    zeros: NDArray[np.float32]  # CHUNK_ROWS x (hidden + 1), flat: what relu compares with

    @classmethod
    def of(cls, params: dict[str, FloatArray]) -> Float32Head:
        features, hidden = params["w1"].shape
        w1 = np.zeros((features + 1, hidden + 1), dtype=np.float32)
        w1[:features, :hidden], w1[features, :hidden], w1[features, hidden] = params["w1"], params["b1"], 1.0
        w2 = np.vstack([params["w2"], params["b2"][None, :]]).astype(np.float32)
        f32 = {k: params[k].astype(np.float32) for k in ("w3", "b3", "w4", "b4")}
        zeros = np.zeros(CHUNK_ROWS * (hidden + 1), dtype=np.float32)
        return cls(w1, w2, f32["w3"], f32["b3"], f32["w4"][:, 0], f32["b4"][0], zeros)

    def __call__(self, index: CityIndex, mov: FloatArray, green: FloatArray) -> NDArray[np.float32]:
        emb = index.gather_sum_per_green(self._movement_layers(mov))
        z = _dense_relu(np.concatenate([emb, green.astype(np.float32)], axis=-1), self.w3, self.b3)
        out: NDArray[np.float32] = z @ self.w4 + self.b4
        return out

    def _movement_layers(self, mov: FloatArray) -> NDArray[np.float32]:
        n = len(mov)
        rows = min(n, CHUNK_ROWS)
        x = np.empty((rows, mov.shape[1] + 1), dtype=np.float32)
        x[:, -1] = 1.0
        first = np.empty((rows, self.w1.shape[1]), dtype=np.float32)
        h = np.empty((n, self.w2.shape[1]), dtype=np.float32)
        for start in range(0, n, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n)
            k = stop - start
            x[:k, :-1] = mov[start:stop]
            np.matmul(x[:k], self.w1, out=first[:k])
            np.maximum(first[:k], self._zeros(first[:k]), out=first[:k])
            np.matmul(first[:k], self.w2, out=h[start:stop])
            np.maximum(h[start:stop], self._zeros(h[start:stop]), out=h[start:stop])
        return h

    def _zeros(self, like: NDArray[np.float32]) -> NDArray[np.float32]:
        return self.zeros[: like.size].reshape(like.shape)


F32_UNIT = 2.0**-24  # unit roundoff, round to nearest
F64_UNIT = 2.0**-53
GREEN_FEATURE_CAP = np.array([1.0, 120.0 / TIME_SCALE])  # the largest values `green_features` gives


def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n: a sum of n terms, in any order and with fused multiply-adds or not, is off by
    at most gamma_(n-1) x the sum of their magnitudes, and a dot product of length n by gamma_n."""
    return n * unit / (1.0 - n * unit)


def _layer_bound(
    size: FloatArray, error: FloatArray, w: FloatArray, b: FloatArray, unit: float
) -> tuple[FloatArray, FloatArray]:
    """Bounds on |y| and on |computed y - exact y| for y = x @ w + b, given |x| <= `size` and the
    computed x within `error` of the exact x; the weights are rounded to the arithmetic as well.
    relu shrinks neither, so the same bounds hold after it."""
    aw, ab = np.abs(w), np.abs(b)
    grow = 1.0 + unit  # |rounded w| <= (1 + unit) |w|
    out = size @ aw + ab
    rounding = _gamma(len(w) + 1, unit) * grow * ((size + error) @ aw + ab)
    return out, rounding + grow * (error @ aw) + unit * out


def head_error_bound(params: dict[str, FloatArray], mov_cap: FloatArray, most_served: int, unit: float) -> float:
    """How far `_head` computed in arithmetic of unit roundoff `unit` (2^-24: float32, 2^-53: float64)
    can be from the exact head of any green, for movement inputs with |x| <= `mov_cap` (per feature),
    greens serving at most `most_served` movements and the green features of `green_features`.

    A forward error bound in the way of Higham (Accuracy and Stability of Numerical Algorithms, ch. 3):
    it holds for any summation order a BLAS picks. It assumes round-to-nearest IEEE arithmetic with no
    flush of subnormals to zero (numpy's default); a product that underflows would add up to 2^-126
    per term, far below the bound's own slack."""
    size, error = np.asarray(mov_cap, dtype=np.float64), unit * np.asarray(mov_cap, dtype=np.float64)
    for w, b in (("w1", "b1"), ("w2", "b2")):
        size, error = _layer_bound(size, error, params[w], params[b], unit)
    n = float(most_served)
    size, error = n * size, n * error + _gamma(max(most_served - 1, 0), unit) * n * (size + error)
    size = np.concatenate([size, GREEN_FEATURE_CAP])
    error = np.concatenate([error, unit * GREEN_FEATURE_CAP])
    size, error = _layer_bound(size, error, params["w3"], params["b3"], unit)
    _, error = _layer_bound(size, error, params["w4"], params["b4"], unit)
    return float(error[0])


def _close_call(
    index: CityIndex, scores: FloatArray, allowed: NDArray[np.bool_], head_bound: float
) -> NDArray[np.bool_]:
    """Intersections whose choice (best allowed green) or favourite (best green) leads the runner-up by at
    most twice what a score may be off by: `head_bound` in its learned part, plus the rounding of its
    float64 sum with the anchor's part (at most float64's unit x the score, in either pass)."""
    logits = masked_logits(index, scores)
    close = np.zeros(index.n_intersections, dtype=bool)
    if logits.shape[1] < 2:
        return close
    size = np.abs(np.where(index.slots >= 0, logits, 0.0)).max(axis=1)
    slack = 2.0 * (head_bound + 2.0 * F64_UNIT * size)
    for ranked in (np.where(allowed, logits, -np.inf), logits):
        top = np.partition(ranked, -2, axis=1)
        close |= top[:, -1] - top[:, -2] <= slack
    return close


def forward(
    params: dict[str, FloatArray], index: CityIndex, mov: FloatArray, green: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Scores (greens) and values (intersections) for one city snapshot, in float64: the reference the
    controller's float32 pass is checked against (`AiController`), and what `learn.model` mirrors."""
    head, emb = _head(params, index, mov, green)
    scores = head + params["alpha"][0] * anchor_scores(index, mov, green)
    pooled = index.mean_per_intersection(emb)
    v = _dense_relu(pooled, params["wv1"], params["bv1"])
    values = v @ params["wv2"][:, 0] + params["bv2"][0]
    return scores, values


def masked_logits(index: CityIndex, scores: FloatArray) -> FloatArray:
    """(intersections x max greens) scores with padding at -inf."""
    padded = np.where(index.slots >= 0, scores[np.maximum(index.slots, 0)], -np.inf)
    return np.asarray(padded, dtype=np.float64)


def sample(logits: FloatArray, rng: np.random.Generator) -> NDArray[np.int64]:
    """One green per intersection from its softmax (Gumbel-max: exact, vectorized)."""
    gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=logits.shape)))
    choice: NDArray[np.int64] = np.argmax(logits + gumbel, axis=1).astype(np.int64)
    return choice


def log_softmax(logits: FloatArray) -> FloatArray:
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), dtype=np.float64)


def save_policy(path: Path, params: dict[str, FloatArray], feature_max: FloatArray, note: str = "") -> Path:
    """Write weights, training feature maxima and a provenance note as one small .npz."""
    arrays: dict[str, NDArray[np.generic]] = {"feature_max": feature_max, "note": np.array(note), **params}
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def load_policy(path: Path) -> tuple[dict[str, FloatArray], FloatArray]:
    """Weights and the per-feature maxima seen in training; a bad file is a one-line UserError."""
    try:
        with np.load(path) as data:
            params = {k: np.asarray(data[k], dtype=np.float64) for k in PARAM_NAMES}
            feature_max = np.asarray(data["feature_max"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc) or type(exc).__name__
        hint = "not a policy .npz written by citysignal train"
        raise UserError(f"cannot load AI policy {path}: {reason} ({hint})") from exc
    return params, feature_max


@dataclass(frozen=True)
class Deployed:
    """One decision of the deployed rule: the requests and who made each one."""

    choice: NDArray[np.int64]
    fallback: NDArray[np.bool_]  # inputs out of the training range: the anchor decided
    overruled: NDArray[np.bool_]  # the policy's favourite was outside the trust region
    allowed: NDArray[np.bool_]  # (intersections x max greens) the trust region


def ready(obs: Observation) -> NDArray[np.bool_]:
    """Intersections the policy may decide for now: in a green that has run `MIN_GREEN_S` (as Advanced-MP).
    The others hold: a change under way runs to its green, and a new green is not cut short."""
    return np.asarray((obs.phase >= 0) & (obs.time_in_phase >= MIN_GREEN_S))


class InitialGreen:
    """NEMA actuated control's "variable initial" (added initial) on a saturated junction: a green runs at
    least `per_vehicle` seconds for each vehicle that stood on the longest lane queue it serves when it began
    (`MIN_GREEN_S` at least, `cap` at most), so the queue that earned it can leave before the next
    decision may end it. Each change costs an intergreen (5-10 s on real plans), and a policy that ends a
    green the moment the pressures turn pays it too often where queues are long. Only where the
    junction's incoming lanes held at least `saturated` of their jam capacity in halting vehicles at the
    start: below that, vehicles arrive about as fast as they leave, and a long hold would only keep
    arrivals on other approaches waiting. Nor where a green sends vehicles into a short link (an exit lane
    whose road ends within `short_link` m, at the next junction where vehicles may stop:
    `Layout.short_links`; a link between two closely spaced junctions): a long hold there fills
    the link, and a vehicle that no longer fits (a 12 m bus behind a car on ingolstadt21's 12.1 m links)
    stands across the upstream box, where it and the vehicles waiting inside the two boxes lock each other
    for good, whatever the signals show (ingolstadt21 at two of five seeds without this exception). A short
    edge of a road that goes on through a pass-through junction is no such link: counted as one,
    bologna_joined's junction 233 (both greens feed the 11 m b35[1][1][0]) switched every 15 s and starved an
    entry (219.9 s against fixed-time's 218.7; 209.3 with its initial green).
    Assumes a queue discharges at about one vehicle per 2 s (a saturation flow of 1,800 veh/h per lane)
    and that the lanes are counted by their halting vehicles; a green whose exit is blocked discharges
    slower, and the policy may still hold it longer."""

    def __init__(
        self,
        layout: Layout,
        per_vehicle: float = INITIAL_PER_VEHICLE_S,
        cap: float = INITIAL_CAP_S,
        saturated: float = SATURATED,
        short_link: float = SHORT_LINK_M,
    ) -> None:
        self.layout = layout
        self.per_vehicle = per_vehicle
        self.cap = cap
        self.saturated = saturated
        short = layout.short_links(short_link)[layout.mov_out[layout.serve_mov]]
        self._into_short_link = np.bincount(layout.serve_green, weights=short, minlength=layout.n_greens) > 0
        # each green's incoming lanes and each intersection's, once, sorted: a green's (an intersection's) lanes
        # are one range, so that starting greens read only their own (`_concat_ranges`)
        pairs = np.unique(layout.serve_green * len(layout.lanes) + layout.mov_in[layout.serve_mov])
        green, self._lane = np.divmod(pairs, len(layout.lanes))
        self._green_at = np.searchsorted(green, np.arange(layout.n_greens + 1))
        owner, self._own_lane = np.divmod(np.unique(layout.mov_int * len(layout.lanes) + layout.mov_in),
                                          len(layout.lanes))  # fmt: skip
        self._owner_at = np.searchsorted(owner, np.arange(layout.n_intersections + 1))
        self._capacity = np.bincount(owner, weights=lane_capacity(layout)[self._own_lane],
                                     minlength=layout.n_intersections)  # fmt: skip

    def seconds(self, obs: Observation, starting: NDArray[np.bool_]) -> FloatArray:
        """Per intersection, how long its green runs at least (only those `starting` a green are computed)."""
        lay = self.layout
        hold = np.full(lay.n_intersections, MIN_GREEN_S)
        if self.per_vehicle <= 0.0 or not starting.any():
            return hold
        halting = obs.lane("halting")
        which = np.flatnonzero(starting)
        greens = lay.green_start[which] + obs.phase[which]
        rows, _, count = _concat_ranges(self._green_at, greens)
        queue = np.zeros(len(greens))
        np.maximum.at(queue, np.repeat(np.arange(len(greens)), count), halting[self._lane[rows]])
        rows, _, count = _concat_ranges(self._owner_at, which)
        halted = np.bincount(np.repeat(np.arange(len(which)), count), weights=halting[self._own_lane[rows]],
                             minlength=len(which))  # fmt: skip
        share = halted / np.maximum(self._capacity[which], 1.0)
        wanted = np.clip(self.per_vehicle * queue, MIN_GREEN_S, max(self.cap, MIN_GREEN_S))
        held = (share >= self.saturated) & ~self._into_short_link[greens]
        hold[starting] = np.where(held, wanted, MIN_GREEN_S)
        return hold


class GapOut:
    """Actuated control's gap-out on isolated junctions (no signalized neighbour up- or downstream within
    `network.parse.NEIGHBOUR_RANGE_M`): a full review every `review` seconds (Advanced-MP's clock), and in
    between a decision only at a gap, where nothing moves towards the stop lines of the running green any more
    (on the movements it serves that not every green serves and whose exits are not full: the vehicles
    Advanced-MP keeps a green for). At an isolated junction vehicles arrive at random, not in platoons from a
    neighbour's green, and a green that ends as soon as the pressures turn pays an intergreen for the few
    vehicles still arriving on it (cologne1: 25.6 s against Advanced-MP's 22.3 on the 2 s clock alone); a
    green held to its gap serves them first. Not between signals: there a held green fills the links towards
    the neighbours and a short link's vehicles can lock two boxes (ingolstadt21 locked at two of five seeds
    with the gap-out everywhere), and a grid's greens end best when their queues have cleared (hangzhou_4x4
    56.0 against 52.8). A lane's moving vehicles are counted over its whole length (a detector at its
    upstream end, as a long-loop actuated design would have): on long approaches the green runs longer than
    a stop-line detector's gap would allow, up to the next review."""

    def __init__(self, layout: Layout, review: float = REVIEW_S) -> None:
        self.layout = layout
        self.review = review
        self.isolated = np.array([not (i.upstream or i.downstream) for i in layout.intersections], dtype=bool)
        self._counted = ~layout.always_served

    def at_gap(self, obs: Observation, which: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Per intersection of `which`: nothing moves on the lanes its running green serves (`Anchor`'s running
        count of that green is 0)."""
        lay = self.layout
        greens = np.full(lay.n_intersections, -1)
        greens[which] = lay.green_start[which] + obs.phase[which]
        rows = (greens[lay.green_int[lay.serve_green]] == lay.serve_green) & self._counted[lay.serve_mov]
        movs = lay.serve_mov[rows]
        halting = obs.lane("halting")
        moving = (obs.at("vehicles", lay.mov_in[movs]) - halting[lay.mov_in[movs]] > 0) & ~spillback(lay, halting, movs)
        return np.asarray(which & (np.bincount(lay.mov_int[movs], weights=moving, minlength=lay.n_intersections) == 0))


class DecisionClock:
    """When each intersection decides: once it is `ready` and its green has run the `initial` green
    (`InitialGreen`; `MIN_GREEN_S` without one), and then every `interval` seconds while it stays in the
    same green, each on its own clock (Advanced-MP's without `initial`). The run-time controller and
    training (`learn.core.CityCore`) share it, so the policy learns at the moments it will decide."""

    def __init__(
        self,
        n_intersections: int,
        interval: float = DECISION_INTERVAL_S,
        initial: InitialGreen | None = None,
        gap_out: GapOut | None = None,
    ) -> None:
        self.interval = interval
        self.initial = initial
        self.gap_out = gap_out
        self.last = np.full(n_intersections, -np.inf)
        self.began = np.full(n_intersections, np.nan)  # when the green seen last began
        self.hold = np.full(n_intersections, MIN_GREEN_S)  # how long it runs before its first decision

    def due(self, obs: Observation) -> NDArray[np.bool_]:
        green = obs.phase >= 0
        began = obs.time - obs.time_in_phase
        starting = green & (began != self.began)
        if starting.any():
            self.began[starting] = began[starting]
            if self.initial is not None:
                self.hold[starting] = self.initial.seconds(obs, starting)[starting]
        due = ready(obs) & (obs.time_in_phase >= self.hold) & (obs.time - self.last >= self.interval)
        if self.gap_out is not None:
            between = due & self.gap_out.isolated & (obs.time - self.last < self.gap_out.review)
            if between.any():
                due &= ~between | self.gap_out.at_gap(obs, between)
        return due

    def mark(self, deciding: NDArray[np.bool_], now: float) -> None:
        self.last[deciding] = now


def trust_region(index: CityIndex, anchor: FloatArray, trust: float) -> NDArray[np.bool_]:
    """(intersections x max greens) the greens the policy may choose: those whose anchor score is at
    least `trust` x the intersection's best (all of them where nothing is queued, or `trust` is 0)."""
    padded = masked_logits(index, anchor)
    top = padded.max(axis=1, keepdims=True)
    allowed = (index.slots >= 0) & ((padded >= trust * top) | (top <= 0.0) | (trust <= 0.0))
    return np.asarray(allowed)


def _out_of_range(mov: FloatArray, cap: FloatArray) -> NDArray[np.bool_]:
    """Per movement: some feature is not finite, or above its `cap`. Column by column: NumPy reduces
    across a row of six features several times slower than it combines six columns."""
    ok = np.ones(len(mov), dtype=bool)
    finite = bool(np.isfinite(mov).all())  # the usual case: one check for the whole array
    for j in range(mov.shape[1]):
        column = mov[:, j]
        ok &= column <= cap[j] if finite else np.isfinite(column) & (column <= cap[j])
    return ~ok


def _feature_caps(mov: FloatArray) -> FloatArray:
    """The largest magnitude of each feature (column by column, as `_out_of_range`)."""
    return np.array([np.abs(mov[:, j]).max(initial=0.0) for j in range(mov.shape[1])])


def deployed_choice(
    index: CityIndex,
    logits: FloatArray,
    mov: FloatArray,
    green: FloatArray,
    feature_max: FloatArray,
    ood_factor: float,
    trust: float,
    anchor: Anchor | None = None,
) -> Deployed:
    """The rule that runs, in training's validation as in the controller: the policy's best green
    inside the trust region, or the first green of its pressure (`anchor_order`); the anchor's choice
    where the inputs leave the training range.
    `anchor`: `Anchor.of(index, mov, green)` where the caller has it already."""
    anchor = Anchor.of(index, mov, green) if anchor is None else anchor
    allowed = trust_region(index, anchor.scores, trust)
    favourite = np.argmax(logits, axis=1)
    choice = np.argmax(np.where(allowed, logits, -np.inf), axis=1)
    overruled = ~np.take_along_axis(allowed, favourite[:, None], axis=1)[:, 0]
    odd = _out_of_range(mov, ood_factor * feature_max)
    fallback = np.bincount(index.mov_int, weights=odd, minlength=index.n_intersections) > 0
    anchor_choice = np.argmax(masked_logits(index, anchor.scores), axis=1)
    choice = np.where(fallback, anchor_choice, anchor_order(index, anchor, choice, allowed)).astype(np.int64)
    return Deployed(choice, fallback, overruled & ~fallback, allowed)


class AiController(Controller):
    """The shipped learned policy as a controller (the model and its safeguards: the module docstring).

    An intersection decides when its `DecisionClock` is due (a green that has run its initial green, then
    every `interval` seconds; `InitialGreen` with `initial_per_vehicle` seconds per queued vehicle, 0 for
    `MIN_GREEN_S` alone, Advanced-MP's clock); the others hold. A deciding intersection gets the policy's
    best green inside the trust region around Advanced-MP (`trust`), or Advanced-MP's own choice where a
    movement's features leave the training range by more than `ood_factor`: `deployed_choice`, the rule
    training validates with. Weights come from `policy` (a `.npz` from `learn.export`; default: the shipped
    one, `default_policy_path`); inference is NumPy only. `stats()` gives the shares of decisions the
    fallback and the trust region took over; `explain(k)` why intersection k got its last request.

    Speed: only the intersections that decide at a step (`ready`) are
    scored, and the learned part of the scores runs in float32 (half the memory traffic of float64).
    Decisions stay those of the float64 full-city reference (`forward`, `deployed_choice`): the float32
    error of a score has a proven bound (`head_error_bound`), and an intersection whose best green
    leads by no more than twice that bound is scored again in float64; one where even float64 cannot
    tell its greens apart (a lead within float64's own bound) gets the reference's full-city pass."""

    name: ClassVar[str] = "ai"
    requires: ClassVar[frozenset[str]] = frozenset({"halting", "vehicles", "occupancy", "backlog"})
    by_rows: ClassVar[frozenset[str]] = frozenset({"vehicles", "occupancy"})  # only the deciding intersections'

    def __init__(
        self,
        policy: Path | None = None,
        interval: float = DECISION_INTERVAL_S,
        ood_factor: float = OOD_FACTOR,
        trust: float = TRUST,
        initial_per_vehicle: float = INITIAL_PER_VEHICLE_S,
    ) -> None:
        super().__init__()
        self.policy_path = policy or default_policy_path()
        self.params, self.feature_max = load_policy(self.policy_path)
        self.interval = interval
        self.ood_factor = ood_factor
        self.trust = trust
        self.initial_per_vehicle = initial_per_vehicle

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        super().reset(layout, position, seed)
        self.index = CityIndex.from_layout(layout)
        self._head32 = Float32Head.of(self.params)
        self.scores = np.full(layout.n_greens, np.nan)
        self.deciding = np.zeros(layout.n_intersections, dtype=bool)
        self.fallback = np.zeros(layout.n_intersections, dtype=bool)
        self.overruled = np.zeros(layout.n_intersections, dtype=bool)
        self.request = self.hold_all()
        self.counts = {"decisions": 0, "fallback": 0, "overruled": 0}
        self.rechecks = {"float64": 0, "reference": 0}  # intersections scored again (see the class docstring)
        self._last_obs: Observation | None = None
        self._bound_cache: dict[tuple[int, ...], tuple[float, float]] = {}
        initial = InitialGreen(layout, self.initial_per_vehicle)
        self.clock = DecisionClock(layout.n_intersections, self.interval, initial, GapOut(layout))
        self.pairs = ShortLinkPairs(layout)

    def prefetch(self, obs: Observation) -> None:
        """The inputs of the intersections due to decide, read by rows (`Observation.at`)."""
        due = self.clock.due(obs)
        if due.any():
            movements = due[self.lay.mov_int]
            obs.at("vehicles", self.lay.mov_in[movements])
            obs.at("occupancy", self.lay.mov_out[movements])

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        deciding = self.clock.due(obs)
        if not deciding.any():
            return self.pairs.apply(obs.time, self.hold_all())
        self.clock.mark(deciding, obs.time)
        lay = self.lay
        self.deciding = deciding
        self.request = self.hold_all()
        self.scores = np.full(lay.n_greens, np.nan)
        self.fallback = np.zeros(lay.n_intersections, dtype=bool)
        self.overruled = np.zeros(lay.n_intersections, dtype=bool)
        if self.deciding.any():
            sub, movs, greens = self.index.subset(self.deciding)
            rule, scores = self._rule(sub, movement_features(lay, obs, movs), green_features(lay, obs)[greens])
            if rule is None:  # a tie even float64 cannot settle: the reference's own full-city pass
                self.rechecks["reference"] += int(self.deciding.sum())
                rule, scores = self.reference(obs)
                on = self.deciding
                rule = Deployed(rule.choice[on], rule.fallback[on], rule.overruled[on], rule.allowed[on])
                scores = scores[greens]
            self.scores[greens] = scores
            self.request[self.deciding] = rule.choice
            self.fallback[self.deciding] = rule.fallback
            self.overruled[self.deciding] = rule.overruled
        self.counts["decisions"] += int(self.deciding.sum())
        self.counts["fallback"] += int(self.fallback.sum())
        self.counts["overruled"] += int(self.overruled.sum())
        self._last_obs = obs.as_read()  # `explain` reads what the decision saw, after the twin moved on
        return self.pairs.apply(obs.time, self.request)

    def _rule(self, index: CityIndex, mov: FloatArray, green: FloatArray) -> tuple[Deployed | None, FloatArray]:
        """The deployed rule for the intersections of `index` (features in their rows), and the scores;
        None where some intersection's choice is a tie within float64's error bound."""
        finite = bool(np.isfinite(mov).all())
        clean = mov if finite else np.nan_to_num(mov)
        anchor = Anchor.of(index, mov, green)
        # the reference scores the cleaned features; the rule's anchor reads the raw ones (they differ
        # only at intersections whose non-finite inputs hand the decision to the anchor anyway)
        scored_anchor = anchor.scores if finite else anchor_scores(index, clean, green)
        alpha = self.params["alpha"][0]
        head = self._head32(index, clean, green)
        scores = head.astype(np.float64) + alpha * scored_anchor
        rule = deployed_choice(index, masked_logits(index, scores), mov, green, self.feature_max, self.ood_factor,
                               self.trust, anchor)  # fmt: skip
        # the largest inputs the learned part saw where it counts (not where the anchor decided): within
        # the training range there, so no larger than `ood_factor` x its maxima
        in_range = self.ood_factor * self.feature_max
        if finite and mov.min() >= 0.0:
            cap = np.minimum([mov[:, j].max(initial=0.0) for j in range(mov.shape[1])], in_range)
        else:
            cap = _feature_caps(clean[~rule.fallback[index.mov_int]])
        bound, bound64 = self._error_bounds(cap, index.most_served)
        unsure = ~rule.fallback & _close_call(index, scores, rule.allowed, bound + bound64)
        if not unsure.any():
            return rule, scores
        self.rechecks["float64"] += int(unsure.sum())
        sub, movs, greens = index.subset(unsure)
        head64, _ = _head(self.params, sub, clean[movs], green[greens])
        scores[greens] = head64 + alpha * scored_anchor[greens]
        again = deployed_choice(sub, masked_logits(sub, scores[greens]), mov[movs], green[greens], self.feature_max,
                                self.ood_factor, self.trust, anchor.subset(greens))  # fmt: skip
        if _close_call(sub, scores[greens], again.allowed, 2.0 * bound64).any():
            return None, scores
        choice, overruled = rule.choice.copy(), rule.overruled.copy()
        choice[unsure], overruled[unsure] = again.choice, again.overruled
        return Deployed(choice, rule.fallback, overruled, rule.allowed), scores

    def _error_bounds(self, cap: FloatArray, most_served: int) -> tuple[float, float]:
        """`head_error_bound` in float32 and in float64 for inputs up to `cap`, each cap raised to a power of
        two first (at least `BOUND_FLOOR`): the bound grows with every cap, so it holds for the inputs below;
        looser (up to twice the cap, more below the floor: a few more near ties re-scored), and the raised caps
        repeat from step to step, so each is worked out once per run."""
        _, exponent = np.frexp(np.maximum(cap, BOUND_FLOOR))  # cap = m 2^e with 0.5 <= m < 1, exactly: 2^e >= cap
        key = (most_served, *exponent.tolist())
        if key not in self._bound_cache:
            raised = np.ldexp(1.0, exponent)
            self._bound_cache[key] = (head_error_bound(self.params, raised, most_served, F32_UNIT),
                                      head_error_bound(self.params, raised, most_served, F64_UNIT))  # fmt: skip
        return self._bound_cache[key]

    def reference(self, obs: Observation) -> tuple[Deployed, FloatArray]:
        """The rule and scores of every intersection (ready or not) by the float64 full-city pass, which
        `decide` reproduces for the ready ones."""
        mov, green = movement_features(self.lay, obs), green_features(self.lay, obs)
        scores, _ = forward(self.params, self.index, np.nan_to_num(mov), green)
        logits = masked_logits(self.index, scores)
        return deployed_choice(self.index, logits, mov, green, self.feature_max, self.ood_factor, self.trust), scores

    def stats(self) -> dict[str, float]:
        """Shares of intersection decisions taken over by the fallback and by the trust region."""
        n = max(self.counts["decisions"], 1)
        return {"ai_fallback_rate": self.counts["fallback"] / n, "ai_trust_takeover_rate": self.counts["overruled"] / n}

    def explain(self, k: int) -> str:
        lay = self.lay
        obs = self._last_obs
        if obs is None:
            return "AI: no decision yet"
        pair = self.pairs.explain(k)
        if pair:
            return f"AI: this junction {pair}"
        if not self.deciding[k]:
            gap_out = self.clock.gap_out
            isolated = gap_out is not None and bool(gap_out.isolated[k])
            gap = (f"; or vehicles still approached on the green between this isolated junction's reviews every "
                   f"{REVIEW_S:.0f} s (gap-out)") if isolated else ""  # fmt: skip
            return (f"AI held the signal at its last decision (t = {obs.time:.0f} s): a change was under way or "
                    f"the green had not yet run its initial {self.clock.hold[k]:.0f} s (at least "
                    f"{MIN_GREEN_S:.0f} s, longer for the queue a saturated junction found when it began)"
                    + gap)  # fmt: skip
        start, n = int(lay.green_start[k]), len(lay.intersections[k].greens)
        chosen = int(self.request[k])
        scores = self.scores[start : start + n]
        others = [g for g in range(n) if g != chosen]
        parts = [f"AI chose green {chosen}: {green_in_words(lay, obs, k, chosen)}"]
        if others:
            alt = max(others, key=lambda g: scores[g])
            parts.append(f"best alternative green {alt}: {green_in_words(lay, obs, k, alt)}")
        if self.fallback[k]:
            parts.append("detector inputs were outside the range seen in training, so Advanced-MP decided")
        elif self.overruled[k]:
            parts.append(f"the policy's pick left the heaviest queues waiting (below {self.trust:.0%} of the largest "
                         "pressure), so Advanced-MP's green was taken")  # fmt: skip
        return "; ".join(parts)


def green_in_words(layout: Layout, obs: Observation, k: int, g: int) -> str:
    """What a green would serve, in traffic terms: its approaches by edge name, vehicles queued and
    approaching there, and exits it would send traffic into that are full (spill-back)."""
    rows = layout.serve_mov[layout.serve_green == layout.green_start[k] + g]
    lanes = np.unique(layout.mov_in[rows])
    halting, vehicles = obs.lane("halting"), obs.lane("vehicles")
    edges = sorted({layout.lanes[i].rsplit("_", 1)[0] for i in lanes})
    blocked = rows[spillback(layout, halting)[rows]]
    full = sorted({layout.lanes[layout.mov_out[m]].rsplit("_", 1)[0] for m in blocked})
    text = (f"{halting[lanes].sum():.0f} queued and {(vehicles - halting)[lanes].sum():.0f} approaching on "
            f"{', '.join(edges) or 'no approach'}")  # fmt: skip
    if full:
        text += f" (exit full: {', '.join(full)})"
    return text


class AiWithoutTrustRegion(AiController):
    """The shipped policy with the trust region switched off (`trust=0`): the ablation that shows what
    the trust region is worth. The out-of-range fallback and the guard still apply."""

    name: ClassVar[str] = "ai_free"

    def __init__(
        self, policy: Path | None = None, interval: float = DECISION_INTERVAL_S, ood_factor: float = OOD_FACTOR
    ) -> None:
        super().__init__(policy, interval, ood_factor, trust=0.0)
