"""Write time-of-day fixed-time plans as one SUMO additional file (tlLogic per period + a WAUT).

Each period's plan is a static `tlLogic` with programID `tod_HHMM` (its start time); a WAUT switches
every signal to the right program at each period start. Plans go into an additional file, never into
the net, so they load in sumo-gui and netedit beside the original programs and can be audited.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from citysignal.plan.timing import Plan

WAUT_ID = "citysignal_tod"


def program_id(start: float) -> str:
    return f"tod_{int(start // 3600) % 24:02d}{int(start % 3600 // 60):02d}"


def tl_logic(plan: Plan, program: str) -> str:
    inter = plan.intersection
    lines = [f'    <tlLogic id={quoteattr(inter.id)} type="static" programID="{program}" offset="{plan.offset:.0f}">']
    comment = ", ".join(f"y={y:.3f}" for y in plan.ratios)
    lines.append(f"        <!-- Webster: cycle {plan.cycle:.0f} s, lost time {plan.lost_time:g} s, {comment} -->")
    nexts = plan.greens[1:] + plan.greens[:1]
    for g, duration, nxt in zip(plan.greens, plan.durations, nexts, strict=True):
        lines.append(f'        <phase duration="{duration:g}" state="{inter.greens[g]}"/>')
        for state, dur in inter.transition(g, nxt):
            lines.append(f'        <phase duration="{dur:g}" state="{state}"/>')
    lines.append("    </tlLogic>")
    return "\n".join(lines)


def write_plans(periods: list[tuple[float, list[Plan]]], path: Path) -> Path:
    """`periods`: (start time, plans) in time order; the first period's program starts active."""
    body = []
    for start, plans in periods:
        body.extend(tl_logic(p, program_id(start)) for p in plans)
    if len(periods) > 1:
        first = program_id(periods[0][0])
        body.append(f'    <WAUT id="{WAUT_ID}" refTime="0" startProg="{first}">')
        body.extend(f'        <wautSwitch time="{start:.10g}" to="{program_id(start)}"/>' for start, _ in periods)
        body.append("    </WAUT>")
        body.extend(
            f'    <wautJunction wautID="{WAUT_ID}" junctionID={quoteattr(p.intersection.id)}/>' for p in periods[0][1]
        )
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<additional>\n' + "\n".join(body) + "\n</additional>\n")
    return path
