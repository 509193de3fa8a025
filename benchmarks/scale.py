"""Scale: decision latency, control-layer overhead and memory at 196 and 2,500 signals, all from one run.

Cities: Manhattan 28x7 (bundled, 196 signals, its own demand) and a synthetic 50 x 50 signalized grid
(2,500 signals, `scenarios.synthetic.grid_city`, random demand). Each controller runs in a fresh process
(libsumo: one SUMO per process) pinned to one core (CPU affinity 0) with one BLAS thread: a second BLAS
thread would only time-share that core (and spin). The process drives the product's control loop
(`loop.ControlLoop`: observe, decide, guard and writes, step) over the city: first `--warmup` seconds
that fill the city (SUMO starts it empty) and count in no figure, then `--seconds` measured seconds.
Every figure comes from the measured part of that one run, so the overhead ratio compares like with
like (`bench.episode`'s profile would cover the empty start too):

- decision latency: `decide()` p50/p99 over the decision steps (steps where some intersection got a
  request);
- control layer: observe + decide + guard (incl. the signal writes), and its ratio to libsumo's
  `simulationStep` seconds of the same steps;
- peak memory: the process's peak resident set size (SUMO included: libsumo runs in-process);
- the city: mean vehicles halting on the observed lanes over the measured part (congestion).

    .venv/bin/python benchmarks/scale.py [--cities manhattan_28x7,grid50] [--warmup 900] [--seconds 300]
                                         [--controllers maxpressure,ai]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from citysignal.bench.report import update_section
from citysignal.control import SafetyGuard, make_controller
from citysignal.control.guard import GUARD_FIELDS, HOLD
from citysignal.loop import ControlLoop, Tick
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.scenarios.synthetic import grid_city
from citysignal.twin import DEFAULT_SEED, Twin

SECTION = "## Scale: 196 and 2,500 signals"
TARGETS = "AI decide p99 <= 5 ms at 2,500 signals on one core; control_s / sumo_step_s <= 0.10; peak RSS <= 2 GB"
GRID_BEGIN_S = 600.0  # where the grids' measured demand starts (as in earlier runs of this benchmark)
ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _scenario(city: str, warmup: float, seconds: float) -> Scenario:
    """A bundled scenario from its begin, or `gridN`: an N x N grid city (built once under out/scale)."""
    if not city.startswith("grid"):
        begin = resolve(city).begin
        return resolve(city, begin, begin + warmup + seconds)
    cfg = Path("out/scale") / f"{city}.sumocfg"
    if not cfg.exists():
        grid_city(int(city.removeprefix("grid")), cfg.parent)
    return resolve(str(cfg), GRID_BEGIN_S, GRID_BEGIN_S + warmup + seconds)


def _measured(scenario: Scenario, controller: str, warmup: float) -> dict[str, Any]:
    os.sched_setaffinity(0, {0})
    layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
    ctl = make_controller(controller)
    guard = SafetyGuard(layout)
    decide_ms: list[float] = []
    queued: list[float] = []

    def record(tick: Tick) -> None:
        if tick.time < scenario.begin + warmup:
            return
        queued.append(float(tick.obs.lane("halting").sum()))
        if tick.requests is not None and (tick.requests != HOLD).any():
            decide_ms.append(tick.decide_s * 1e3)

    with Twin(scenario, layout, seed=DEFAULT_SEED, fields=ctl.requires | GUARD_FIELDS) as twin:
        loop = ControlLoop(twin, guard, ctl, recorder=record)
        loop.start(DEFAULT_SEED)
        while loop.time < scenario.begin + warmup:
            loop.tick()
        before = dict(loop.clock)
        while not loop.done:
            loop.tick()
        clock = {k: loop.clock[k] - before[k] for k in before}
    control = clock["observe"] + clock["decide"] + clock["guard"]
    return {
        "signals": layout.n_intersections,
        "lanes": len(layout.lanes),
        **{f"{k}_s": v for k, v in clock.items()},
        "control_s": control,
        "ratio": control / clock["step"],
        "decide_p50_ms": float(np.percentile(decide_ms, 50)) if decide_ms else 0.0,
        "decide_p99_ms": float(np.percentile(decide_ms, 99)) if decide_ms else 0.0,
        "decisions": len(decide_ms),
        "queued": float(np.mean(queued)) if queued else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux; a fresh process
        "violations": guard.stats.violations,
        "counters": ", ".join(f"{k} {v:.3g}" for k, v in ctl.stats().items()),
    }


def _in_child(fn: object, *args: object) -> dict[str, Any]:
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", default="manhattan_28x7,grid50")
    parser.add_argument("--warmup", type=float, default=900.0)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--controllers", default="maxpressure,ai")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    for name in ONE_THREAD:  # the children inherit it before they load NumPy's BLAS
        os.environ[name] = "1"
    rows = []
    for city in args.cities.split(","):
        sc = _scenario(city, args.warmup, args.seconds)
        for controller in args.controllers.split(","):
            m = _in_child(_measured, sc, controller, args.warmup)
            rows.append((city, controller, m))
            print(f"{city}, {controller}: decide p99 {m['decide_p99_ms']:.2f} ms, control / SUMO step {m['ratio']:.3f}",
                  file=sys.stderr)  # fmt: skip
    lines = [
        "| city | signals | controller | decide p50 ms | decide p99 ms | decisions | observe s | decide s | guard s "
        "| control s | SUMO step s | control / SUMO step | peak RSS MB | mean queued veh | violations "
        "| controller counters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for city, controller, m in rows:
        lines.append(
            f"| {city} | {m['signals']} | {controller} | {m['decide_p50_ms']:.2f} | {m['decide_p99_ms']:.2f} "
            f"| {m['decisions']} | {m['observe_s']:.2f} | {m['decide_s']:.2f} | {m['guard_s']:.2f} "
            f"| {m['control_s']:.2f} | {m['step_s']:.2f} | {m['ratio']:.3f} | {m['peak_rss_mb']:.0f} "
            f"| {m['queued']:.0f} | {m['violations']} | {m['counters']} |"
        )
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n"
        f"- command: `nice -n 10 python benchmarks/scale.py {' '.join(sys.argv[1:])}`\n"
        f"- cities: Manhattan 28x7 (bundled demand, from its begin) and `grid_city` n x n signalized grids, 2 lanes "
        f"per direction, random demand (40 trips/h/km, from {GRID_BEGIN_S:g} s); each run fills the empty city for "
        f"{args.warmup:g} s, then measures {args.seconds:g} s; one process per run, pinned to one core, one BLAS "
        f"thread; every figure from the measured part of that run\n"
        f"- targets: {TARGETS}\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
