"""Benchmark results as tables (Rich, Markdown), JSON lines and PNG plots.

Tables have the `TABLE_COLUMNS`, then one column per counter some controller reports through
`Controller.stats()` (empty where a controller has no such counter).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table

from citysignal.bench.episode import EpisodeResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TABLE_COLUMNS = (
    ("resco_delay", "RESCO delay s", "{:.1f}"),
    ("mean_duration", "trip s", "{:.1f}"),
    ("mean_waiting", "wait s", "{:.1f}"),
    ("p95_waiting", "wait p95 s", "{:.0f}"),
    ("max_waiting", "wait max s", "{:.0f}"),
    ("arrived", "arrived", "{:.0f}"),
    ("not_inserted", "not inserted", "{:.0f}"),
    ("teleports", "teleports", "{:.0f}"),
    ("safety_violations", "violations", "{:.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("steps_per_s", "steps/s", "{:.0f}"),
    ("control_s", "control s", "{:.2f}"),
    ("sumo_step_s", "SUMO step s", "{:.1f}"),
    ("decide_p99_ms", "decide p99 ms", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
)
STAT_FORMAT = "{:.3g}"


def summarize(results: Sequence[EpisodeResult]) -> list[dict[str, object]]:
    """Mean over seeds per (scenario, controller), in first-seen order."""
    groups: dict[tuple[str, str], list[EpisodeResult]] = defaultdict(list)
    for r in results:
        groups[(r.scenario, r.controller)].append(r)
    rows = []
    for (scenario, controller), runs in groups.items():
        row: dict[str, object] = {"scenario": scenario, "controller": controller, "seeds": len(runs)}
        for key in [k for k, _, _ in TABLE_COLUMNS] + list(dict.fromkeys(k for r in runs for k in r.controller_stats)):
            row[key] = float(np.mean([r.metrics[key] for r in runs if key in r.metrics]))
        rows.append(row)
    return rows


def _columns(rows: Sequence[dict[str, object]]) -> list[tuple[str, str, str]]:
    """`TABLE_COLUMNS`, then every other numeric key of the rows (controller counters) by name."""
    known = {"scenario", "controller", "seeds", *(k for k, _, _ in TABLE_COLUMNS)}
    extra = dict.fromkeys(k for row in rows for k in row if k not in known)
    return [*TABLE_COLUMNS, *((k, k, STAT_FORMAT) for k in extra)]


def _cells(row: dict[str, object], columns: Sequence[tuple[str, str, str]]) -> list[str]:
    cells = [str(row["scenario"]), str(row["controller"]), str(row["seeds"])]
    return cells + [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns]


def rich_table(rows: Sequence[dict[str, object]], title: str = "citysignal benchmark") -> Table:
    columns = _columns(rows)
    table = Table(title=title)
    table.add_column("scenario")
    table.add_column("controller")
    table.add_column("seeds", justify="right")
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*_cells(row, columns))
    return table


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    columns = _columns(rows)
    headers = ["scenario", "controller", "seeds", *(h for _, h, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cells(row, columns)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code_version(where: Path, outputs: Sequence[Path] = ()) -> str:
    """The commit a figure was measured on, and whether the tree had uncommitted changes. `outputs` (the
    benchmark's own results: the report it rewrites as it goes, its figures) do not count as changes."""
    git = ["git", "-C", str(where)]
    try:
        sha = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        top = Path(subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  check=True).stdout.strip()).resolve()  # fmt: skip
        excluded = [
            f":(exclude,top){out.resolve().relative_to(top)}" for out in outputs if out.resolve().is_relative_to(top)
        ]
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded],
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown (not a git checkout)"
    return f"commit {sha.stdout.strip()}, dirty tree: {'yes' if dirty.stdout.strip() else 'no'}"


def update_section(path: Path, title: str, body: str, figures: Sequence[Path] = ()) -> None:
    """Replace the `## title` section of a Markdown file (BENCHMARKS.md) with `body`, or append it.

    A line naming the commit (and whether the tree was dirty) is put under the title: a figure from
    an older commit is stale. The file itself and the section's `figures` are the benchmark's output, not
    changes to the code it measured."""
    head, _, rest = body.partition("\n")
    body = f"{head}\n\n- code: {code_version(path.resolve().parent, (path, *figures))}\n{rest}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"{re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    path.write_text(text)


def json_lines(results: Sequence[EpisodeResult]) -> str:
    return "".join(json.dumps(r.row()) + "\n" for r in results)


def delay_queue_figure(runs: Sequence[EpisodeResult], title: str) -> Figure:
    """RESCO delay by scheduled departure and city queue over time, one line per controller (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_delay, ax_queue) = plt.subplots(1, 2, figsize=(12, 4.5))
    for controller in dict.fromkeys(r.controller for r in runs):
        first = next(r for r in runs if r.controller == controller)
        ax_delay.plot(np.array(first.delay_t) / 3600, first.delay, marker="o", label=controller)
        ax_queue.plot(np.array(first.queue_t) / 3600, first.queue, label=controller)
    ax_delay.set(title=f"{title}: RESCO delay by scheduled departure", xlabel="time of day (h)", ylabel="s/vehicle")
    ax_queue.set(title=f"{title}: vehicles queued at signals", xlabel="time of day (h)", ylabel="halting vehicles")
    for ax in (ax_delay, ax_queue):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot(results: Sequence[EpisodeResult], out_dir: Path) -> list[Path]:
    """One PNG per scenario with `delay_queue_figure`."""
    import matplotlib.pyplot as plt

    written = []
    by_scenario: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_scenario[r.scenario].append(r)
    for scenario, runs in by_scenario.items():
        fig = delay_queue_figure(runs, scenario)
        path = out_dir / f"{scenario}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
