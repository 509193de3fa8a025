"""Demand profiles: the evening peak has the documented shape and keeps the real trips."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from citysignal.errors import UserError
from citysignal.scenarios import demand_summary, resolve
from citysignal.scenarios.profiles import HOUR, get_profile, reshape
from citysignal.xmlfile import open_xml


def test_evening_peak_shape() -> None:
    p = get_profile("evening-peak")
    at = lambda h: float(p.rate(np.array([h * HOUR]))[0])  # noqa: E731
    assert at(15) == at(16) == pytest.approx(0.35)
    assert at(16.5) == pytest.approx(0.675)
    assert at(17) == at(18) == at(18.5) == 1.0
    assert at(19) == pytest.approx(0.675) and at(20) == pytest.approx(0.35)


def test_reshape_follows_the_profile_and_keeps_trips(tmp_path: Path) -> None:
    base = resolve("grid4x4")
    sc = reshape(base, get_profile("evening-peak"), tmp_path, 16 * HOUR, 19.5 * HOUR, peak_factor=2.0, seed=3)
    with open_xml(sc.route_files[0]) as fh:
        vehicles = [v for v in ET.parse(fh).getroot() if v.tag == "vehicle"]
    departs = np.array([float(v.get("depart", 0)) for v in vehicles])
    assert np.all(np.diff(departs) >= 0) and departs.min() >= 16 * HOUR and departs.max() < 19.5 * HOUR
    per_hour = 1473 * 2.0  # grid4x4's base rate x the peak factor
    expected = per_hour * (0.675 + 1.5 + 0.675)  # integral of the profile over 16:00-19:30, in hours
    assert abs(len(vehicles) - expected) < 4 * np.sqrt(expected)
    peak = ((departs >= 17 * HOUR) & (departs < 18.5 * HOUR)).sum() / 1.5
    shoulder = ((departs >= 16 * HOUR) & (departs < 16.5 * HOUR)).sum() / 0.5
    assert peak / per_hour == pytest.approx(1.0, rel=0.1) and shoulder < 0.6 * peak
    with open_xml(base.route_files[0]) as fh:
        base_routes = {v.find("route").get("edges") for v in ET.parse(fh).getroot().iter("vehicle")}  # type: ignore[union-attr]
    assert all(v.find("route").get("edges") in base_routes for v in vehicles[:200])  # type: ignore[union-attr]
    assert demand_summary(sc)[2] == len(vehicles)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown demand profile"):
        get_profile("morning-rush")
    with pytest.raises(UserError, match="peak factor"):
        reshape(resolve("grid4x4"), get_profile("flat"), tmp_path, 0, 3600, peak_factor=0)


def test_flagship_is_a_three_hour_evening_peak_over_manhattan() -> None:
    sc = resolve("manhattan_evening_peak")
    assert (sc.begin, sc.end) == (16 * HOUR, 19 * HOUR)
    assert sc.net_file.name == "manhattan_28x7.net.xml.gz"
    assert "synthetic" in sc.sumocfg.read_text()
