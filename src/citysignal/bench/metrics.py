"""Episode metrics from SUMO's tripinfo output, following RESCO (Ault & Sharon, NeurIPS 2021).

`resco_delay`: mean over every vehicle scheduled in the window of timeLoss + departDelay, with
vehicles still driving at the end included (`write-unfinished`) and vehicles never inserted charged
(end - scheduled depart, `write-undeparted`) and counted. Unlike RESCO's code, never-inserted
vehicles scheduled after the last insertion are charged too, so gridlock cannot hide.
`mean_duration` is over vehicles that entered the network (travel time so far for unfinished ones);
waiting statistics are per-vehicle total waiting time over the same vehicles.

Priority vehicles added by `--emergency-per-hour` / `--buses-per-hour` (`scenarios.priority`) are
reported apart, as `emergency_delay` and `bus_delay` (the same delay, mean over those vehicles); every
other figure is general traffic's, so a run with them compares with one without.

`METRIC_KEYS` also names the run's own profile, measured by the episode in the same run
(`bench.episode`): control layer and SUMO stepping seconds, decision latency, peak memory.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from citysignal.scenarios.priority import BUS_TYPE, EMERGENCY_TYPE

METRIC_KEYS = (
    "resco_delay",
    "mean_duration",
    "mean_waiting",
    "p95_waiting",
    "max_waiting",
    "arrived",
    "not_inserted",
    "teleports",
    "safety_violations",
    "wall_s",
    "steps_per_s",
    "control_s",
    "sumo_step_s",
    "decide_p50_ms",
    "decide_p99_ms",
    "peak_rss_mb",
)

PRIORITY_KEYS = ("emergency_delay", "bus_delay", "preemptions", "bus_grants")  # runs with priority vehicles


def _scheduled_in_window(row: dict[str, str]) -> bool:
    """SUMO also reports vehicles scheduled at exactly the end as undeparted (with no delay); they
    belong to the next window, not this one."""
    return float(row["depart"]) >= 0 or float(row["departDelay"]) > 0


def _rows(tripinfo: Path) -> list[dict[str, str]]:
    return [dict(t.attrib) for t in ET.parse(tripinfo).getroot().iter("tripinfo") if _scheduled_in_window(t.attrib)]


def _delay(row: dict[str, str]) -> float:
    return float(row["timeLoss"]) + float(row["departDelay"])


def trip_metrics(tripinfo: Path) -> dict[str, float]:
    """resco_delay, durations, waits and counts from an episode's tripinfo file."""
    rows = _rows(tripinfo)
    priority: dict[str, float] = {}
    for key, v_type in (("emergency_delay", EMERGENCY_TYPE), ("bus_delay", BUS_TYPE)):
        delays = [_delay(r) for r in rows if r.get("vType") == v_type]
        if delays:
            priority[key] = float(np.mean(delays))
    rows = [r for r in rows if r.get("vType") not in (EMERGENCY_TYPE, BUS_TYPE)]
    return _figures(rows) | priority


def _figures(rows: list[dict[str, str]]) -> dict[str, float]:
    if not rows:
        return {"resco_delay": 0.0, "mean_duration": 0.0, "mean_waiting": 0.0, "p95_waiting": 0.0,
                "max_waiting": 0.0, "arrived": 0, "not_inserted": 0, "vehicles": 0}  # fmt: skip
    delay = np.array([_delay(r) for r in rows])
    entered = np.array([float(r["depart"]) >= 0 for r in rows])
    arrived = np.array([float(r["arrival"]) >= 0 for r in rows])
    duration = np.array([float(r["duration"]) for r in rows])[entered]
    waiting = np.array([float(r["waitingTime"]) for r in rows])[entered]
    return {
        "resco_delay": float(delay.mean()),
        "mean_duration": float(duration.mean()) if duration.size else 0.0,
        "mean_waiting": float(waiting.mean()) if waiting.size else 0.0,
        "p95_waiting": float(np.percentile(waiting, 95)) if waiting.size else 0.0,
        "max_waiting": float(waiting.max()) if waiting.size else 0.0,
        "arrived": int(arrived.sum()),
        "not_inserted": int((~entered).sum()),
        "vehicles": len(rows),
    }


def delay_by_depart(tripinfo: Path, begin: float, end: float, bin_s: float = 300.0) -> tuple[list[float], list[float]]:
    """Mean RESCO delay of the vehicles scheduled in each `bin_s` window (x: bin start, s)."""
    sums: dict[int, list[float]] = {}
    for t in _rows(tripinfo):
        delay = float(t["timeLoss"]) + float(t["departDelay"])
        scheduled = float(t["depart"])
        scheduled = scheduled - float(t["departDelay"]) if scheduled >= 0 else end - delay
        b = int((scheduled - begin) // bin_s)
        sums.setdefault(b, []).append(delay)
    bins = sorted(b for b in sums if 0 <= b * bin_s < end - begin)
    return [begin + b * bin_s for b in bins], [float(np.mean(sums[b])) for b in bins]
