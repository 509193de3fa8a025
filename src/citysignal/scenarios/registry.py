"""Scenarios by name (bundled) or by path to any `.sumocfg`, with their episode window.

A scenario is a SUMO configuration: a net, route files, optional additional files and a window
[begin, end). Bundled scenarios live in `data/<name>/<name>.sumocfg` and carry their RESCO windows
in the config itself. Validation happens here, before SUMO starts, so a bad file or window is one
clear line naming the file instead of a SUMO error deep inside a run.

Times are read with SUMO's own parser (seconds or clock times like `07:00:00`, see `demand`). Options
are found at any depth of the config, as SUMO ignores its section names. A config without an end
(or with SUMO's "no end", a negative one) runs one hour: begin + 3600 s, reported by `Scenario.note`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from citysignal.errors import UserError
from citysignal.network.parse import read_xml
from citysignal.scenarios.demand import DEMAND_TAGS, departures, parse_time, route_elements

DEFAULT_LENGTH_S = 3600.0  # the episode of a config that gives no end
END_HELP = (
    f"Episode end (s or clock time); default: the scenario's end, or begin + {DEFAULT_LENGTH_S:g} s if its config "
    "gives none."
)


@dataclass(frozen=True)
class Scenario:
    name: str
    sumocfg: Path
    net_file: Path
    route_files: tuple[Path, ...]
    additional_files: tuple[Path, ...]
    begin: float
    end: float
    end_assumed: bool = False  # the config gives no end: `end` is begin + DEFAULT_LENGTH_S

    def with_window(self, begin: float | None, end: float | None) -> Scenario:
        new_begin = self.begin if begin is None else float(begin)
        if end is not None:
            return replace(self, begin=new_begin, end=float(end), end_assumed=False)
        if self.end_assumed:
            return replace(self, begin=new_begin, end=new_begin + DEFAULT_LENGTH_S)
        return replace(self, begin=new_begin)

    @property
    def note(self) -> str | None:
        """One line for the user when the window was not given in full, else None."""
        if not self.end_assumed:
            return None
        return (f"{self.sumocfg} gives no end time: running {self.begin:g}-{self.end:g} s "
                f"(begin + {DEFAULT_LENGTH_S:g} s; --end changes it)")  # fmt: skip


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

    def option(key: str) -> str | None:
        elem = root.find(f".//{key}")
        return None if elem is None else elem.get("value")

    base = path.parent
    net = _files(option("net-file"), base)
    if len(net) != 1:
        raise UserError(f"SUMO config names no net-file (or more than one): {path}")
    routes = _files(option("route-files"), base)
    adds = _files(option("additional-files"), base)
    for f in (*net, *routes, *adds):
        if not f.is_file():
            raise UserError(f"file named in {path} not found: {f}")
    begin = parse_time(option("begin") or "0", f"begin in {path}")
    end_text = option("end")
    end = -1.0 if end_text is None else parse_time(end_text, f"end in {path}")
    if end < 0:  # SUMO's default: run until the demand is done; an episode needs a bound
        return Scenario(name or path.stem, path, net[0], routes, adds, begin, begin + DEFAULT_LENGTH_S, True)
    return Scenario(name or path.stem, path, net[0], routes, adds, begin, end)


def resolve(name_or_path: str, begin: float | None = None, end: float | None = None) -> Scenario:
    """A bundled scenario by name, or any `.sumocfg` by path, optionally with another window."""
    for label, value in (("begin", begin), ("end", end)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"episode {label} must be a finite time >= 0 s, got {value:g}")
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
    if scenario.begin < 0:
        raise UserError(f"episode begin must be >= 0 s, got {scenario.begin:g} in {scenario.sumocfg}")
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


def demand_summary(scenario: Scenario) -> tuple[float | None, float | None, int]:
    """(first departure, last departure, departures inside the window) over the route and additional
    files, flows counted by their departures (expected ones for random flows, rounded)."""
    first, last, inside = math.inf, -math.inf, 0.0
    files = [(p, "route file") for p in scenario.route_files]
    files += [(p, "additional file") for p in scenario.additional_files]
    for path, what in files:
        for elem in route_elements(path, what):
            if elem.tag not in DEMAND_TAGS:
                continue
            dep = departures(elem, str(path), scenario.end)
            if dep is None or dep.count <= 0:
                continue
            first, last = min(first, dep.begin), max(last, dep.last)
            inside += dep.between(scenario.begin, scenario.end)
    if first > last:
        return None, None, 0
    return first, last, round(inside)
