"""The restart state (operators' control state, the twin's latest snapshot) on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import math

from citysignal.service.store import AuditStore, RestartStore


def test_restart_state_round_trips_and_is_cleared(db_url: str) -> None:
    store = AuditStore(db_url, "run-1")
    restart = RestartStore(store.engine, "run-1")
    key = "k" * 32
    assert restart.load_control(key) is None and restart.load_snapshot(key) is None
    control = {"assignment": {"A0": "fixed", "B0": "maxpressure"},
               "overrides": {"B2": {"mode": "force", "green": 1, "actor": "otto", "reason": "ünïcode"}}}  # fmt: skip
    restart.save_control(key, control)
    restart.save_control(key, control)  # one row per key: saving again replaces it
    saved = restart.load_control(key)
    assert saved is not None and saved[1] == control
    state = gzip.compress(b"<snapshot/>" * 1000)
    guard = {"step_until": [math.inf, 12.0], "stats": {"refused": 3}}
    fields = {"taken_at": 1.5e9, "sim_time": 612.0, "episode": 2, "episode_steps": 611}
    restart.save_snapshot(key, {**fields, "sim_time": 1.0}, guard, b"older")
    restart.save_snapshot(key, fields, guard, state)  # the newest replaces the last
    loaded = restart.load_snapshot(key)
    assert loaded == (fields, guard, state)
    assert restart.load_control("other") is None
    restart.clear(key)
    assert restart.load_control(key) is None and restart.load_snapshot(key) is None
    store.close()
