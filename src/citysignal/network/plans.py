"""Write signal programs derived from the intersection model as SUMO additional files.

Plans go into additional files (never into the net) so they are auditable and load in sumo-gui and
netedit. The actuated reference program keeps the net's greens in program order, with the model's
legal transitions between consecutive greens, and SUMO's `actuated` logic choosing green lengths
between minDur and maxDur (the net's where given, else 5 s / 50 s, as in our anchor measurements).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from citysignal.network.model import Intersection

ACTUATED_MIN_S = 5.0
ACTUATED_MAX_S = 50.0
ACTUATED_PROGRAM_ID = "citysignal_actuated"


def actuated_program(inter: Intersection) -> str:
    lines = [
        f'    <tlLogic id={quoteattr(inter.id)} type="actuated" programID="{ACTUATED_PROGRAM_ID}" '
        f'offset="{inter.offset:g}">'
    ]
    cycle = inter.cycle
    for k, run in enumerate(cycle):
        lo = ACTUATED_MIN_S if run.min_dur is None else run.min_dur
        hi = ACTUATED_MAX_S if run.max_dur is None else run.max_dur
        state = inter.greens[run.green]
        lines.append(f'        <phase duration="{run.duration:g}" state="{state}" minDur="{lo:g}" maxDur="{hi:g}"/>')
        for state, dur in inter.transition(run.green, cycle[(k + 1) % len(cycle)].green):
            lines.append(f'        <phase duration="{dur:g}" state="{state}"/>')
    lines.append("    </tlLogic>")
    return "\n".join(lines)


def write_actuated(intersections: tuple[Intersection, ...], path: Path) -> Path:
    """An additional file making SUMO's `actuated` logic the active program of each intersection."""
    body = "\n".join(actuated_program(i) for i in intersections if i.greens)
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<additional>\n{body}\n</additional>\n')
    return path
