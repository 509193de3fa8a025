"""Derive the intersection model from any SUMO net (plain or .gz), with no per-map configuration.

What is read, and why:
- `connection` elements with a `tl` attribute are the controlled movements (a signal index may
  control several connections; connections into a crossing are pedestrian movements);
- the junction `request` rows give, per junction link, its foes (paths that cross or merge) and the
  links it must yield to. A *hard conflict* is a foe pair that the program never shows green together
  (the engineer separated them in time) or that the net lets neither yield to the other: the two
  must never be major green at once. (Right-on-red junctions make every link yield to something,
  so the yields alone would miss conflicts the program separates; hence both criteria.) The junction
  link of a connection is the position of its first internal lane (`via`, or the crossing lane) in the
  junction's `intLanes`; nets built without internal lanes fall back to "never green together in
  the program" as the conflict relation;
- `tlLogic` elements from the net and then from additional files: the last one per TLS is active;
- neighbours: the nearest signalized intersections up- and downstream along the edge graph, through
  unsignalized junctions, within `NEIGHBOUR_RANGE_M`;
- feeders: the edges whose every vehicle continues onto a given edge through an unsignalized junction
  (a pass-through or a merge, not a fork), followed upstream for `FEEDER_RANGE_M`. A queue on a short
  signalized approach continues onto them, so they are part of its queue (`Network.feeders`);
- runs: where a net splits one road into several edges (at a lane-count change, a former node) the
  junctions between them are pass-throughs, where nothing enters or leaves: a vehicle stops at none of
  them, so a short edge there is not a short link. The road's length up to its next real junction
  (`Network.runs`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from citysignal.errors import UserError
from citysignal.network import signals
from citysignal.network.model import Intersection, Lane, Movement, Network, ProgramPhase
from citysignal.xmlfile import open_xml

NEIGHBOUR_RANGE_M = 1000.0
FEEDER_RANGE_M = 300.0


def read_xml(path: Path, what: str) -> ET.Element:
    """Parse a plain or gzipped XML file; a missing or corrupt file is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with open_xml(path) as fh:
            return ET.parse(fh).getroot()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt {what} {path}: {exc}") from exc


@dataclass
class _Junction:
    int_lanes: list[str]
    foes: list[str]
    response: list[str]


@dataclass
class _Edge:
    function: str
    src: str
    dst: str
    length: float


def _parse_program(elem: ET.Element, path: Path) -> tuple[ProgramPhase, ...]:
    phases = []
    for ph in elem.iter("phase"):
        try:
            phases.append(
                ProgramPhase(
                    state=ph.attrib["state"],
                    duration=float(ph.attrib["duration"]),
                    min_dur=float(ph.attrib["minDur"]) if "minDur" in ph.attrib else None,
                    max_dur=float(ph.attrib["maxDur"]) if "maxDur" in ph.attrib else None,
                    name=ph.get("name", ""),
                )
            )
        except (KeyError, ValueError) as exc:
            raise UserError(f"corrupt tlLogic {elem.get('id')} in {path}: bad phase ({exc})") from exc
    if not phases or len({len(p.state) for p in phases}) != 1:
        raise UserError(f"corrupt tlLogic {elem.get('id')} in {path}: phases missing or of unequal length")
    return tuple(phases)


def _bit(row: str, j: int) -> bool:
    return 0 <= j < len(row) and row[len(row) - 1 - j] == "1"


def _hard_conflicts(
    n_signals: int,
    movements: list[tuple[Movement, str, int]],
    junctions: dict[str, _Junction],
    program: tuple[ProgramPhase, ...],
) -> NDArray[np.bool_]:
    """Foe pairs the program never shows green together, or that the net lets neither yield."""
    together = np.zeros((n_signals, n_signals), dtype=bool)
    for phase in program:
        g = signals.green_mask(phase.state)
        together |= np.outer(g, g)
    shown = together.diagonal()
    mapped = [(m, junctions[j], idx) for m, j, idx in movements if j in junctions and idx >= 0]
    if len(mapped) < len(movements) or not mapped:
        # No junction logic to go by: trust the program, signals never green together conflict.
        fallback: NDArray[np.bool_] = ~together & np.outer(shown, shown)
        return fallback
    foes = np.zeros_like(together)
    unyielded = np.zeros_like(together)
    by_junction: dict[int, list[tuple[Movement, _Junction, int]]] = defaultdict(list)
    for item in mapped:
        by_junction[id(item[1])].append(item)
    for items in by_junction.values():
        for m, junc, i in items:
            for n, _, j in items:
                if m.signal == n.signal or max(i, j) >= len(junc.foes) or not _bit(junc.foes[i], j):
                    continue
                foes[m.signal, n.signal] = foes[n.signal, m.signal] = True
                if not _bit(junc.response[i], j) and not _bit(junc.response[j], i):
                    unyielded[m.signal, n.signal] = unyielded[n.signal, m.signal] = True
    hard: NDArray[np.bool_] = foes & (~together | unyielded)
    return hard


def _neighbours(
    tls_id: str,
    tls_of_junction: dict[str, str],
    start_junctions: Iterable[str],
    step: dict[str, list[tuple[str, float]]],
) -> tuple[str, ...]:
    """Nearest other TLS reachable from `start_junctions` along `step` (junction -> (junction, m))."""
    found: set[str] = set()
    best: dict[str, float] = {j: 0.0 for j in start_junctions}
    queue = deque(best)
    while queue:
        j = queue.popleft()
        for nxt, length in step.get(j, ()):
            dist = best[j] + length
            if dist > NEIGHBOUR_RANGE_M or dist >= best.get(nxt, np.inf):
                continue
            owner = tls_of_junction.get(nxt)
            if owner is not None and owner != tls_id:
                found.add(owner)
                continue
            if owner == tls_id:
                continue
            best[nxt] = dist
            queue.append(nxt)
    return tuple(sorted(found))


def _feeders(
    edges: dict[str, _Edge], successors: dict[str, set[str]], controlled: set[str]
) -> dict[str, tuple[str, ...]]:
    """Per edge: the upstream edges that lead only to it (through unsignalized junctions), within
    `FEEDER_RANGE_M` of its start, nearest first."""
    predecessors: dict[str, list[str]] = defaultdict(list)
    for src, dsts in successors.items():
        if len(dsts) == 1 and edges[src].dst not in controlled:
            predecessors[next(iter(dsts))].append(src)
    out: dict[str, tuple[str, ...]] = {}
    for edge in predecessors:
        found: list[str] = []
        queue = deque((p, edges[p].length) for p in predecessors[edge])
        while queue:
            src, dist = queue.popleft()
            if src == edge or src in found:
                continue
            found.append(src)
            queue.extend((p, dist + edges[p].length) for p in predecessors.get(src, ()) if dist < FEEDER_RANGE_M)
        out[edge] = tuple(found)
    return out


def _runs(edges: dict[str, _Edge], successors: dict[str, set[str]], controlled: set[str]) -> dict[str, float]:
    """Per edge that continues through a pass-through junction (unsignalized, entered by no other edge,
    left by one edge): the length of the road from its start to the next junction where it meets other
    traffic, forks or has a signal, followed for at most `FEEDER_RANGE_M`. Only edges whose road runs on."""
    entering: dict[str, int] = defaultdict(int)
    for edge in edges.values():
        if edge.function == "normal":
            entering[edge.dst] += 1

    def onward(eid: str) -> str | None:
        edge, nxt = edges[eid], successors.get(eid, set())
        if edge.dst in controlled or entering[edge.dst] != 1 or len(nxt) != 1:
            return None
        return next(iter(nxt))

    runs: dict[str, float] = {}
    for eid, edge in edges.items():
        if edge.function != "normal" or onward(eid) is None:
            continue
        length, seen, nxt = edge.length, {eid}, onward(eid)
        while nxt is not None and nxt not in seen and length < FEEDER_RANGE_M:
            seen.add(nxt)
            length += edges[nxt].length
            nxt = onward(nxt)
        runs[eid] = length
    return runs


def _shape(text: str) -> tuple[tuple[float, float], ...]:
    pts = []
    for pair in text.split():
        x, y = pair.split(",")[:2]
        pts.append((float(x), float(y)))
    return tuple(pts)


def load_network(net_file: Path, additional_files: Iterable[Path] = ()) -> Network:
    """Parse a SUMO net (plus additional files that may carry tlLogic) into a `Network`."""
    net_file = Path(net_file)
    root = read_xml(net_file, "net file")
    if root.tag != "net":
        raise UserError(f"not a SUMO net file (root <{root.tag}>): {net_file}")

    edges: dict[str, _Edge] = {}
    lanes: dict[str, Lane] = {}
    for e in root.iter("edge"):
        eid = e.attrib["id"]
        lane_elems = list(e.iter("lane"))
        length = float(lane_elems[0].get("length", "0")) if lane_elems else 0.0
        edges[eid] = _Edge(e.get("function", "normal"), e.get("from", ""), e.get("to", ""), length)
        for ln in lane_elems:
            lanes[ln.attrib["id"]] = Lane(
                id=ln.attrib["id"],
                edge=eid,
                length=float(ln.get("length", "0")),
                speed=float(ln.get("speed", "13.89")),
                shape=_shape(ln.get("shape", "")),
            )

    junctions: dict[str, _Junction] = {}
    for j in root.iter("junction"):
        reqs = sorted(j.iter("request"), key=lambda r: int(r.attrib["index"]))
        junctions[j.attrib["id"]] = _Junction(
            int_lanes=j.get("intLanes", "").split(),
            foes=[r.get("foes", "") for r in reqs],
            response=[r.get("response", "") for r in reqs],
        )

    programs: dict[str, ET.Element] = {}
    program_source: dict[str, Path] = {}
    for path, elem in [(net_file, root)] + [(Path(a), read_xml(Path(a), "additional file")) for a in additional_files]:
        for tl in elem.iter("tlLogic"):
            programs[tl.attrib["id"]] = tl
            program_source[tl.attrib["id"]] = path
    if not programs:
        raise UserError(f"net has no traffic lights: {net_file}")

    by_tls: dict[str, list[tuple[Movement, str, int]]] = defaultdict(list)
    step_fwd: dict[str, list[tuple[str, float]]] = defaultdict(list)
    step_bwd: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for edge in edges.values():
        if edge.function == "normal" and edge.src and edge.dst:
            step_fwd[edge.src].append((edge.dst, edge.length))
            step_bwd[edge.dst].append((edge.src, edge.length))
    successors: dict[str, set[str]] = defaultdict(set)
    for c in root.iter("connection"):
        src, dst = c.attrib["from"], c.attrib["to"]
        normal = src in edges and dst in edges and edges[src].function == edges[dst].function == "normal"
        if normal and c.get("dir") != "t":  # a U-turn does not make a road a fork
            successors[src].add(dst)
        tl_id = c.get("tl")
        if tl_id is None or "linkIndex" not in c.attrib:
            continue
        from_lane, to_lane = f"{src}_{c.attrib['fromLane']}", f"{dst}_{c.attrib['toLane']}"
        src_edge = edges.get(src)
        pedestrian = src_edge is not None and src_edge.function in ("walkingarea", "crossing")
        if src_edge is None:
            continue
        junction = src_edge.dst if src_edge.function == "normal" else src.lstrip(":").rsplit("_", 1)[0]
        internal = c.get("via") or (to_lane if pedestrian else "")
        int_lanes = junctions[junction].int_lanes if junction in junctions else []
        idx = int_lanes.index(internal) if internal in int_lanes else -1
        by_tls[tl_id].append(
            (
                Movement(
                    int(c.attrib["linkIndex"]), from_lane, to_lane, c.get("dir", ""), pedestrian, c.get("via", "")
                ),
                junction,
                idx,
            )
        )

    tls_of_junction = {j: tl for tl, items in by_tls.items() for _, j, _ in items}
    intersections = []
    for tls_id, elem in sorted(programs.items()):
        program = _parse_program(elem, program_source[tls_id])
        items = by_tls.get(tls_id, [])
        n_signals = len(program[0].state)
        items = [it for it in items if it[0].signal < n_signals]
        tls_junctions = tuple(sorted({j for _, j, _ in items}))
        intersections.append(
            Intersection(
                id=tls_id,
                junctions=tls_junctions,
                program_id=elem.get("programID", "0"),
                program_type=elem.get("type", "static"),
                offset=float(elem.get("offset", "0")),
                program=program,
                movements=tuple(sorted((m for m, _, _ in items), key=lambda m: m.signal)),
                hard_conflict=_hard_conflicts(n_signals, items, junctions, program),
                upstream=_neighbours(tls_id, tls_of_junction, tls_junctions, step_bwd),
                downstream=_neighbours(tls_id, tls_of_junction, tls_junctions, step_fwd),
            )
        )

    loc = root.find("location")
    bounds = (0.0, 0.0, 0.0, 0.0)
    if loc is not None and loc.get("convBoundary"):
        x0, y0, x1, y1 = (float(v) for v in loc.attrib["convBoundary"].split(","))
        bounds = (x0, y0, x1, y1)
    controlled = {j for i in intersections for j in i.junctions}
    return Network(
        net_file=net_file,
        intersections=tuple(intersections),
        lanes=lanes,
        bounds=bounds,
        feeders=_feeders(edges, successors, controlled),
        runs=_runs(edges, successors, controlled),
    )
