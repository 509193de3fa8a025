"""The flagship evening peak (what `make demo` runs), measured and written to BENCHMARKS.md.

    .venv/bin/python benchmarks/evening_peak.py [--quick] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

from citysignal.bench.demo import KPIS, run_demo
from citysignal.bench.report import update_section

SECTION = "## City evening peak (flagship)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    result = run_demo(Path("out/demo"), quick=args.quick, workers=args.workers)
    wall = time.perf_counter() - started
    sc = result.scenario
    head = "| controller | " + " | ".join(label for _, label, _ in KPIS) + " |"
    rows = [head, "|" + "---|" * (len(KPIS) + 1)]
    for r in result.results:
        rows.append(f"| {r.controller} | " + " | ".join(fmt.format(r.metrics[k]) for k, _, fmt in KPIS) + " |")
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, 2 cores; "
        f"wall {wall:.0f} s for all controllers in parallel (2 workers)\n"
        f"- command: `python benchmarks/evening_peak.py {' '.join(sys.argv[1:])}` (the same run as `make demo`)\n"
        f"- scenario: `{sc.name}`, {sc.begin:g}-{sc.end:g} s (16:00-19:00): Manhattan 28x7, 196 signals, real NYC "
        "taxi trips redrawn under the synthetic evening-peak profile; seed 23423; report: `out/demo/report.html`\n\n"
        + "\n".join(rows) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
