"""Snapshots: the guard's state round trip, and an engine resumed from a snapshot on a real SUMO twin.

The engine runs here in a thread of the test process (libsumo, one simulation at a time), so its
`on_publish` hook runs on the twin's own thread and may read back from SUMO what it shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import libsumo
import numpy as np
import pytest
from service_helpers import wait_for

from citysignal.control import HOLD, SafetyGuard
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import resolve
from citysignal.service.engine import ControlEngine, EngineConfig, Live, Snapshot
from citysignal.service.store import AuditStore
from citysignal.twin.observation import ProgramPosition


def layout_of(name: str) -> Layout:
    sc = resolve(name, None, None)
    return Layout.from_network(load_network(sc.net_file, sc.additional_files))


def drive(guard: SafetyGuard, rng: np.random.Generator, start: float, steps: int) -> list[dict[int, str]]:
    """Random requests and queues, one step a second; the writes of each step."""
    lay = guard.layout
    n_greens = np.array([len(i.greens) for i in lay.intersections])
    writes = []
    for t in range(steps):
        requests = np.where(rng.random(lay.n_intersections) < 0.3, rng.integers(0, n_greens), HOLD)
        halting = (rng.random(len(lay.lanes)) < 0.5).astype(float)
        writes.append(guard.apply(start + t, requests, halting))
    return writes


def same(a: Any, b: Any) -> bool:
    """Equal, looking into arrays, dicts, lists and tuples."""
    if a is b:
        return True
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("name", ["grid4x4", "cologne8", "ingolstadt21"])
def test_a_restored_guard_is_the_same_guard(name: str) -> None:
    layout = layout_of(name)
    n = layout.n_intersections
    guard = SafetyGuard(layout, max_red=30.0)
    guard.start(0.0, ProgramPosition(np.zeros(n, dtype=np.int64), np.zeros(n)))
    drive(guard, np.random.default_rng(1), 1.0, 400)
    restored = SafetyGuard(layout, max_red=30.0)
    restored.restore(json.loads(json.dumps(guard.state())))  # through JSON, as stored
    for attr, value in vars(guard).items():
        if attr in ("_checked", "_looks", "_leaving"):  # caches: checked transitions, what states show and end
            continue
        assert same(value, vars(restored)[attr]), f"{attr} differs after restore"
    # and both go on identically, however long
    assert drive(guard, np.random.default_rng(2), 401.0, 300) == drive(restored, np.random.default_rng(2), 401.0, 300)
    assert restored.stats == guard.stats and guard.stats.violations == 0


def test_a_guard_state_of_another_network_is_refused() -> None:
    small = SafetyGuard(layout_of("grid4x4"))
    with pytest.raises(ValueError, match="another network"):
        SafetyGuard(layout_of("cologne8")).restore(small.state())


def run_engine(engine: ControlEngine, until: Callable[[], bool]) -> None:
    engine.start()
    try:
        wait_for(until, timeout=60, every=0.05)
    finally:
        engine.stop()
    assert engine.error is None


def test_an_engine_resumed_from_a_snapshot_continues_legally(tmp_path: Path) -> None:
    sc = resolve("grid4x4", 0, 3600)
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", "run")
    # 200x: the snapshot 5 s of wall time in lands inside the hour on any machine (at 1000x a machine that keeps
    # that pace ran the whole hour first, and the second snapshot was the next episode's first step)
    config = EngineConfig(sc, "maxpressure", speed=200, max_red=60)
    snaps: list[Snapshot] = []
    first = ControlEngine(config, network, layout, store, on_snapshot=snaps.append)
    run_engine(first, lambda: len(snaps) >= 2)  # the one after the first step, and one 5 s later
    snap = snaps[-1]
    assert snap.sim_time > 100 and snap.key == config.key and snap.sumo_state[:2] == b"\x1f\x8b"  # gzip

    seen: list[tuple[float, tuple[str, ...], list[str]]] = []

    def shown_by_sumo(live: Live) -> None:  # on the twin's thread: SUMO may be read here
        seen.append((live.time, live.shown, [libsumo.trafficlight.getRedYellowGreenState(i) for i in layout.ids]))

    second = ControlEngine(config, network, layout, store, on_publish=shown_by_sumo, resume=snap)
    run_engine(second, lambda: bool(seen) and seen[-1][0] >= snap.sim_time + 300)
    assert seen[0][0] == snap.sim_time  # not the scenario's begin
    assert all(list(guard) == sumo for _, guard, sumo in seen)  # SUMO shows exactly what the guard wrote
    live = second.live()
    assert live is not None and live.episode == snap.episode
    assert live.kpi["violations"] == 0 and live.kpi["deferred"] >= snap.guard["stats"]["deferred"]
    store.flush()
    resumed = store.events(action="twin_resumed")
    assert resumed and resumed[0]["detail"]["sim_time"] == snap.sim_time

    broken = replace(snap, sumo_state=b"not a state")
    third_seen: list[float] = []
    third = ControlEngine(config, network, layout, store, on_publish=lambda live: third_seen.append(live.time),
                          resume=broken)  # fmt: skip
    run_engine(third, lambda: len(third_seen) > 5)
    assert third_seen[0] == sc.begin  # a snapshot that does not load: from the begin, audited
    store.flush()
    unusable: list[dict[str, Any]] = store.events(action="snapshot_unusable")
    assert unusable and "did not load" in unusable[0]["detail"]["error"]
    store.close()


def test_snapshots_belong_to_one_scenario_window_and_seed() -> None:
    sc = resolve("grid4x4", 0, 3600)
    assert EngineConfig(sc, "fixed").key != EngineConfig(sc, "fixed", seed=1).key
    assert EngineConfig(sc, "fixed").key != EngineConfig(sc.with_window(0, 1800), "fixed").key
    assert EngineConfig(sc, "fixed").key == EngineConfig(sc, "maxpressure", speed=5).key  # same run, other settings
