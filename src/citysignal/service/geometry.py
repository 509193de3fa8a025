"""Map geometry for the dashboard, from the SUMO net as parsed by `citysignal.network`.

Lanes: every non-internal lane of the net (ids not starting with ':'), with its polyline flattened to
[x0, y0, x1, y1, ...] (metres, SUMO's projected coordinates, rounded to 0.1 m) and its index in the
layout's lane arrays (-1 for lanes no controller observes: drawn, never coloured).
Intersections: one marker per controllable traffic-light system at the mean of its incoming lanes'
stop-line ends, plus for each incoming lane the signal indices it feeds, so the page can colour
stop lines by the state string's characters as sumo-gui does.

Limits: internal junction lanes, crossings and walking areas are not drawn; a lane's polyline is
drawn as is (no lane widths, no junction shapes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from citysignal.network import Network
from citysignal.network.layout import Layout


def _flat(shape: tuple[tuple[float, float], ...]) -> list[float]:
    return [round(v, 1) for point in shape for v in point]


def geometry(network: Network, layout: Layout) -> dict[str, Any]:
    lane_index = {name: i for i, name in enumerate(layout.lanes)}
    drawn = [ln for ln in network.lanes.values() if not ln.id.startswith(":") and len(ln.shape) >= 2]
    position = {ln.id: p for p, ln in enumerate(drawn)}
    flat = [_flat(ln.shape) for ln in drawn]
    lanes = [{"id": ln.id, "i": lane_index.get(ln.id, -1), "s": s} for ln, s in zip(drawn, flat, strict=True)]
    intersections = []
    for inter in layout.intersections:
        feeds: dict[str, set[int]] = {}
        for m in inter.vehicle_movements:
            feeds.setdefault(m.from_lane, set()).add(m.signal)
        ends = [network.lanes[name].shape[-1] for name in feeds if name in network.lanes and network.lanes[name].shape]
        x, y = (float(np.mean([e[0] for e in ends])), float(np.mean([e[1] for e in ends]))) if ends else (0.0, 0.0)
        intersections.append({
            "id": inter.id,
            "x": round(x, 1),
            "y": round(y, 1),
            "greens": list(inter.greens),
            "stops": [[position[name], sorted(sig)] for name, sig in sorted(feeds.items()) if name in position],
        })  # fmt: skip
    x0, y0, x1, y1 = network.bounds
    if x1 <= x0 or y1 <= y0:
        xs = [v for s in flat for v in s[0::2]]
        ys = [v for s in flat for v in s[1::2]]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    return {
        "bounds": [x0, y0, x1, y1],
        "lanes": lanes,
        "layout_lanes": list(layout.lanes),
        "intersections": intersections,
    }
