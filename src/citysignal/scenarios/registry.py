"""Scenarios by name (bundled) or by path to any `.sumocfg`, with their episode window.

A scenario is a SUMO configuration: a net, route files, optional additional files and a window
[begin, end). Bundled scenarios live in `data/<name>/<name>.sumocfg` and carry their RESCO windows
in the config itself. Validation happens here, before SUMO starts, so a bad file or window is one
clear line naming the file instead of a SUMO error deep inside a run.
"""

from __future__ import annotations

import contextlib
import gzip
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from citysignal.errors import UserError
from citysignal.network.parse import read_xml

DEMAND_TAGS = ("vehicle", "trip", "flow", "person", "personFlow")


@dataclass(frozen=True)
class Scenario:
    name: str
    sumocfg: Path
    net_file: Path
    route_files: tuple[Path, ...]
    additional_files: tuple[Path, ...]
    begin: float
    end: float

    def with_window(self, begin: float | None, end: float | None) -> Scenario:
        return replace(
            self,
            begin=self.begin if begin is None else float(begin),
            end=self.end if end is None else float(end),
        )


def data_dir() -> Path:
    return Path(str(resources.files("citysignal.scenarios") / "data"))


def bundled_names() -> list[str]:
    return sorted(p.name for p in data_dir().iterdir() if (p / f"{p.name}.sumocfg").is_file())


def _files(value: str | None, base: Path) -> tuple[Path, ...]:
    if not value:
        return ()
    return tuple(base / v for v in value.replace(",", " ").split())


def load_sumocfg(path: Path, name: str | None = None) -> Scenario:
    """Read a `.sumocfg`; every file it names must exist."""
    root = read_xml(path, "SUMO config")

    def option(section: str, key: str) -> str | None:
        elem = root.find(f"{section}/{key}")
        return None if elem is None else elem.get("value")

    base = path.parent
    net = _files(option("input", "net-file"), base)
    if len(net) != 1:
        raise UserError(f"SUMO config names no net-file: {path}")
    routes = _files(option("input", "route-files"), base)
    adds = _files(option("input", "additional-files"), base)
    for f in (*net, *routes, *adds):
        if not f.is_file():
            raise UserError(f"file named in {path} not found: {f}")
    begin = float(option("time", "begin") or 0)
    end_text = option("time", "end")
    end = float(end_text) if end_text is not None else begin + 3600.0
    return Scenario(name or path.stem, path, net[0], routes, adds, begin, end)


def resolve(name_or_path: str, begin: float | None = None, end: float | None = None) -> Scenario:
    """A bundled scenario by name, or any `.sumocfg` by path, optionally with another window."""
    candidate = Path(name_or_path)
    if name_or_path.endswith(".sumocfg") or candidate.is_file():
        scenario = load_sumocfg(candidate)
    elif name_or_path in bundled_names():
        scenario = load_sumocfg(data_dir() / name_or_path / f"{name_or_path}.sumocfg", name_or_path)
    else:
        raise UserError(
            f"unknown scenario '{name_or_path}' (bundled: {', '.join(bundled_names())}; or give a .sumocfg path)"
        )
    scenario = scenario.with_window(begin, end)
    if scenario.end <= scenario.begin:
        raise UserError(f"episode window [{scenario.begin:g}, {scenario.end:g}) is empty")
    first, last, _ = demand_summary(scenario)
    if first is None or last is None or scenario.end <= first or scenario.begin > last:
        span = "no timed demand" if first is None else f"departures between {first:g} and {last:g}"
        raise UserError(
            f"episode window [{scenario.begin:g}, {scenario.end:g}) is outside the demand ({span}) "
            f"in {', '.join(str(r) for r in scenario.route_files)}"
        )
    return scenario


def _depart_times(path: Path) -> list[float]:
    times: list[float] = []
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for _, elem in ET.iterparse(fh):
                if elem.tag in DEMAND_TAGS:
                    value = elem.get("depart", elem.get("begin"))
                    # "triggered" and similar departures have no time of their own
                    with contextlib.suppress(TypeError, ValueError):
                        times.append(float(value))  # type: ignore[arg-type]
                    elem.clear()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt route file {path}: {exc}") from exc
    return times


def demand_summary(scenario: Scenario) -> tuple[float | None, float | None, int]:
    """(first departure, last departure, departures inside the window) over the route files."""
    times = [t for f in (*scenario.route_files, *scenario.additional_files) for t in _depart_times(f)]
    if not times:
        return None, None, 0
    inside = sum(1 for t in times if scenario.begin <= t < scenario.end)
    return min(times), max(times), inside
