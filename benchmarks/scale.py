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
  `simulationStep` of the same steps;
- peak memory: the process's peak resident set size (SUMO included: libsumo runs in-process);
- the city: mean vehicles halting on the observed lanes over the measured part (congestion).

Times are this thread's CPU seconds (`time.thread_time`; SUMO steps in the same thread): on a machine
shared with other work, the wall clock also counts the time the others took the core, the more so as
the run is niced. The loop's own wall-clock figures (p99 and ratio) stand beside them, with the load
average at the end of the run.

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
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citysignal.bench.report import update_section
from citysignal.control import SafetyGuard, make_controller
from citysignal.control.base import Controller
from citysignal.control.guard import GUARD_FIELDS, HOLD
from citysignal.loop import ControlLoop, Tick, deferrable
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, resolve
from citysignal.scenarios.synthetic import grid_city
from citysignal.twin import DEFAULT_SEED, Twin
from citysignal.twin.observation import Observation, ProgramPosition

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


class _Timed:
    """The twin as the loop's backend, its `observe` and `step` on this thread's CPU clock (libsumo
    steps in this thread too)."""

    def __init__(self, twin: Twin, cpu: dict[str, float]) -> None:
        self.twin, self.cpu = twin, cpu

    @property
    def time(self) -> float:
        return self.twin.time

    @property
    def done(self) -> bool:
        return self.twin.done

    def program_position(self) -> ProgramPosition:
        return self.twin.program_position()

    def states(self) -> list[str]:
        return self.twin.states()

    def write(self, changes: dict[int, str]) -> None:
        self.twin.write(changes)

    def observe(self, *args: Any, **kwargs: Any) -> Observation:
        started = time.thread_time()
        obs = self.twin.observe(*args, **kwargs)
        self.cpu["observe"] += time.thread_time() - started
        return obs

    def step(self) -> None:
        started = time.thread_time()
        self.twin.step()
        self.cpu["step"] += time.thread_time() - started


class _TimedDecider:
    """A controller whose `decide` runs on this thread's CPU clock; decision steps' times are kept."""

    def __init__(self, controller: Controller, cpu: dict[str, float]) -> None:
        self.controller, self.cpu = controller, cpu
        self.decide_ms: list[float] = []

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.controller.reset(layout, position, seed)

    def prefetch(self, obs: Observation) -> None:
        started = time.thread_time()
        self.controller.prefetch(obs)
        self.cpu["observe"] += time.thread_time() - started

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        started = time.thread_time()
        requests = self.controller.decide(obs)
        spent = time.thread_time() - started
        self.cpu["decide"] += spent
        if (requests != HOLD).any():
            self.decide_ms.append(spent * 1e3)
        return requests


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return (float(np.percentile(ms, 50)), float(np.percentile(ms, 99))) if ms else (0.0, 0.0)


def _measured(scenario: Scenario, controller: str, warmup: float) -> dict[str, Any]:
    os.sched_setaffinity(0, {0})
    layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
    ctl = make_controller(controller)
    guard = SafetyGuard(layout)
    cpu = dict.fromkeys(("observe", "decide", "step", "record", "tick"), 0.0)
    decider = _TimedDecider(ctl, cpu)
    wall_ms: list[float] = []
    queued: list[float] = []

    def record(tick: Tick) -> None:
        started = time.thread_time()
        queued.append(float(tick.obs.lane("halting").sum()))
        if tick.requests is not None and (tick.requests != HOLD).any():
            wall_ms.append(tick.decide_s * 1e3)
        cpu["record"] += time.thread_time() - started

    fields, defer = ctl.requires | GUARD_FIELDS, deferrable(ctl)
    with Twin(scenario, layout, seed=DEFAULT_SEED, fields=fields, defer=defer) as twin:
        loop = ControlLoop(_Timed(twin, cpu), guard, decider, recorder=record)
        loop.start(DEFAULT_SEED)
        while loop.time < scenario.begin + warmup:
            loop.tick()
        before = dict(loop.clock)
        cpu.update(dict.fromkeys(cpu, 0.0))
        queued.clear()
        wall_ms.clear()
        decider.decide_ms.clear()
        while not loop.done:
            started = time.thread_time()
            loop.tick()
            cpu["tick"] += time.thread_time() - started
        wall = {k: loop.clock[k] - before[k] for k in before}
    cpu["guard"] = cpu["tick"] - cpu["observe"] - cpu["decide"] - cpu["step"] - cpu["record"]
    control = {clock: t["observe"] + t["decide"] + t["guard"] for clock, t in (("cpu", cpu), ("wall", wall))}
    p50, p99 = _percentiles(decider.decide_ms)
    return {
        "signals": layout.n_intersections,
        **{f"{k}_s": cpu[k] for k in ("observe", "decide", "guard", "step")},
        "control_s": control["cpu"],
        "ratio": control["cpu"] / cpu["step"],
        "wall_ratio": control["wall"] / wall["step"],
        "decide_p50_ms": p50,
        "decide_p99_ms": p99,
        "wall_decide_p99_ms": _percentiles(wall_ms)[1],
        "decisions": len(decider.decide_ms),
        "queued": float(np.mean(queued)) if queued else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux; a fresh process
        "load": os.getloadavg()[0],
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
        "| control s | SUMO step s | control / SUMO step | wall: decide p99 ms | wall: control / SUMO step "
        "| peak RSS MB | mean queued veh | load avg | violations | controller counters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for city, controller, m in rows:
        lines.append(
            f"| {city} | {m['signals']} | {controller} | {m['decide_p50_ms']:.2f} | {m['decide_p99_ms']:.2f} "
            f"| {m['decisions']} | {m['observe_s']:.2f} | {m['decide_s']:.2f} | {m['guard_s']:.2f} "
            f"| {m['control_s']:.2f} | {m['step_s']:.2f} | {m['ratio']:.3f} | {m['wall_decide_p99_ms']:.2f} "
            f"| {m['wall_ratio']:.3f} | {m['peak_rss_mb']:.0f} | {m['queued']:.0f} | {m['load']:.1f} "
            f"| {m['violations']} | {m['counters']} |"
        )
    niced = f"nice -n {os.nice(0)} " if os.nice(0) else ""  # as it ran
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n"
        f"- command: `{niced}python benchmarks/scale.py {' '.join(sys.argv[1:])}`\n"
        f"- cities: Manhattan 28x7 (bundled demand, from its begin) and `grid_city` n x n signalized grids, 2 lanes "
        f"per direction, random demand (40 trips/h/km, from {GRID_BEGIN_S:g} s); each run fills the empty city for "
        f"{args.warmup:g} s, then measures {args.seconds:g} s; one process per run, pinned to one core, one BLAS "
        f"thread; every figure from the measured part of that run, in CPU seconds of the run's thread (wall clock: "
        f"the two `wall:` columns)\n"
        f"- targets: {TARGETS}\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
