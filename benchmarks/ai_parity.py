"""AI run-time path vs its float64 full-city reference, over whole episodes of every bundled scenario.

The deployed AI scores only the intersections that decide at a step, runs the learned part in float32
and re-scores near ties (`control.ai.AiController`); it reads its inputs by rows, at the deciding
intersections only (between decisions none, but the lanes of an isolated junction's running green, watched for
a gap: `control.ai.GapOut`). Here each bundled scenario runs its full window through the
control loop with the AI deciding, and at every decision step the float64 full-city rule (`AiController.reference`)
decides the same observation too: every intersection's request, fallback and trust-region takeover
must agree. Also counted: how often a near tie was re-scored in float64 or by the full-city pass, the
steps without a decision (no lanes read but a gap-out's), and both paths' decide time (CPU seconds, this
process). Writes the "AI fast path vs float64 reference" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/ai_parity.py [--scenarios a,b] [--workers 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.bench.report import update_section
from citysignal.control.ai import AiController
from citysignal.control.guard import GUARD_FIELDS, HOLD, SafetyGuard
from citysignal.loop import ControlLoop, deferrable
from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import bundled_names, resolve
from citysignal.twin import DEFAULT_SEED, Twin
from citysignal.twin.observation import Observation, ProgramPosition

SECTION = "## AI fast path vs float64 reference"


class Checked:
    """The AI as the loop's decider, every decision checked against the reference (which then reads the
    whole arrays the AI read only in part)."""

    def __init__(self) -> None:
        self.ai = AiController()
        self.n: Counter[str] = Counter()
        self.cpu = {"fast": 0.0, "reference": 0.0}

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None:
        self.ai.reset(layout, position, seed)

    def decide(self, obs: Observation) -> NDArray[np.int64]:
        on = self.ai.clock.due(obs)
        t0 = time.process_time()
        requests = self.ai.decide(obs)  # first: it reads its inputs by rows, at the deciding intersections
        t1 = time.process_time()
        if not on.any():
            self.n["lane_free_steps"] += 1
            return requests
        expected, _ = self.ai.reference(obs)
        t2 = time.process_time()
        # the policy's choice, before a pair of signals joined by short links takes its turn (`control.pairs`)
        differs = self.ai.request != np.where(on, expected.choice, HOLD)
        differs |= self.ai.fallback != (expected.fallback & on)
        differs |= self.ai.overruled != (expected.overruled & on)
        self.n["decision_steps"] += 1
        self.n["decisions"] += int(on.sum())
        self.n["mismatches"] += int(differs.sum())
        self.cpu["fast"] += t1 - t0
        self.cpu["reference"] += t2 - t1
        return requests


def _episode(name: str) -> dict[str, float]:
    scenario = resolve(name)
    layout = Layout.from_network(load_network(scenario.net_file, scenario.additional_files))
    decider = Checked()
    guard = SafetyGuard(layout)
    fields = decider.ai.requires | GUARD_FIELDS
    with Twin(scenario, layout, seed=DEFAULT_SEED, fields=fields, defer=deferrable(decider.ai)) as twin:
        loop = ControlLoop(twin, guard, decider)
        loop.start(DEFAULT_SEED)
        while not loop.done:
            loop.tick()
    return {
        "signals": layout.n_intersections,
        "steps": loop.steps,
        **decider.n,
        "float64": decider.ai.rechecks["float64"],
        "reference": decider.ai.rechecks["reference"],
        "fast_s": decider.cpu["fast"],
        "reference_s": decider.cpu["reference"],
        "violations": guard.stats.violations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(bundled_names()))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    names = args.scenarios.split(",")
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        rows = pool.map(_episode, names, chunksize=1)
    lines = [
        "| scenario | signals | steps | decision steps | intersection decisions | mismatches | re-scored in float64 "
        "| full-city passes | steps without a decision | decide CPU s, fast | decide CPU s, float64 full city |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in zip(names, rows, strict=True):
        print(f"{name}: {r}", file=sys.stderr)
        lines.append(
            f"| {name} | {r['signals']:.0f} | {r['steps']:.0f} | {r.get('decision_steps', 0):.0f} "
            f"| {r.get('decisions', 0):.0f} | {r.get('mismatches', 0):.0f} | {r['float64']:.0f} | {r['reference']:.0f} "
            f"| {r.get('lane_free_steps', 0):.0f} | {r['fast_s']:.2f} | {r['reference_s']:.2f} |"
        )
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
        f"- command: `python benchmarks/ai_parity.py {' '.join(sys.argv[1:])}`\n"
        "- every bundled scenario's full window, seed 23423, the shipped policy deciding through the guard; at each "
        "decision step the float64 full-city rule decides the same observation; a mismatch is an intersection whose "
        "request, fallback or trust-region takeover differs. Re-scored: intersections whose best green led by less "
        "than the proven float32 error bound (then float64's, for a full-city pass). Decide CPU seconds are summed "
        "over decision steps (process time, so other load on the machine does not count)\n\n" + "\n".join(lines) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
