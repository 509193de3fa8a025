"""Classic baselines on the eight RESCO scenarios, full windows, written to BENCHMARKS.md.

Runs every bundled RESCO scenario x {fixed, actuated, webster, maxpressure, sotl} x seeds through the
same `citysignal bench` machinery (Ray, one SUMO per worker) and puts our figures beside the shared
anchors (fixed, SUMO-actuated, max-pressure on SUMO 1.28, seed 23423) with their ratio.

    .venv/bin/python benchmarks/resco_baselines.py [--seeds N] [--workers W]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from citysignal.bench import report
from citysignal.bench.parallel import Job, run_jobs
from citysignal.plan.timing import routed_files
from citysignal.scenarios import Scenario, load_sumocfg, resolve
from citysignal.sumo_home import sumo_home, tool
from citysignal.twin import DEFAULT_SEED

RESCO = ("cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7", "ingolstadt21", "grid4x4", "arterial4x4")
CONTROLLERS = ("fixed", "actuated", "webster", "maxpressure", "sotl")
# resco_delay measured by the anchors (shared/anchors/README.md), SUMO 1.28, seed 23423.
ANCHORS = {
    "cologne1": {"fixed": 41.7, "actuated": 62.2, "maxpressure": 28.1},
    "cologne3": {"fixed": 37.5, "actuated": 35.0, "maxpressure": 19.8},
    "cologne8": {"fixed": 47.2, "actuated": 38.6, "maxpressure": 24.1},
    "ingolstadt1": {"fixed": 30.7, "actuated": 20.9, "maxpressure": 14.8},
    "ingolstadt7": {"fixed": 116.2, "actuated": 33.4, "maxpressure": 217.6},
    "ingolstadt21": {"fixed": 154.1, "actuated": 77.7, "maxpressure": 398.1},
    "grid4x4": {"fixed": 91.3, "actuated": 69.0, "maxpressure": 53.1},
    "arterial4x4": {"fixed": 1483.3, "actuated": 790.9, "maxpressure": 777.8},
}
SECTION = "## Classic baselines on the RESCO scenarios"
UNBOUNDED_S = 1e9
UNBOUNDED_LABEL = "maxpressure (no max-red)"
TOOL_LABEL = "webster (SUMO tlsCycleAdaptation)"
TOOL_FAILED: dict[str, str] = {}  # scenario -> the tool's last error line

MAXPRESSURE_NOTE = """Fixed-time and SUMO-actuated reproduce the anchors (same programs, same seed; fixed-time runs
through our safety guard, actuated is SUMO's own logic monitored by it). Max-pressure differs by
design: our guard enforces a max-red bound (120 s) in which a permissive green that must yield
does not count as service where a protected green exists, so a starved left turn gets its protected
phase. The anchors' max-pressure has no such bound. The "no max-red" rows run our max-pressure with
the bound lifted; what remains is the decision timing (ours decides per intersection once its
green has run 10 s, the anchors' every 10 s) and the pressure counting only the movements a green
serves (major green, or its only green).
"""


def sumo_tool_webster(sc: Scenario, tmp: Path) -> Scenario | None:
    """The scenario with SUMO's own Webster retiming (tools/tlsCycleAdaptation.py, defaults) loaded;
    None where the tool itself fails on the net."""
    routes = routed_files(sc, tmp)
    plans = tmp / f"{sc.name}_tca.add.xml"
    proc = subprocess.run(
        [sys.executable, str(tool("tlsCycleAdaptation.py")), "-n", str(sc.net_file), "-r", ",".join(map(str, routes)),
         "-b", f"{sc.begin:g}", "-o", str(plans)],
        capture_output=True, text=True, env=dict(os.environ, SUMO_HOME=str(sumo_home())),
    )  # fmt: skip
    if proc.returncode != 0:
        TOOL_FAILED[sc.name] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None
    cfg = tmp / f"{sc.name}_tca.sumocfg"
    adds = ",".join(str(a) for a in (*sc.additional_files, plans))
    cfg.write_text(
        f'<configuration><input><net-file value="{sc.net_file}"/>'
        f'<route-files value="{",".join(str(r) for r in sc.route_files)}"/><additional-files value="{adds}"/>'
        f'</input><time><begin value="{sc.begin:g}"/><end value="{sc.end:g}"/></time></configuration>'
    )
    return load_sumocfg(cfg, sc.name)


def anchor_table(results: list[report.EpisodeResult]) -> str:
    first_seed = {(r.scenario, r.controller): r.metrics["resco_delay"] for r in results if r.seed == DEFAULT_SEED}
    lines = ["| scenario | controller | ours (seed 23423) | anchor | ours / anchor |", "|---|---|---|---|---|"]
    for sc, by_ctrl in ANCHORS.items():
        for ctrl, anchor in by_ctrl.items():
            for label in (ctrl, UNBOUNDED_LABEL) if ctrl == "maxpressure" else (ctrl,):
                ours = first_seed.get((sc, label))
                if ours is not None:
                    lines.append(f"| {sc} | {label} | {ours:.1f} | {anchor:.1f} | {ours / anchor:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()

    jobs = [Job(resolve(sc), c, DEFAULT_SEED + k) for sc in RESCO for c in CONTROLLERS for k in range(args.seeds)]
    # The anchors' max-pressure has no max-red bound: run ours once without it (bound beyond the window).
    unbounded = [Job(resolve(sc), "maxpressure", DEFAULT_SEED, max_red=UNBOUNDED_S) for sc in RESCO]
    # SUMO's own Webster retiming, replayed by our fixed-time controller, beside our online Webster.
    tmp = Path(tempfile.mkdtemp(prefix="citysignal-tca-"))
    retimed = [s for s in (sumo_tool_webster(resolve(sc), tmp) for sc in RESCO) if s is not None]
    tool_webster = [Job(s, "fixed", DEFAULT_SEED + k) for s in retimed for k in range(args.seeds)]
    jobs += unbounded + tool_webster
    started = time.perf_counter()
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("RESCO baselines", total=len(jobs))
        results = run_jobs(jobs, workers=args.workers, on_done=lambda job, frac: progress.advance(task, frac))
    wall = time.perf_counter() - started
    for r in results[len(jobs) - len(unbounded) - len(tool_webster) : len(jobs) - len(tool_webster)]:
        r.controller = UNBOUNDED_LABEL
    for r in results[len(jobs) - len(tool_webster) :]:
        r.controller = TOOL_LABEL
    shutil.rmtree(tmp)
    rows = report.summarize(results)
    command = "python benchmarks/resco_baselines.py " + " ".join(sys.argv[1:])
    body = (
        f"{SECTION}\n\n"
        f"- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}, {args.workers} worker(s); total wall {wall:.0f} s\n"
        f"- command: `{command.strip()}`\n"
        "- metric: RESCO delay (timeLoss + departDelay, unfinished and never-inserted vehicles included), "
        "full RESCO windows, 1 s steps, teleporting off; seeds start at SUMO's default 23423; "
        f"mean over {args.seeds} seed(s)\n\n"
        f"{report.markdown_table(rows)}\n"
        f"### Agreement with the shared anchors (same simulator, same programs, seed 23423)\n\n"
        f"{anchor_table(results)}\n{MAXPRESSURE_NOTE}"
        + "".join(f"\nSUMO's tlsCycleAdaptation.py failed on {name}: `{err}`\n" for name, err in TOOL_FAILED.items())
    )
    report.update_section(args.out, SECTION, body)
    Console().print(report.rich_table(rows))


if __name__ == "__main__":
    main()
