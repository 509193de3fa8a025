"""OSM import end to end on the extract the tests carry, then a short bench on the result."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from citysignal.network import load_network

TOWN = Path(__file__).resolve().parents[1] / "data" / "small_town.osm.xml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citysignal", *args], capture_output=True, text=True, timeout=600)


def test_import_then_bench(tmp_path: Path) -> None:
    proc = cli("import-osm", str(TOWN), "--out", str(tmp_path), "--hours", "1", "--peak-factor", "2")
    assert proc.returncode == 0, proc.stderr
    cfg = tmp_path / "small_town.sumocfg"
    net = load_network(tmp_path / "small_town.net.xml.gz")
    assert len(net.controllable) >= 4  # signals guessed and joined from the tagged nodes
    assert "evening-peak" in cfg.read_text()
    bench = cli("bench", str(cfg), "-c", "maxpressure", "--end", "58500", "--json")
    assert bench.returncode == 0, bench.stderr
    row = json.loads(bench.stdout)
    assert row["arrived"] > 20 and row["safety_violations"] == 0 and row["teleports"] == 0


def _one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('<osm version="0.6"><node id="1" lat="0" lon="0"/></osm>', "no roads"),
        ('<osm version="0.6"><node id="1" lat=', "corrupt OSM file"),
    ],
)
def test_bad_osm(tmp_path: Path, content: str, fragment: str) -> None:
    osm = tmp_path / "bad.osm"
    osm.write_text(content)
    _one_line_error(cli("import-osm", str(osm), "--out", str(tmp_path / "o")), fragment)


def test_osm_without_signals(tmp_path: Path) -> None:
    osm = tmp_path / "quiet.osm"
    osm.write_text(re.sub(r'>\s*<tag k="highway" v="traffic_signals"/>\s*</node>', "/>", TOWN.read_text()))
    _one_line_error(cli("import-osm", str(osm), "--out", str(tmp_path / "o")), "no traffic")


def test_unknown_profile_and_bad_peak_factor(tmp_path: Path) -> None:
    _one_line_error(cli("import-osm", str(TOWN), "--out", str(tmp_path), "--profile", "rush"), "unknown demand profile")
    _one_line_error(cli("import-osm", str(TOWN), "--out", str(tmp_path), "--peak-factor", "0"), "peak factor")
    _one_line_error(cli("import-osm", str(tmp_path / "missing.osm"), "--out", str(tmp_path)), "not found")
