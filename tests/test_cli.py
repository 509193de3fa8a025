"""The command line as a user meets it: JSON output, any .sumocfg, and one-line errors with exit code 2."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_files import published_style

from citysignal.bench.metrics import METRIC_KEYS
from citysignal.scenarios.registry import data_dir
from citysignal.sumo_home import binary

CLI = [sys.executable, "-m", "citysignal"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_cfg(folder: Path, net: str, routes: str, begin: float, end: float) -> Path:
    cfg = folder / "run.sumocfg"
    cfg.write_text(
        f'<configuration><input><net-file value="{net}"/><route-files value="{routes}"/></input>'
        f'<time><begin value="{begin:g}"/><end value="{end:g}"/></time></configuration>'
    )
    return cfg


@pytest.fixture()
def cologne1_copy(tmp_path: Path) -> Path:
    src = data_dir() / "cologne1"
    for f in ("cologne1.net.xml.gz", "cologne1.rou.xml.gz"):
        shutil.copy(src / f, tmp_path / f)
    return write_cfg(tmp_path, "cologne1.net.xml.gz", "cologne1.rou.xml.gz", 25200, 25500)


def test_bench_json_prints_one_line_with_exact_keys() -> None:
    proc = run("bench", "cologne1", "--controller", "fixed", "--json", "--end", "25800")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert set(row) == {"scenario", "controller", "seed", *METRIC_KEYS}
    assert row["scenario"] == "cologne1" and row["controller"] == "fixed" and row["seed"] == 23423
    assert row["safety_violations"] == 0
    assert row["arrived"] > 100


def test_bench_accepts_a_sumocfg_outside_the_package(cologne1_copy: Path) -> None:
    proc = run("bench", str(cologne1_copy), "-c", "maxpressure", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["scenario"] == "run" and row["arrived"] > 50 and row["safety_violations"] == 0


def test_bench_writes_markdown_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run("bench", "ingolstadt1", "-c", "fixed,actuated", "--end", "57900", "--workers", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| ingolstadt1 | fixed |" in (out / "results.md").read_text()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert (out / "ingolstadt1.png").stat().st_size > 10_000


def test_bench_runs_a_published_style_scenario_and_says_where_its_end_comes_from(tmp_path: Path) -> None:
    """Clock-time flows, `<begin value="53990"/>` and no end: one hour from the begin, said on stderr."""
    cfg = published_style(tmp_path)
    proc = run("bench", str(cfg), "-c", "maxpressure", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["arrived"] > 700 and row["not_inserted"] == 0 and row["safety_violations"] == 0
    note = f"citysignal: note: {cfg} gives no end time: running 53990-57590 s (begin + 3600 s; --end changes it)"
    assert proc.stderr.strip().splitlines() == [note]
    short = run("bench", str(cfg), "-c", "fixed,ai", "--begin", "15:00:00", "--end", "15:05:00", "--json",
                "--workers", "1")  # fmt: skip
    assert short.returncode == 0, short.stderr
    rows = [json.loads(line) for line in short.stdout.splitlines()]
    assert [r["controller"] for r in rows] == ["fixed", "ai"]
    assert all(r["arrived"] > 30 and r["safety_violations"] == 0 for r in rows)
    assert "note" not in short.stderr


@pytest.mark.parametrize("command", ["bench", "serve"])
def test_help_says_what_a_missing_end_becomes(command: str) -> None:
    proc = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "400", "PATH": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "or begin + 3600 s if its config gives none" in proc.stdout


def test_unknown_scenario() -> None:
    assert_user_error(run("bench", "atlantis"), "unknown scenario 'atlantis'")


def test_unknown_controller() -> None:
    assert_user_error(run("bench", "cologne1", "-c", "genius"), "unknown controller 'genius'")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_user_error(run("bench", str(tmp_path / "nowhere.sumocfg")), "not found", "nowhere.sumocfg")


def test_missing_route_file(tmp_path: Path) -> None:
    shutil.copy(data_dir() / "cologne1" / "cologne1.net.xml.gz", tmp_path)
    cfg = write_cfg(tmp_path, "cologne1.net.xml.gz", "gone.rou.xml", 0, 100)
    assert_user_error(run("bench", str(cfg)), "gone.rou.xml")


def test_corrupt_net(tmp_path: Path) -> None:
    raw = gzip.decompress((data_dir() / "cologne1" / "cologne1.net.xml.gz").read_bytes())
    (tmp_path / "broken.net.xml").write_bytes(raw[: len(raw) // 2])
    shutil.copy(data_dir() / "cologne1" / "cologne1.rou.xml.gz", tmp_path)
    cfg = write_cfg(tmp_path, "broken.net.xml", "cologne1.rou.xml.gz", 25200, 25500)
    assert_user_error(run("bench", str(cfg)), "corrupt net file", "broken.net.xml")


def test_net_without_traffic_lights(tmp_path: Path) -> None:
    net = tmp_path / "plain.net.xml"
    subprocess.run(
        [binary("netgenerate"), "--grid", "--grid.number=3", "--default-junction-type", "priority", "-o", str(net)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "r.rou.xml").write_text('<routes><vehicle id="v" depart="0"><route edges="A0A1"/></vehicle></routes>')
    cfg = write_cfg(tmp_path, "plain.net.xml", "r.rou.xml", 0, 100)
    assert_user_error(run("bench", str(cfg)), "no traffic lights", "plain.net.xml")


def test_window_outside_the_demand() -> None:
    assert_user_error(run("bench", "cologne1", "--begin", "0", "--end", "600"), "outside the demand", "cologne1.rou")


def test_bad_option_value() -> None:
    assert_user_error(run("bench", "cologne1", "--seeds", "many"), "--seeds")


def test_scenarios_lists_every_bundled_scenario() -> None:
    proc = subprocess.run([*CLI, "scenarios"], capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "PATH": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name, signals in (("manhattan_28x7", "196"), ("cologne8", "8"), ("ingolstadt21", "21")):
        line = next(ln for ln in proc.stdout.splitlines() if name in ln)
        assert f" {signals} " in line
