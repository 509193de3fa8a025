"""The detector fault model: which lanes fail, when, how, and that only the faulty lanes' readings change."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bundled import bundled_layout

from citysignal.errors import UserError
from citysignal.network.layout import Layout
from citysignal.twin.faults import KINDS, NOISE, DetectorFaults, FaultSpec, lane_capacity
from citysignal.twin.observation import Observation

STEPS = 1200


def _readings(layout: Layout, t: int, rng: np.random.Generator, passed: np.ndarray) -> Observation:
    n = len(layout.lanes)
    vehicles = rng.integers(1, 4, size=n).astype(float)
    passed += rng.integers(0, 2, size=n)
    return Observation(
        time=float(t),
        phase=np.zeros(layout.n_intersections, dtype=np.int64),
        time_in_phase=np.zeros(layout.n_intersections),
        vehicles=vehicles,
        halting=vehicles - 1.0,
        occupancy=vehicles / 20.0,
        passed=passed.copy(),
        backlog=np.zeros(n),
    )


def _run(layout: Layout, spec: FaultSpec) -> tuple[DetectorFaults, list[Observation], list[Observation]]:
    faults = DetectorFaults(spec, layout, begin=0.0)
    rng = np.random.default_rng(1)
    passed = np.zeros(len(layout.lanes))
    true, seen = [], []
    for t in range(STEPS):
        obs = _readings(layout, t, rng, passed)
        copy = {f: np.array(getattr(obs, f)) for f in ("vehicles", "halting", "occupancy", "passed")}
        true.append(obs)
        seen.append(faults.apply(obs))
        for name, before in copy.items():  # the true observation is left as it was
            assert np.array_equal(getattr(obs, name), before)
    return faults, true, seen


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: FaultSpec(1.5), "between 0 and 1"),
        (lambda: FaultSpec(math.nan), "between 0 and 1"),
        (lambda: FaultSpec(0.2, "broken"), "unknown --fault-kind"),
    ],
)
def test_bad_specs_are_user_errors(spec: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        spec()  # type: ignore[operator]


def test_the_fraction_of_lanes_is_faulty_and_the_seed_decides_which() -> None:
    layout = bundled_layout("grid4x4")
    n = len(layout.lanes)
    a = DetectorFaults(FaultSpec(0.2, "mixed", 1), layout, 0.0)
    b = DetectorFaults(FaultSpec(0.2, "mixed", 1), layout, 0.0)
    c = DetectorFaults(FaultSpec(0.2, "mixed", 2), layout, 0.0)
    assert len(a.lanes) == round(0.2 * n) == len(set(a.lanes.tolist()))
    assert np.array_equal(a.lanes, b.lanes) and list(a.kind) == list(b.kind)
    assert not np.array_equal(a.lanes, c.lanes)
    assert set(a.kind) == set(KINDS)  # mixed draws every kind on a city this size
    assert len(DetectorFaults(FaultSpec(0.0), layout, 0.0).lanes) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_only_its_lanes_from_the_onset(kind: str) -> None:
    layout = bundled_layout("grid4x4")
    faults, true, seen = _run(layout, FaultSpec(0.25, kind, 3))
    lanes = faults.lanes
    healthy = np.setdiff1d(np.arange(len(layout.lanes)), lanes)
    full = lane_capacity(layout)[lanes]
    for t, (obs, out) in enumerate(zip(true, seen, strict=True)):
        for name in ("vehicles", "halting", "occupancy", "passed"):
            assert np.array_equal(getattr(out, name)[healthy], getattr(obs, name)[healthy])
        before = t < faults.onset
        for name in ("vehicles", "halting", "occupancy"):
            assert np.array_equal(getattr(out, name)[lanes][before], getattr(obs, name)[lanes][before])
    after = np.array([t >= faults.onset for t in range(STEPS)])  # (steps, faulty lanes)
    assert after[-1].all() and not after[0].all()
    v_true = np.array([o.vehicles[lanes] for o in true])
    v_seen = np.array([o.vehicles[lanes] for o in seen])
    p_seen = np.array([o.passed[lanes] for o in seen])
    if kind == "missing":
        assert np.isnan(v_seen[after]).all() and np.isnan(p_seen[after]).all()
    elif kind == "stuck":
        first = after.argmax(axis=0)
        assert np.array_equal(v_seen[-1], v_true[first, np.arange(len(lanes))])
        assert (v_seen[after] == np.broadcast_to(v_seen[-1], v_seen.shape)[after]).all()
    elif kind == "noisy":
        ratio = v_seen[after] / v_true[after]
        assert (np.abs(ratio - 1.0) <= NOISE + 1e-9).all() and ratio.std() > 0.05
        assert (np.diff(p_seen, axis=0) >= 0).all()  # a noisy count still only grows
    else:
        over = v_seen > v_true + full - 1e-9
        assert 0.3 < over[after].mean() < 0.7  # spurious full-lane readings about every other step
        assert not over[~after].any()
        assert (np.array([o.occupancy[lanes] for o in seen])[over] == 1.0).all()
