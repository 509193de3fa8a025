"""Scenarios by name or by .sumocfg path, their windows, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from bundled import BUNDLED

from citysignal.errors import UserError
from citysignal.network import load_network
from citysignal.scenarios import demand_summary, load_sumocfg, resolve
from citysignal.scenarios.registry import data_dir

WINDOWS = {
    "cologne1": (25200, 28800),
    "cologne3": (25200, 28800),
    "cologne8": (25200, 28800),
    "ingolstadt1": (57600, 61200),
    "ingolstadt7": (57600, 61200),
    "ingolstadt21": (57600, 61200),
    "grid4x4": (0, 3600),
    "arterial4x4": (0, 3600),
    "hangzhou_4x4": (0, 3600),
    "manhattan_28x7": (0, 3600),
    "bologna_joined": (0, 3600),
    "manhattan_evening_peak": (57600, 68400),
}


def _copy_bundled(name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in (data_dir() / name).iterdir():
        shutil.copy(f, dest / f.name)
    return dest / f"{name}.sumocfg"


def _cfg(folder: Path, net: str, routes: str, begin: float = 0, end: float = 300) -> Path:
    cfg = folder / "run.sumocfg"
    cfg.write_text(
        f'<configuration><input><net-file value="{net}"/><route-files value="{routes}"/></input>'
        f'<time><begin value="{begin:g}"/><end value="{end:g}"/></time></configuration>'
    )
    return cfg


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_scenarios_resolve_with_their_windows(name: str) -> None:
    sc = resolve(name)
    assert sc.name == name
    assert (sc.begin, sc.end) == WINDOWS[name]
    assert sc.sumocfg.is_file() and sc.net_file.is_file()
    assert sc.route_files and all(r.is_file() for r in sc.route_files)
    first, last, inside = demand_summary(sc)
    assert first is not None and last is not None
    assert inside > 0


def test_every_bundled_scenario_is_listed() -> None:
    assert sorted(BUNDLED) == sorted(WINDOWS)


def test_unknown_name_lists_the_bundled_scenarios() -> None:
    with pytest.raises(UserError) as info:
        resolve("atlantis")
    message = str(info.value)
    assert "atlantis" in message
    for name in BUNDLED:
        assert name in message
    assert "\n" not in message


def test_sumocfg_outside_the_package(tmp_path: Path) -> None:
    cfg = _copy_bundled("cologne1", tmp_path / "mine")
    sc = resolve(str(cfg))
    assert sc.name == "cologne1"
    assert sc.sumocfg == cfg
    assert sc.net_file == tmp_path / "mine" / "cologne1.net.xml.gz"
    assert sc.route_files == (tmp_path / "mine" / "cologne1.rou.xml.gz",)
    assert (sc.begin, sc.end) == (25200, 28800)
    assert len(load_network(sc.net_file, sc.additional_files).intersections) == 1
    short = resolve(str(cfg), 25200, 25500)
    assert (short.begin, short.end) == (25200, 25500)
    assert demand_summary(short)[2] < demand_summary(sc)[2]


def test_sumocfg_with_additional_files_outside_the_package(tmp_path: Path) -> None:
    cfg = _copy_bundled("bologna_joined", tmp_path / "bo")
    sc = resolve(str(cfg), 0, 300)
    assert len(sc.route_files) == 2
    assert [a.name for a in sc.additional_files] == [
        "bologna_joined_bus_stops.add.xml",
        "bologna_joined_vtypes.add.xml",
        "bologna_joined_tls.add.xml",
    ]
    assert all(a.parent == tmp_path / "bo" for a in sc.additional_files)


def test_window_is_overridable() -> None:
    sc = resolve("grid4x4", 100, 400)
    assert (sc.begin, sc.end) == (100, 400)
    assert resolve("grid4x4", None, 400).begin == 0


def test_window_outside_the_demand_is_a_user_error() -> None:
    with pytest.raises(UserError, match="outside the demand") as info:
        resolve("cologne1", 0, 3600)
    assert "cologne1.rou.xml.gz" in str(info.value)
    with pytest.raises(UserError, match="outside the demand"):
        resolve("grid4x4", 90000, 90300)


def test_empty_window_is_a_user_error() -> None:
    with pytest.raises(UserError, match="empty"):
        resolve("grid4x4", 300, 300)
    with pytest.raises(UserError, match="empty"):
        resolve("grid4x4", 300, 100)


def test_missing_route_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    src = data_dir() / "cologne1"
    shutil.copy(src / "cologne1.net.xml.gz", tmp_path)
    cfg = _cfg(tmp_path, "cologne1.net.xml.gz", "gone.rou.xml")
    with pytest.raises(UserError, match="not found") as info:
        resolve(str(cfg))
    assert str(tmp_path / "gone.rou.xml") in str(info.value)
    assert str(cfg) in str(info.value)


def test_missing_net_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    shutil.copy(data_dir() / "cologne1" / "cologne1.rou.xml.gz", tmp_path)
    cfg = _cfg(tmp_path, "nothere.net.xml", "cologne1.rou.xml.gz")
    with pytest.raises(UserError, match="not found") as info:
        resolve(str(cfg))
    assert str(tmp_path / "nothere.net.xml") in str(info.value)


def test_missing_sumocfg_is_a_user_error(tmp_path: Path) -> None:
    cfg = tmp_path / "nope.sumocfg"
    with pytest.raises(UserError, match="not found") as info:
        resolve(str(cfg))
    assert str(cfg) in str(info.value)


def test_sumocfg_without_a_net_is_a_user_error(tmp_path: Path) -> None:
    cfg = tmp_path / "nonet.sumocfg"
    cfg.write_text("<configuration><input/></configuration>")
    with pytest.raises(UserError, match="net-file"):
        load_sumocfg(cfg)


def test_truncated_gz_net_is_a_user_error(tmp_path: Path) -> None:
    """resolve() checks the files exist; the net itself is parsed (and rejected) by load_network,
    which every consumer runs before SUMO starts."""
    cfg = _copy_bundled("cologne1", tmp_path / "c1")
    net = tmp_path / "c1" / "cologne1.net.xml.gz"
    data = net.read_bytes()
    net.write_bytes(data[: len(data) // 2])
    sc = resolve(str(cfg))
    with pytest.raises(UserError, match="corrupt") as info:
        load_network(sc.net_file, sc.additional_files)
    assert str(net) in str(info.value)


def test_truncated_gz_net_fails_an_episode_with_a_user_error(tmp_path: Path) -> None:
    from citysignal.bench.episode import run_episode

    cfg = _copy_bundled("cologne1", tmp_path / "c1")
    net = tmp_path / "c1" / "cologne1.net.xml.gz"
    net.write_bytes(net.read_bytes()[:4000])
    with pytest.raises(UserError) as info:
        run_episode(resolve(str(cfg), 25200, 25260), "fixed", 1)
    assert str(net) in str(info.value)


def test_corrupt_route_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    cfg = _copy_bundled("cologne1", tmp_path / "c1")
    routes = tmp_path / "c1" / "cologne1.rou.xml.gz"
    with gzip.open(routes, "rb") as fh:
        text = fh.read()
    with gzip.open(routes, "wb") as fh:
        fh.write(text[: len(text) // 2])  # valid gzip, truncated XML
    with pytest.raises(UserError, match="corrupt route file") as info:
        resolve(str(cfg))
    assert str(routes) in str(info.value)


def test_route_file_without_timed_demand_is_a_user_error(tmp_path: Path) -> None:
    shutil.copy(data_dir() / "cologne1" / "cologne1.net.xml.gz", tmp_path)
    (tmp_path / "empty.rou.xml").write_text("<routes/>")
    cfg = _cfg(tmp_path, "cologne1.net.xml.gz", "empty.rou.xml")
    with pytest.raises(UserError, match="no timed demand"):
        resolve(str(cfg))
