"""What-if race: how long from the fork to the last candidate's result (`race_wall_s`).

The issue's case: Manhattan 28x7 at the height of the evening peak (`manhattan_evening_peak`, fork at
18:00 under the AI), three candidates, a 15-minute horizon, on this machine with two Ray workers: the
race of `citysignal whatif manhattan_evening_peak --at 18:00 --horizon 900 --candidates ai,maxpressure,fixed
--workers 2`. Running the city to the fork is set-up (in the service the live twin is already there) and is
reported apart. Where the race's time goes, per candidate and from the same run: the control layer
(observe, decide, guard with the signal writes: together `control_s`), SUMO's stepping (`sumo_step_s`),
and the rest of its `wall_s` (SUMO start, state load, queue records, the trip metrics). The candidates run
at once, sharing the CPUs (three candidates on two: each run's `wall_s` counts the time it waited for a core);
what `race_wall_s` adds beyond the longest run is Ray's transfer of the fork and the start of its workers.

    .venv/bin/python benchmarks/whatif.py [--scenario manhattan_evening_peak] [--at 18:00:00] [--horizon 900]
                                          [--candidates ai,maxpressure,fixed] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

from citysignal.bench.report import update_section
from citysignal.bench.whatif import race
from citysignal.scenarios import resolve
from citysignal.scenarios.demand import time_option

SECTION = "## What-if race"
TARGET = "race_wall_s <= 60 s for manhattan_evening_peak, fork at 18:00, 3 candidates, 900 s horizon, 2 cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="manhattan_evening_peak")
    parser.add_argument("--at", default="18:00:00")
    parser.add_argument("--horizon", type=float, default=900.0)
    parser.add_argument("--candidates", default="ai,maxpressure,fixed")
    parser.add_argument("--controller", default="ai")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    sc = resolve(args.scenario)
    at = time_option(args.at, "--at")
    assert at is not None
    started = time.perf_counter()
    w = race(sc, at, args.horizon, args.candidates.split(","), args.controller, workers=args.workers)
    total = time.perf_counter() - started
    load = os.getloadavg()[1]  # over the last 5 minutes: the race's share of this machine's CPUs
    lines = [
        "| candidate | RESCO delay s | mean wait s | arrived | not inserted | violations | wall s | observe s "
        "| decide s | guard s | SUMO step s | start, load, metrics s | decide p99 ms | race wall s |",
        "|---" * 14 + "|",
    ]
    for row, r in zip(w.rows(), w.results, strict=True):
        clock = r.timings
        rest = float(row["wall_s"]) - sum(clock.values())
        lines.append(
            f"| {row['candidate']} | {row['resco_delay']:.1f} | {row['mean_waiting']:.1f} | {row['arrived']:.0f} "
            f"| {row['not_inserted']:.0f} | {row['safety_violations']:.0f} | {row['wall_s']:.1f} "
            f"| {clock['observe']:.1f} | {clock['decide']:.1f} | {clock['guard']:.1f} | {clock['step']:.1f} "
            f"| {rest:.1f} | {row['decide_p99_ms']:.1f} | {row['race_wall_s']:.1f} |"
        )
    walls = sorted((float(r.metrics["wall_s"]) for r in w.results), reverse=True)
    verdict = "met" if w.race_wall_s <= 60 else "missed"
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores (load average over the race's last 5 minutes {load:.1f}: other work shared them), "
        f"Python {platform.python_version()}\n"
        f"- command: `python benchmarks/whatif.py {' '.join(sys.argv[1:])}`\n"
        f"- {sc.name}: fork at {at:g} s under {args.controller} ({w.fork.vehicles} vehicles on the lanes), "
        f"{args.horizon:g} s horizon, the candidates at once on {args.workers} Ray CPUs; set-up (Ray start, run to "
        f"the fork) {total - w.race_wall_s:.1f} s\n"
        f"- target: {TARGET}: **{verdict}** (race_wall_s {w.race_wall_s:.1f} s); the candidates' own runs sum to "
        f"{sum(walls):.1f} s, the longest {walls[0]:.1f} s\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
