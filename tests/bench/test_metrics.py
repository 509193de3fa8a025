"""RESCO metrics from tripinfo: arithmetic on a handwritten file, and agreement with a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citysignal.bench.metrics import METRIC_KEYS, delay_by_depart, trip_metrics
from citysignal.scenarios import demand_summary, resolve

# Attributes as SUMO 1.28 writes them with --tripinfo-output.write-unfinished/-undeparted:
# an undeparted vehicle has depart="-1" and is charged departDelay = end - scheduled depart.
TRIPINFO = """<?xml version="1.0" encoding="UTF-8"?>
<tripinfos>
    <tripinfo id="a" depart="10.00" departDelay="2.00" arrival="60.00" duration="50.00"
              waitingTime="5.00" timeLoss="8.00" vaporized=""/>
    <tripinfo id="b" depart="20.00" departDelay="0.00" arrival="80.00" duration="60.00"
              waitingTime="10.00" timeLoss="12.00" vaporized=""/>
    <tripinfo id="unfinished" depart="100.00" departDelay="1.00" arrival="-1.00" duration="200.00"
              waitingTime="20.00" timeLoss="30.00" vaporized="end"/>
    <tripinfo id="undeparted" depart="-1" departDelay="150.00" arrival="-1.00" duration="0.00"
              waitingTime="0.00" timeLoss="0.00" vaporized="end"/>
</tripinfos>
"""


@pytest.fixture()
def tripinfo(tmp_path: Path) -> Path:
    path = tmp_path / "tripinfo.xml"
    path.write_text(TRIPINFO)
    return path


def test_resco_delay_arithmetic(tripinfo: Path) -> None:
    m = trip_metrics(tripinfo)
    # timeLoss + departDelay over every vehicle, the never-inserted one included
    assert m["resco_delay"] == pytest.approx(((8 + 2) + (12 + 0) + (30 + 1) + (0 + 150)) / 4)
    assert m["not_inserted"] == 1
    assert m["arrived"] == 2
    assert m["vehicles"] == 4


def test_duration_and_waiting_cover_vehicles_that_entered(tripinfo: Path) -> None:
    m = trip_metrics(tripinfo)
    assert m["mean_duration"] == pytest.approx((50 + 60 + 200) / 3)
    assert m["mean_waiting"] == pytest.approx((5 + 10 + 20) / 3)
    assert m["max_waiting"] == 20.0
    assert m["p95_waiting"] == pytest.approx(float(np.percentile([5.0, 10.0, 20.0], 95)))
    assert m["p95_waiting"] == pytest.approx(19.0)


def test_empty_tripinfo(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_text("<tripinfos/>")
    m = trip_metrics(path)
    assert m["resco_delay"] == 0.0
    assert m["vehicles"] == 0 and m["not_inserted"] == 0 and m["arrived"] == 0


def test_delay_by_scheduled_depart(tripinfo: Path) -> None:
    # scheduled departs: a 10 - 2 = 8, b 20, unfinished 100 - 1 = 99, undeparted end - 150 = 150
    t, d = delay_by_depart(tripinfo, begin=0.0, end=300.0, bin_s=100.0)
    assert t == [0.0, 100.0]
    assert d == pytest.approx([(10 + 12 + 31) / 3, 150.0])
    t, d = delay_by_depart(tripinfo, begin=0.0, end=300.0, bin_s=300.0)
    assert t == [0.0]
    assert d == pytest.approx([203 / 4])


def test_metrics_of_a_real_episode_are_consistent() -> None:
    from citysignal.bench.episode import run_episode

    sc = resolve("cologne1", 25200, 25500)
    m = run_episode(sc, "fixed", 42).metrics
    for key in METRIC_KEYS:
        assert key in m
    in_window = demand_summary(sc)[2]
    assert in_window > 100
    assert m["vehicles"] >= in_window
    assert 0 < m["arrived"] < m["vehicles"]
    assert m["resco_delay"] > 0
    assert m["safety_violations"] == 0
    assert m["teleports"] == 0  # teleporting is off


def test_episode_counts_only_vehicles_scheduled_in_the_window() -> None:
    from citysignal.bench.episode import run_episode

    sc = resolve("cologne1", 25200, 25500)
    m = run_episode(sc, "maxpressure", 42).metrics
    assert m["vehicles"] == demand_summary(sc)[2]
