"""An episode profiles itself in the same run: control layer vs SUMO stepping, decision latency, peak memory.

Timings are checked for consistency (parts within the whole, p50 <= p99), never against thresholds.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from citysignal.bench.episode import EpisodeResult, run_episode
from citysignal.bench.metrics import METRIC_KEYS
from citysignal.bench.report import markdown_table, summarize
from citysignal.control.ai import DECISION_INTERVAL_S
from citysignal.scenarios import resolve

PROFILE_KEYS = ("control_s", "sumo_step_s", "decide_p50_ms", "decide_p99_ms", "peak_rss_mb")


def _short(controller: str) -> EpisodeResult:
    return run_episode(resolve("cologne1", 25200, 25500), controller, 42)


@pytest.mark.parametrize("controller", ["maxpressure", "ai"])
def test_profile_of_a_controlled_run_is_consistent(controller: str) -> None:
    r = _short(controller)
    m = r.metrics
    assert set(PROFILE_KEYS) <= set(METRIC_KEYS)
    row = r.row()
    for key in PROFILE_KEYS:
        assert row[key] == m[key]
    assert m["control_s"] > 0 and m["sumo_step_s"] > 0
    assert m["control_s"] + m["sumo_step_s"] <= m["wall_s"]
    assert m["control_s"] == pytest.approx(r.timings["observe"] + r.timings["decide"] + r.timings["guard"], abs=1e-3)
    assert m["sumo_step_s"] == pytest.approx(r.timings["step"], abs=1e-3)
    # cologne1's one intersection decides at most every 10 s (max-pressure) or 2 s (the AI), not every
    # step: latency is over those decision steps only
    interval = DECISION_INTERVAL_S if controller == "ai" else 10.0
    assert 0 < m["decisions"] <= 300 / interval + 1
    assert 0 < m["decide_p50_ms"] <= m["decide_p99_ms"]
    # at least half the decision steps took p50 or more, all within the decide seconds of the run
    assert m["decide_p50_ms"] * (m["decisions"] // 2) <= r.timings["decide"] * 1e3 + 1e-2
    # the peak of this process since the episode started is at least what it holds now
    assert m["peak_rss_mb"] >= psutil.Process().memory_info().rss / 2**20 - 1


def test_sumo_run_program_has_no_decisions_but_a_control_layer() -> None:
    m = _short("actuated").metrics
    assert m["decisions"] == 0
    assert m["decide_p50_ms"] == m["decide_p99_ms"] == 0.0
    assert m["control_s"] > 0 and m["sumo_step_s"] > 0  # observe and guard monitoring still cost time


def test_peak_memory_is_the_episodes_not_the_process_lifetime() -> None:
    ballast = np.ones(400 * 2**20 // 8)  # 400 MB touched, then freed before the episode
    before = psutil.Process().memory_info().rss / 2**20
    del ballast
    m = _short("fixed").metrics
    assert m["peak_rss_mb"] < before - 200


def test_controller_counters_join_the_row() -> None:
    r = _short("ai")
    for key, value in r.controller_stats.items():
        assert r.metrics[key] == value
        assert r.row()[key] == value
    assert set(r.row()) == {"scenario", "controller", "seed", *METRIC_KEYS, *r.controller_stats}


def test_tables_show_counters_where_a_controller_has_them() -> None:
    base = dict.fromkeys(METRIC_KEYS, 1.0)
    runs = [
        EpisodeResult("city", "ai", 1, {**base, "fallback_rate": 0.25}, controller_stats={"fallback_rate": 0.25}),
        EpisodeResult("city", "ai", 2, {**base, "fallback_rate": 0.75}, controller_stats={"fallback_rate": 0.75}),
        EpisodeResult("city", "fixed", 1, dict(base)),
    ]
    rows = summarize(runs)
    assert rows[0]["fallback_rate"] == 0.5 and "fallback_rate" not in rows[1]
    lines = markdown_table(rows).splitlines()
    assert lines[0].rstrip(" |").endswith("fallback_rate")
    assert lines[2].rstrip(" |").endswith("0.5")
    assert lines[3].endswith("|  |")  # fixed-time has no such counter: an empty cell
