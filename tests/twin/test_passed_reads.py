"""The twin's stop-line counts, read again only where a detector may have counted since (`Twin._passed`),
equal SUMO's own count read fresh, for any rows asked at any step: on arterial4x4, whose approaches carry
traffic from the first minutes, over its detectors' day-long interval and over intervals of a minute (the
counts restart at each), and across a saved state loaded back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from bundled import bundled_layout

from citysignal.scenarios import resolve
from citysignal.twin import Twin, session

SECONDS = 600.0


@pytest.mark.parametrize("period", [session.DETECTOR_PERIOD_S, 60.0])
def test_cached_counts_equal_fresh_reads(monkeypatch: pytest.MonkeyPatch, period: float) -> None:
    monkeypatch.setattr(session, "DETECTOR_PERIOD_S", period)
    scenario = resolve("arterial4x4")
    scenario = resolve("arterial4x4", scenario.begin, scenario.begin + SECONDS)
    layout = bundled_layout("arterial4x4")
    lanes = len(layout.lanes)
    detected = set(np.asarray(layout.incoming_lanes).tolist())
    clock = np.zeros(layout.n_intersections, dtype=np.int64), np.zeros(layout.n_intersections)
    rng = np.random.default_rng(0)
    counted = {"asked": 0, "read": 0}
    restarts = 0
    most = 0.0
    saved: bytes | None = None
    with Twin(scenario, layout, fields=frozenset({"halting", "passed"}), defer=frozenset({"passed"})) as twin:
        getter = twin._binding

        def counting(domain: str, name: str) -> Callable[[str], Any]:
            fn = getter(domain, name)
            if name != "getIntervalVehicleNumber":
                return fn

            def read(detector: str) -> Any:
                counted["read"] += 1
                return fn(detector)

            return read

        monkeypatch.setattr(twin, "_binding", counting)
        fresh_count = twin._api.inductionloop.getIntervalVehicleNumber
        last = np.zeros(lanes)
        step = 0
        while not twin.done:
            obs = twin.observe(*clock)
            fresh = np.array([fresh_count(f"cs_{k}") if k in detected else 0.0 for k in range(lanes)])
            restarts += int((fresh < last).any())
            most = max(most, float(fresh.sum()))
            last = fresh
            if step % 50 == 0:
                assert np.array_equal(obs.lane("passed"), fresh), twin.time
            else:
                rows = np.flatnonzero(rng.random(lanes) < 0.5)
                counted["asked"] += sum(k in detected for k in rows.tolist())
                assert np.array_equal(obs.at("passed", rows), fresh[rows]), twin.time
            if step == 300:
                saved = twin.save_state()
            if step == 450 and saved is not None:
                twin.load_state(saved)
                last = np.zeros(lanes)
            twin.step()
            step += 1
    assert most > 50  # vehicles did pass
    assert counted["read"] < counted["asked"] / 2  # most rows asked came from the remembered counts
    if period < SECONDS:
        assert restarts > 0  # the counts did restart
