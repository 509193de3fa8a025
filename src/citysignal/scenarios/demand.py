"""Demand in SUMO route files, read the way SUMO reads it: times, single departures and flows.

Times go through SUMO's own parser (`sumolib.miscutils.parseTime`): seconds, or clock times such as
`15:00:00` and `1:02:00:00` (days first). Departures that SUMO times itself ("triggered", "begin",
"now", ...) have no time of their own and are skipped; any other unreadable time is a UserError.

A flow is counted as SUMO inserts it (checked against SUMO 1.28 in the tests): by `vehsPerHour` or
`perHour` or `period` (regular: departures at begin, begin + period, ... before end), by `probability`
or `period="exp(rate)"` (random: counted by their expected number), or by `number` alone (spaced
evenly over [begin, end)). `begin` defaults to 0; a flow without `end` runs until the simulation
ends (the scenario's end here), or until `number` departures when a rate is given too.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sumolib.miscutils import SPECIAL_TIME_STRINGS, parseTime

from citysignal.errors import UserError
from citysignal.xmlfile import open_xml

VEHICLE_TAGS = ("vehicle", "trip", "person")
FLOW_TAGS = ("flow", "personFlow")
DEMAND_TAGS = VEHICLE_TAGS + FLOW_TAGS
SELF_TIMED = (*SPECIAL_TIME_STRINGS, "now")
_EPS = 1e-9  # departures computed as begin + k * period must not slip past a bound by rounding


def parse_time(text: str, what: str) -> float:
    """A SUMO time (seconds or [[D:]H:]M:S) in seconds; NaN, infinity or garbage is a UserError naming `what`."""
    try:
        value = parseTime(text.strip())
    except (ValueError, IndexError):
        value = None
    if value is None or not math.isfinite(value):
        raise UserError(f"bad time '{text}' for {what}: use seconds or a clock time like 15:00:00")
    return float(value)


def time_option(text: str | None, option: str) -> float | None:
    """A command-line time (seconds or clock time), None if not given; negative is a UserError too."""
    if text is None:
        return None
    value = parse_time(text, option)
    if value < 0:
        raise UserError(f"bad time '{text}' for {option}: it must be >= 0")
    return value


@dataclass(frozen=True)
class Departures:
    """When one demand element departs: `count` departures from `begin`, one every `period` seconds
    (a single vehicle: count 1); `random` ones (probability, exp) are spread evenly in expectation."""

    begin: float
    period: float
    count: float
    random: bool = False

    @property
    def last(self) -> float:
        if self.random:
            return self.begin + self.count * self.period
        n = math.ceil(self.count - _EPS)
        return self.begin + (n - 1) * self.period if n > 1 else self.begin

    def between(self, a: float, b: float) -> float:
        """Departures (expected, for random flows) in [a, b)."""
        if self.count <= 0 or b <= a:
            return 0.0
        if self.random:
            lo, hi = max(a, self.begin), min(b, self.begin + self.count * self.period)
            return max(hi - lo, 0.0) / self.period
        if self.count == 1 or not math.isfinite(self.period):
            return 1.0 if a <= self.begin < b else 0.0
        n = math.ceil(self.count - _EPS)

        def first_at_or_after(t: float) -> int:
            return min(max(math.ceil((t - self.begin) / self.period - _EPS), 0), n)

        return float(first_at_or_after(b) - first_at_or_after(a))


def _number(elem: ET.Element, key: str, where: str) -> float | None:
    text = elem.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UserError(f"bad {key} '{text}' of {elem.tag} '{elem.get('id', '?')}' in {where}")
    return value


def departures(elem: ET.Element, where: str, sim_end: float) -> Departures | None:
    """When a demand element (vehicle, trip, person, flow, personFlow) departs; None if SUMO times it."""
    what = f"{elem.tag} '{elem.get('id', '?')}' in {where}"
    if elem.tag in VEHICLE_TAGS:
        depart = elem.get("depart")
        if depart is None or depart.strip() in SELF_TIMED:
            return None
        return Departures(parse_time(depart, f"the depart of {what}"), math.inf, 1.0)
    begin_text = elem.get("begin", "0")
    if begin_text.strip() in SELF_TIMED:
        return None
    begin = parse_time(begin_text, f"the begin of {what}")
    end = parse_time(elem.attrib["end"], f"the end of {what}") if "end" in elem.attrib else None
    number = _number(elem, "number", where)
    hourly = next((v for v in (_number(elem, k, where) for k in ("vehsPerHour", "perHour")) if v is not None), None)
    probability = _number(elem, "probability", where)
    period_text = elem.get("period", "").strip()
    random = False
    if hourly is not None:
        period: float | None = 3600.0 / hourly if hourly > 0 else math.inf
    elif period_text.startswith("exp(") and period_text.endswith(")"):
        try:
            rate = float(period_text[4:-1])
        except ValueError:
            rate = math.nan
        if not (math.isfinite(rate) and rate >= 0):
            raise UserError(f"bad period '{period_text}' of {what}: exp(RATE) needs a rate >= 0 per second")
        period, random = (1.0 / rate if rate > 0 else math.inf), True
    elif period_text:
        period = parse_time(period_text, f"the period of {what}")
        if period <= 0:
            raise UserError(f"bad period '{period_text}' of {what}: it must be > 0")
    elif probability is not None:
        period, random = (1.0 / probability if probability > 0 else math.inf), True
    else:
        period = None
    if period is None:  # `number` alone: spread evenly over [begin, end)
        if number is None:
            raise UserError(f"{what} gives none of number, vehsPerHour, perHour, period or probability")
        stop = sim_end if end is None else end
        return Departures(begin, max(stop - begin, 0.0) / number if number else math.inf, number)
    if not math.isfinite(period):
        return Departures(begin, math.inf, 0.0)
    if end is None and number is not None:
        return Departures(begin, period, number, random)
    span = max((sim_end if end is None else end) - begin, 0.0)
    count = span / period if random else float(math.ceil(span / period - _EPS))
    return Departures(begin, period, count if number is None else min(count, number), random)


def _open(path: Path) -> Iterator[ET.Element]:
    with open_xml(path) as fh:
        for _, elem in ET.iterparse(fh):
            yield elem


def route_elements(path: Path, what: str = "route file") -> Iterator[ET.Element]:
    """Every element of a route (or additional) file as it closes; demand elements are freed after use.

    A missing, unreadable or truncated file is a one-line UserError naming the file. Like SUMO, any root
    element is accepted (old tools wrote `<trips>`, additional files often use `<add>`)."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        for elem in _open(path):
            yield elem
            if elem.tag in DEMAND_TAGS:
                elem.clear()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise UserError(f"corrupt {what} {path}: {exc}") from exc
