"""Scale: decision latency, observation cost, control-layer overhead and memory at 196 and 2,500 signals.

For synthetic signalized grids of 14 x 14 (196 signals) and 50 x 50 (2,500 signals) with random demand
(`scenarios.synthetic.grid_city`), each measurement in a fresh process (libsumo: one SUMO per
process), all in one run so the ratios compare like with like on this shared machine:

- decision latency: `decide()` for the whole city on one core (CPU affinity 0), every intersection
  due, on observations recorded from the running city, p50/p99 over `--calls` calls;
- bare stepping: libsumo `simulationStep` only, same SUMO options as a benchmark run;
- controlled: the full loop (observe, decide, guard, write, step) with max-pressure and the AI;
  observation and control-layer overhead reported as ratios to bare stepping of the same network;
- peak memory: maximum resident set size of the controlled process.

    .venv/bin/python benchmarks/scale.py [--sizes 14,50] [--seconds 300] [--calls 500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from citysignal.bench.episode import run_episode
from citysignal.bench.report import update_section
from citysignal.control import make_controller
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.scenarios.synthetic import grid_city
from citysignal.twin import Twin
from citysignal.twin.observation import Observation

SECTION = "## Scale: 196 and 2,500 signals"
TARGETS = "decision p99 <= 5 ms at 2,500 signals on one core; control layer <= 1.10 x bare stepping; memory <= 2 GB"


def _scenario(size: int, seconds: float) -> Scenario:
    cfg = Path("out/scale") / f"grid{size}.sumocfg"
    if not cfg.exists():
        grid_city(size, cfg.parent)
    return resolve(str(cfg), 600.0, 600.0 + seconds)  # SUMO starts the city empty at 600 s


def _bare(sc: Scenario) -> dict[str, float]:
    layout = Layout.from_network(load_network(sc.net_file))
    with Twin(sc, layout, fields=frozenset(), tripinfo=Path(os.devnull)) as twin:
        started = time.perf_counter()
        steps = 0
        while not twin.done:
            twin.step()
            steps += 1
        wall = time.perf_counter() - started
    return {"wall": wall, "steps": steps, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _controlled(sc: Scenario, controller: str) -> dict[str, float]:
    r = run_episode(sc, controller, 23423, timed=True)
    t = {k: float(np.sum(v)) for k, v in r.timings.items()}
    return {**t, "wall": sum(t.values()), "violations": r.metrics["safety_violations"],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def _latency(sc: Scenario, controller: str, calls: int) -> dict[str, float]:
    os.sched_setaffinity(0, {0})
    layout = Layout.from_network(load_network(sc.net_file))
    ctl = make_controller(controller)
    with Twin(sc, layout, fields=frozenset({"halting", "vehicles", "occupancy"})) as twin:
        position = twin.program_position()
        for _ in range(int(sc.end - sc.begin) // 2):
            twin.step()
        base = twin.observe(np.zeros(layout.n_intersections, dtype=np.int64), np.full(layout.n_intersections, 30.0))
    ctl.reset(layout, position, 0)
    samples = []
    for k in range(calls):  # time moves 10 s per call and every green has run 30 s: all are due
        obs = Observation(time=base.time + 10.0 * k, phase=base.phase, time_in_phase=base.time_in_phase,
                          vehicles=base.vehicles, halting=base.halting, occupancy=base.occupancy)  # fmt: skip
        t0 = time.perf_counter()
        ctl.decide(obs)
        samples.append(time.perf_counter() - t0)
    ms = np.array(samples) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def _in_child(fn: object, *args: object) -> dict[str, float]:
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14,50")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        sc = _scenario(size, args.seconds)
        signals = len(Layout.from_network(load_network(sc.net_file)).intersections)
        bare = _in_child(_bare, sc)
        print(f"{signals} signals: bare {bare['wall']:.1f} s", file=sys.stderr)
        for controller in ("maxpressure", "ai"):
            lat = _in_child(_latency, sc, controller, args.calls)
            run = _in_child(_controlled, sc, controller)
            rows.append((signals, controller, lat, run, bare))
            ratio = run["wall"] / bare["wall"]
            print(f"  {controller}: p99 {lat['p99']:.2f} ms, control layer x{ratio:.2f}", file=sys.stderr)
    lines = [
        "| signals | controller | decide p50 ms | decide p99 ms | observe / bare step | control layer / bare step "
        "| observe s | decide s | guard s | step s | bare step s | peak RSS MB | violations |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for signals, controller, lat, run, bare in rows:
        layer = run["observe"] + run["decide"] + run["guard"] + run["step"]
        lines.append(
            f"| {signals} | {controller} | {lat['p50']:.2f} | {lat['p99']:.2f} | {run['observe'] / bare['wall']:.2f} "
            f"| {layer / bare['wall']:.2f} | {run['observe']:.1f} | {run['decide']:.1f} | {run['guard']:.1f} "
            f"| {run['step']:.1f} | {bare['wall']:.1f} | {run['rss_mb']:.0f} | {run['violations']:.0f} |"
        )
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n"
        f"- command: `python benchmarks/scale.py {' '.join(sys.argv[1:])}`\n"
        f"- cities: `grid_city` n x n signalized grids, 2 lanes per direction, random demand (40 trips/h/km); "
        f"window 600-{600 + args.seconds:g} s of the demand (the city starts empty at 600 s and fills up); "
        f"decisions on one core over {args.calls} calls\n"
        f"- targets: {TARGETS}\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
