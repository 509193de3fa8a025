"""Scale: decision latency, control-layer overhead and memory at 196 and 2,500 signals, all from one run.

For synthetic signalized grids of 14 x 14 (196 signals) and 50 x 50 (2,500 signals) with random demand
(`scenarios.synthetic.grid_city`), each controller runs one benchmark episode in a fresh process
(libsumo: one SUMO per process) pinned to one core (CPU affinity 0). Every figure comes from that same
episode's own profile (`bench.episode`), so the overhead ratio compares like with like:

- decision latency: `decide()` p50/p99 over the episode's decision steps (steps where some
  intersection got a request), on the running city;
- control layer: observe + decide + guard (incl. the signal writes), and its ratio to the libsumo
  `simulationStep` seconds of the same run;
- peak memory: the episode process's peak resident set size (SUMO included: libsumo runs in-process).

    .venv/bin/python benchmarks/scale.py [--sizes 14,50] [--seconds 300] [--controllers maxpressure,ai]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import sys
from pathlib import Path
from typing import Any

from citysignal.bench.episode import run_episode
from citysignal.bench.report import update_section
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.scenarios.synthetic import grid_city

SECTION = "## Scale: 196 and 2,500 signals"
TARGETS = "AI decide p99 <= 5 ms at 2,500 signals on one core; control_s / sumo_step_s <= 0.10; peak RSS <= 2 GB"


def _scenario(size: int, seconds: float) -> Scenario:
    cfg = Path("out/scale") / f"grid{size}.sumocfg"
    if not cfg.exists():
        grid_city(size, cfg.parent)
    return resolve(str(cfg), 600.0, 600.0 + seconds)  # SUMO starts the city empty at 600 s


def _controlled(sc: Scenario, controller: str) -> dict[str, object]:
    os.sched_setaffinity(0, {0})
    r = run_episode(sc, controller, 23423)
    counters = ", ".join(f"{k} {v:.3g}" for k, v in r.controller_stats.items())
    return {**r.metrics, **{f"{k}_s": v for k, v in r.timings.items()}, "counters": counters}


def _in_child(fn: object, *args: object) -> dict[str, Any]:
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14,50")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--controllers", default="maxpressure,ai")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        sc = _scenario(size, args.seconds)
        signals = len(Layout.from_network(load_network(sc.net_file)).intersections)
        for controller in args.controllers.split(","):
            m = _in_child(_controlled, sc, controller)
            rows.append((signals, controller, m))
            print(f"{signals} signals, {controller}: decide p99 {m['decide_p99_ms']:.2f} ms, "
                  f"control / SUMO step {m['control_s'] / m['sumo_step_s']:.3f}", file=sys.stderr)  # fmt: skip
    lines = [
        "| signals | controller | decide p50 ms | decide p99 ms | decisions | observe s | decide s | guard s "
        "| control s | SUMO step s | control / SUMO step | peak RSS MB | violations | controller counters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for signals, controller, m in rows:
        lines.append(
            f"| {signals} | {controller} | {m['decide_p50_ms']:.2f} | {m['decide_p99_ms']:.2f} | {m['decisions']:.0f} "
            f"| {m['observe_s']:.2f} | {m['decide_s']:.2f} | {m['guard_s']:.2f} | {m['control_s']:.2f} "
            f"| {m['sumo_step_s']:.2f} | {m['control_s'] / m['sumo_step_s']:.3f} | {m['peak_rss_mb']:.0f} "
            f"| {m['safety_violations']:.0f} | {m['counters']} |"
        )
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n"
        f"- command: `python benchmarks/scale.py {' '.join(sys.argv[1:])}`\n"
        f"- cities: `grid_city` n x n signalized grids, 2 lanes per direction, random demand (40 trips/h/km); "
        f"window 600-{600 + args.seconds:g} s of the demand (the city starts empty at 600 s and fills up); "
        f"each run one episode on one core, every figure from that run's own profile\n"
        f"- targets: {TARGETS}\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
